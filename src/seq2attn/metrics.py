"""Corpus-level translation scores with sacreBLEU, over hypotheses gathered from every rank.

BLEU is not an average of per-sentence or per-rank values: each rank translates its share, the
(index, hypothesis) pairs are gathered, and one corpus score is computed over the whole split.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.distributed as dist
from sacrebleu.metrics import BLEU, CHRF, TER


def gather_hypotheses(local: dict[int, str]) -> dict[int, str]:
    """Merge each rank's ``{example index: hypothesis}`` into one dict on every rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return dict(local)
    shards: list[dict[int, str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(shards, local)
    merged: dict[int, str] = {}
    for shard in shards:
        merged.update(shard or {})
    return merged


def bleu_score(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacreBLEU defaults: 13a tokenisation, cased)."""
    return BLEU().corpus_score(list(hypotheses), [list(references)]).score


def corpus_scores(
    hypotheses: Sequence[str], references: Sequence[str]
) -> tuple[dict[str, float], dict[str, str]]:
    """BLEU, chrF and TER of a corpus, and each metric's sacreBLEU signature."""
    refs = [list(references)]
    hyps = list(hypotheses)
    scores: dict[str, float] = {}
    signatures: dict[str, str] = {}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF()), ("ter", TER())):
        scores[name] = metric.corpus_score(hyps, refs).score
        signatures[name] = str(metric.get_signature())
    return scores, signatures
