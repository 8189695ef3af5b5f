"""Translate raw sentences with a trained model: encode, length-batch, search, detokenise.

Sentences are batched by length under a token budget and returned in input order. An empty
sentence gets an empty translation without running the model; a sentence longer than
``max_source_length`` pieces is cut to that length (counted in ``TranslationStats.truncated``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from seq2attn.alignment import Alignment, AttentionAsAlignment, PieceAlignment, piece_alignment
from seq2attn.config import DecodingSchema
from seq2attn.data.batching import TokenBudgetBatchSampler
from seq2attn.data.dataset import collate
from seq2attn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer
from seq2attn.ensemble import Ensemble
from seq2attn.inference.parallel import in_parallel
from seq2attn.models.seq2seq import Seq2Seq
from seq2attn.plotting import AttentionMap
from seq2attn.search import Hypothesis, decode, prepare

log = logging.getLogger(__name__)


@dataclass
class Translation:
    """One sentence: its n-best hypotheses (best first) and the pieces that label its axes."""

    source: str
    text: str
    nbest: list[Hypothesis]
    source_pieces: list[str]
    target_pieces: list[str]

    @property
    def attention_map(self) -> AttentionMap | None:
        """The best hypothesis' attention (target x source) with its axis labels; None without
        attention (``attention=none``) or for an empty source."""
        attention = self.nbest[0].attention if self.nbest else None
        if attention is None:
            return None
        return AttentionMap(
            weights=attention.float().cpu().numpy(),
            source=self.source_pieces,
            target=self.target_pieces,
        )


@dataclass
class TranslationStats:
    """Counts of a translation call; ``seconds`` is search time only (model already loaded)."""

    sentences: int = 0
    empty: int = 0
    truncated: int = 0
    batches: int = 0
    seconds: float = 0.0


@dataclass
class Translations:
    """The translations of one call, in input order, with its counts."""

    items: list[Translation]
    stats: TranslationStats = field(default_factory=TranslationStats)

    @property
    def texts(self) -> list[str]:
        """The best translation of each sentence."""
        return [item.text for item in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Translation]:
        return iter(self.items)

    def __getitem__(self, index: int) -> Translation:
        return self.items[index]


class Translator:
    """A trained model (or ensemble) with its tokenizers: sentences in, translations out.

    ``config`` is the training config stored with the checkpoint (empty for a model built in
    memory), ``paths`` the checkpoint files it was loaded from.
    """

    def __init__(
        self,
        model: Seq2Seq | Ensemble,
        src_tokenizer: Tokenizer,
        tgt_tokenizer: Tokenizer,
        config: dict[str, Any] | None = None,
        paths: Sequence[Path] = (),
    ) -> None:
        self.model = model
        self.src_tokenizer = src_tokenizer
        self.tgt_tokenizer = tgt_tokenizer
        self.config = config or {}
        self.paths = tuple(paths)

    @torch.no_grad()
    def translate(
        self,
        sentences: Sequence[str],
        decoding: DecodingSchema | None = None,
        *,
        max_tokens: int | None = 4000,
        max_sentences: int | None = None,
        max_source_length: int = 250,
        progress: bool = False,
        parallel_batches: int = 1,
    ) -> Translations:
        """Translations of ``sentences`` in input order (greedy search unless ``decoding``),
        ``parallel_batches`` batches searched at a time on a CPU (:mod:`.parallel`).

        Raises:
            ConfigError: a coverage penalty for a model (or ensemble member) without attention.
        """
        decoding = decoding or DecodingSchema()
        decoding.check_attention(self.model.attends)
        was_training = self.model.training
        self.model.eval()
        try:
            return self._translate(
                sentences,
                decoding,
                max_tokens,
                max_sentences,
                max_source_length,
                progress,
                parallel_batches,
            )
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def score_attention(
        self,
        sources: Sequence[str],
        references: Sequence[str],
        gold: Sequence[Alignment] | None = None,
        *,
        max_tokens: int | None = 4000,
        max_sentences: int | None = None,
        max_source_length: int = 250,
    ) -> AttentionAsAlignment | None:
        """The attention of the teacher-forced pass over (source, reference) pairs (the decoder
        fed the reference, as at validation) read as alignment: its entropy, and its AER against
        ``gold`` word alignments where given. None for a model without attention or an ensemble
        (its members attend separately). Pairs with an empty side are left out; a source cut to
        ``max_source_length`` counts for the entropy but not for AER."""
        if isinstance(self.model, Ensemble):
            return None
        src_ids = [ids[:max_source_length] for ids in self.src_tokenizer.encode(list(sources))]
        tgt_ids = self.tgt_tokenizer.encode(list(references))
        todo = [i for i, (s, t) in enumerate(zip(src_ids, tgt_ids, strict=True)) if s and t]
        sampler = TokenBudgetBatchSampler(
            [len(src_ids[i]) for i in todo],
            [len(tgt_ids[i]) + 1 for i in todo],
            max_tokens,
            max_sentences,
            shuffle=False,
            seed=0,
        )
        device = next(self.model.parameters()).device
        scores = AttentionAsAlignment()
        was_training = self.model.training
        self.model.eval()
        try:
            for batch in sampler:
                tensors = collate([(todo[j], src_ids[todo[j]], tgt_ids[todo[j]]) for j in batch])
                out = self.model(
                    tensors.src.to(device),
                    tensors.src_lengths.to(device),
                    tensors.tgt_in.to(device),
                    compute_logits=False,
                )
                if out.attention is None:
                    return None
                scores.add(
                    out.attention,
                    tensors.tgt_out.to(device) != PAD_ID,
                    tensors.src_lengths,
                    [
                        self._gold_pieces(todo[j], gold, src_ids, tgt_ids, sources, references)
                        for j in batch
                    ],
                )
        finally:
            self.model.train(was_training)
        return scores

    def _gold_pieces(
        self,
        i: int,
        gold: Sequence[Alignment] | None,
        src_ids: Sequence[list[int]],
        tgt_ids: Sequence[list[int]],
        sources: Sequence[str],
        references: Sequence[str],
    ) -> PieceAlignment | None:
        """Pair i's gold alignment with the word of each piece the model read, if it fits."""
        if gold is None:
            return None
        return piece_alignment(
            gold[i],
            self.src_tokenizer.pieces(src_ids[i]),
            self.tgt_tokenizer.pieces(tgt_ids[i]),
            sources[i],
            references[i],
        )

    def _translate(
        self,
        sentences: Sequence[str],
        decoding: DecodingSchema,
        max_tokens: int | None,
        max_sentences: int | None,
        max_source_length: int,
        progress: bool,
        parallel_batches: int,
    ) -> Translations:
        device = next(self.model.parameters()).device
        stats = TranslationStats(sentences=len(sentences))
        encoded = self.src_tokenizer.encode(list(sentences))
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
        order = list(sampler)
        batches = [[encoded[todo[j]] for j in batch] for batch in order]

        def search(rows: list[list[int]]) -> list[list[Hypothesis]]:
            src = torch.full((len(rows), max(map(len, rows))), PAD_ID, dtype=torch.long)
            for r, ids in enumerate(rows):
                src[r, : len(ids)] = torch.tensor(ids)
            src_lengths = torch.tensor([len(ids) for ids in rows])
            return decode(
                self.model, src.to(device), src_lengths.to(device), decoding, BOS_ID, EOS_ID
            )

        began = time.perf_counter()
        prepare(self.model, decoding, device)
        with tqdm(
            total=len(batches), disable=not progress, desc="translating", unit="batch"
        ) as bar:
            threads = parallel_batches if device.type == "cpu" else 1
            searched = in_parallel(search, batches, threads, done=bar.update)
        for batch, rows, nbests in zip(order, batches, searched, strict=True):
            texts = self.tgt_tokenizer.decode([nbest[0].tokens for nbest in nbests])
            for j, ids, nbest, text in zip(batch, rows, nbests, texts, strict=True):
                results[todo[j]] = Translation(
                    source=sentences[todo[j]],
                    text=text,
                    nbest=nbest,
                    source_pieces=self.src_tokenizer.pieces(ids),
                    target_pieces=self.tgt_tokenizer.pieces(nbest[0].tokens) + ["</s>"],
                )
            stats.batches += 1
        stats.seconds = time.perf_counter() - began
        return Translations([r for r in results if r is not None], stats)
