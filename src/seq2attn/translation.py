"""Translate raw sentences with a trained model: encode, length-batch, search, detokenise.

Shared by evaluation, the translate command and the attention maps of a training run. Sentences
are batched by length under a token budget and returned in input order. An empty sentence gets
an empty translation without running the model; a sentence longer than ``max_source_length``
pieces is cut to that length (counted in ``TranslationStats.truncated``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from seq2attn.config import DecodingSchema
from seq2attn.data.batching import TokenBudgetBatchSampler
from seq2attn.data.tokenizer import PAD_ID, Tokenizer
from seq2attn.ensemble import Ensemble
from seq2attn.models.seq2seq import Seq2Seq
from seq2attn.module import translate_batch
from seq2attn.plotting import AttentionMap
from seq2attn.search import Hypothesis

log = logging.getLogger(__name__)


@dataclass
class Translation:
    """One sentence: its n-best hypotheses (best first) and the pieces that label its axes."""

    source: str
    text: str
    nbest: list[Hypothesis]
    source_pieces: list[str]
    target_pieces: list[str]


@dataclass
class TranslationStats:
    """Counts of a translation call; ``seconds`` is search time only (model already loaded)."""

    sentences: int = 0
    empty: int = 0
    truncated: int = 0
    batches: int = 0
    seconds: float = 0.0


@torch.no_grad()
def translate_sentences(
    model: Seq2Seq | Ensemble,
    src_tokenizer: Tokenizer,
    tgt_tokenizer: Tokenizer,
    sentences: Sequence[str],
    decoding: DecodingSchema,
    max_tokens: int | None = 4000,
    max_source_length: int = 250,
    progress: bool = False,
    max_sentences: int | None = None,
) -> tuple[list[Translation], TranslationStats]:
    """Translations of ``sentences`` in input order, and counts of what was done."""
    model.eval()
    device = next(model.parameters()).device
    stats = TranslationStats(sentences=len(sentences))
    encoded = src_tokenizer.encode(list(sentences))
    for i, ids in enumerate(encoded):
        if len(ids) > max_source_length:
            encoded[i] = ids[:max_source_length]
            stats.truncated += 1
    if stats.truncated:
        log.warning(
            "%d sentence(s) longer than max_source_length=%d pieces were cut to that length",
            stats.truncated,
            max_source_length,
        )
    results: list[Translation | None] = [None] * len(sentences)
    for i, ids in enumerate(encoded):
        if not ids:
            results[i] = Translation(sentences[i], "", [], [], [])
            stats.empty += 1
    todo = [i for i, ids in enumerate(encoded) if ids]
    lengths = [len(encoded[i]) for i in todo]
    sampler = TokenBudgetBatchSampler(
        lengths, lengths, max_tokens, max_sentences, shuffle=False, seed=0
    )
    began = time.perf_counter()
    for batch in tqdm(list(sampler), disable=not progress, desc="translating", unit="batch"):
        rows = [encoded[todo[j]] for j in batch]
        src = torch.full((len(rows), max(map(len, rows))), PAD_ID, dtype=torch.long)
        for r, ids in enumerate(rows):
            src[r, : len(ids)] = torch.tensor(ids)
        src_lengths = torch.tensor([len(ids) for ids in rows])
        nbests = translate_batch(model, src.to(device), src_lengths.to(device), decoding)
        texts = tgt_tokenizer.decode([nbest[0].tokens for nbest in nbests])
        for j, ids, nbest, text in zip(batch, rows, nbests, texts, strict=True):
            results[todo[j]] = Translation(
                source=sentences[todo[j]],
                text=text,
                nbest=nbest,
                source_pieces=src_tokenizer.pieces(ids),
                target_pieces=tgt_tokenizer.pieces(nbest[0].tokens) + ["</s>"],
            )
        stats.batches += 1
    stats.seconds = time.perf_counter() - began
    return [r for r in results if r is not None], stats


def attention_map(translation: Translation) -> AttentionMap:
    """The best hypothesis' attention with the pieces labelling its axes."""
    attention = translation.nbest[0].attention
    if attention is None:
        raise ValueError("this translation has no attention weights (attention=none)")
    return AttentionMap(
        weights=attention.float().cpu().numpy(),
        source=translation.source_pieces,
        target=translation.target_pieces,
    )
