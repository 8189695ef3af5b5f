"""Corpus-level translation scores with sacreBLEU, over hypotheses gathered from every rank,
and two checks of the output itself: how often it loops, and how long it is.

BLEU is not an average of per-sentence or per-rank values: each rank translates its share, the
(index, hypothesis) pairs are gathered, and one corpus score is computed over the whole split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import cache
from itertools import pairwise

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


def sentence_bleu(hypothesis: str, reference: str) -> float:
    """BLEU of one sentence (sacreBLEU's sentence score: effective n-gram order, so a short
    sentence without a 4-gram match is not 0)."""
    return _sentence_scorer().sentence_score(hypothesis, [reference]).score


@cache
def _sentence_scorer() -> BLEU:
    """One scorer for every sentence: building sacreBLEU's BLEU costs more than a short score."""
    return BLEU(effective_order=True)


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


def repetition_rate(hypotheses: Sequence[str]) -> float:
    """Share of hypotheses (%, 0-100) in which some word n-gram (n >= 2, whitespace tokens)
    occurs three times or more, overlapping occurrences counted ("a b a b a b": "a b" three
    times). An n-gram that occurs three times starts with a bigram that does, so counting
    bigrams decides it for every n. 0 for no hypotheses."""
    if not hypotheses:
        return 0.0
    looping = 0
    for hypothesis in hypotheses:
        words = hypothesis.split()
        bigrams = Counter(pairwise(words))
        looping += max(bigrams.values(), default=0) >= 3
    return 100.0 * looping / len(hypotheses)


def length_ratio(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Total hypothesis words / total reference words, both split at whitespace (not sacreBLEU's
    13a tokens, so punctuation attached to a word counts with it); 0 for references without
    words."""
    reference_words = sum(len(reference.split()) for reference in references)
    hypothesis_words = sum(len(hypothesis.split()) for hypothesis in hypotheses)
    return hypothesis_words / reference_words if reference_words else 0.0


def output_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """``repetition_rate`` and ``length_ratio`` of a corpus."""
    return {
        "repetition_rate": repetition_rate(hypotheses),
        "length_ratio": length_ratio(hypotheses, references),
    }
