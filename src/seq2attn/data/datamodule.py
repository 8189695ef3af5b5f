"""TranslationDataModule: corpus -> preprocessing -> SentencePiece -> encoded splits -> batches."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

import lightning as L
import numpy as np
import sentencepiece as spm
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from seq2attn.alignment import Alignment, PieceAlignment, piece_alignment
from seq2attn.data.batching import TokenBudgetBatchSampler
from seq2attn.data.cache import EncodedSplit, cache_key, encode_split, model_key
from seq2attn.data.cache_entries import cached_split, cached_tokenizer
from seq2attn.data.corpus import SPLITS, Corpus, CorpusError, ParallelCorpus
from seq2attn.data.dataset import PairDataset, SampledPairDataset, SubwordSampling, collate
from seq2attn.data.pipeline import DataPipeline, validate_data
from seq2attn.data.preprocess import LengthFilter, NormalizationForm, TextFilter
from seq2attn.data.resumable import ResumableDataLoader, own_generator
from seq2attn.data.tokenizer import Tokenizer, train_sentencepiece

log = logging.getLogger(__name__)


class TranslationDataModule(L.LightningDataModule):
    """Builds tokenizers and encoded splits once per content key under ``cache_dir``.

    Keys: a split's text key hashes the corpus fingerprint of the split (file contents, reader
    settings) and the text filter; the tokenizer key hashes the train text key, the tokenizer
    settings and the side (``joint``, ``src`` or ``tgt``); an encoded split's key hashes the
    tokenizer key, the tokenizer model's bytes and the split's text key. Damaged entries are
    rebuilt, and each is built by one process (``cache_entries``). SentencePiece sees the
    filtered train split only.
    When the tokenizer and the encoded train split are cached, the train text is not even read.
    The piece-length filter is cheap and runs on every setup, so changing it needs no rebuild.
    With ``subword_alpha`` set, training pairs are segmented anew in every epoch
    (``SampledPairDataset``; the train text is then always read); val and test keep the one best
    segmentation.
    ``prepare_data`` (rank 0) fills the cache, so with several ranks ``setup`` only reads it.
    """

    def __init__(
        self,
        corpus: Corpus,
        normalization: NormalizationForm,
        drop_empty: bool,
        max_chars: int,
        min_length: int,
        max_length: int,
        max_length_ratio: float | None,
        spm_model: str | None,
        vocab_size: int,
        joint_vocab: bool,
        sp_model_type: str,
        character_coverage: float,
        max_tokens: int | None,
        max_sentences: int | None,
        cache_dir: str,
        seed: int,
        num_workers: int,
        subword_alpha: float | None = None,
        subword_nbest: int = -1,
        tokenizers: tuple[Tokenizer, Tokenizer] | None = None,
    ) -> None:
        super().__init__()
        self.given_tokenizers = tokenizers
        self.corpus = corpus
        self.text_filter = TextFilter(normalization, drop_empty, max_chars)
        self.length_filter = LengthFilter(min_length, max_length, max_length_ratio)
        self.spm_model = None if spm_model is None else Path(spm_model)
        self.vocab_size, self.joint_vocab = vocab_size, joint_vocab
        self.sp_model_type, self.character_coverage = sp_model_type, character_coverage
        self.max_tokens, self.max_sentences = max_tokens, max_sentences
        self.cache_dir, self.seed, self.num_workers = Path(cache_dir), seed, num_workers
        self.sampling = (
            None if subword_alpha is None else SubwordSampling(subword_alpha, subword_nbest, seed)
        )
        self._texts: dict[str, ParallelCorpus] = {}
        self._datasets: dict[str, PairDataset] = {}
        self._gold: dict[str, list[PieceAlignment | None] | None] = {}
        self._tokenizers: tuple[Tokenizer, Tokenizer] | None = None

    @property
    def src_tokenizer(self) -> Tokenizer:
        return self._built_tokenizers()[0]

    @property
    def tgt_tokenizer(self) -> Tokenizer:
        return self._built_tokenizers()[1]

    def _built_tokenizers(self) -> tuple[Tokenizer, Tokenizer]:
        if self._tokenizers is None:
            raise RuntimeError("the tokenizers are built by setup(): call it first")
        return self._tokenizers

    # --- building ----------------------------------------------------------------------------

    def prepare_data(self) -> None:
        self.setup()

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        # All files are found (or downloaded) and hashed before any work, so bad paths fail fast.
        text_keys = {
            split: cache_key(self.corpus.fingerprint(split), asdict(self.text_filter))
            for split in SPLITS
        }
        texts: dict[str, tuple[ParallelCorpus, ParallelCorpus]] = {}

        def read(split: str) -> tuple[ParallelCorpus, ParallelCorpus]:
            """Each split is read at most once, and train only when something is not cached."""
            if split not in texts:
                texts[split] = self._read(split)
            return texts[split]

        for split in ("val", "test"):  # small and always needed: bad input shows before work
            self._texts[split] = read(split)[1]
        (src_key, src_tok), (tgt_key, tgt_tok) = self._build_tokenizers(
            text_keys["train"], lambda: read("train")[0]
        )
        self._tokenizers = src_tok, tgt_tok
        for split in SPLITS:
            src = self._encoded(split, "src", cache_key(src_key, text_keys[split]), src_tok, read)
            tgt = self._encoded(split, "tgt", cache_key(tgt_key, text_keys[split]), tgt_tok, read)
            self._datasets[split] = PairDataset(src, tgt, self._keep(split, src, tgt))
        if self.sampling is not None:
            self._datasets["train"] = self._sampled(self._datasets["train"], read("train")[0])
        if "train" not in texts:
            log.info("train split fully cached: no tokenizer training and no re-tokenising")
        for split in ("val", "test"):  # a bad gold alignment file also shows before work
            self.gold_alignments(split)

    def _sampled(self, train: PairDataset, texts: ParallelCorpus) -> SampledPairDataset:
        """The training pairs segmented anew every epoch; a tokenizer that cannot sample (a char
        or word model given as ``data.spm_model``) is refused before any work."""
        assert self.sampling is not None
        dataset = SampledPairDataset(
            train.src, train.tgt, train.keep, texts, self._built_tokenizers(), self.sampling
        )
        try:
            dataset[0, 0]
        except RuntimeError as error:
            raise CorpusError(
                f"data.subword_alpha={self.sampling.alpha}: the SentencePiece model cannot "
                f"sample segmentations ({error}); only unigram and bpe models can"
            ) from None
        log.info(
            "subword sampling of the training pairs: alpha %g, nbest %d (unigram models)",
            self.sampling.alpha,
            self.sampling.nbest,
        )
        return dataset

    def _read(self, split: str) -> tuple[ParallelCorpus, ParallelCorpus]:
        """``(tokenizer input, texts)`` of ``split`` after preprocessing."""
        where = self.corpus.describe(split)
        log.info("reading %s", where)
        if split == "train":
            texts = self.text_filter.training_pairs(self.corpus.pairs(split), where)
            return texts, texts
        return self.text_filter.evaluation_pairs(self.corpus.pairs(split), where)

    def _build_tokenizers(
        self, train_key: str, train: Callable[[], ParallelCorpus]
    ) -> tuple[tuple[str, Tokenizer], tuple[str, Tokenizer]]:
        if self.given_tokenizers is not None:  # a teacher's or warm start's, keyed by their bytes
            src, tgt = self.given_tokenizers
            sizes = src.vocab_size, tgt.vocab_size
            log.info("using the given checkpoint's tokenizers (%d and %d ids)", *sizes)
            return (model_key("given", src), src), (model_key("given", tgt), tgt)
        if self.spm_model is not None:  # used for both sides, keyed by its bytes
            try:
                given = Tokenizer.from_file(self.spm_model)
            except ValueError as error:
                raise CorpusError(f"data.spm_model={error}") from None
            log.info("using the SentencePiece model %s (%d ids)", self.spm_model, given.vocab_size)
            key = model_key("given", given)
            return (key, given), (key, given)
        if self.joint_vocab:

            def both() -> Iterable[str]:
                texts = train()
                return itertools.chain(texts.src, texts.tgt)

            joint = self._tokenizer("joint", train_key, both)
            return joint, joint
        return (
            self._tokenizer("src", train_key, lambda: train().src),
            self._tokenizer("tgt", train_key, lambda: train().tgt),
        )

    def _tokenizer(
        self, side: str, train_key: str, sentences: Callable[[], Iterable[str]]
    ) -> tuple[str, Tokenizer]:
        settings = [self.vocab_size, self.sp_model_type, self.character_coverage, spm.__version__]
        key = cache_key(train_key, side, settings)
        stem = self.cache_dir / f"spm-{side}-{key}"

        def train() -> bytes:
            texts = sentences()
            log.info("training %s tokenizer (vocab_size<=%d) -> %s", side, self.vocab_size, stem)
            start = time.perf_counter()
            proto = train_sentencepiece(
                texts, self.vocab_size, self.sp_model_type, self.character_coverage, side
            )
            log.info("trained %s tokenizer in %.1f s", side, time.perf_counter() - start)
            return proto

        tokenizer = cached_tokenizer(stem, train)
        return model_key(key, tokenizer), tokenizer

    def _encoded(
        self,
        split: str,
        side: str,
        key: str,
        tokenizer: Tokenizer,
        read: Callable[[str], tuple[ParallelCorpus, ParallelCorpus]],
    ) -> EncodedSplit:
        """The cached ids of ``side`` ("src" or "tgt") of ``split``, encoded when missing."""
        stem = self.cache_dir / f"{split}-{side}-{key}"

        def encode() -> EncodedSplit:
            lines = getattr(read(split)[0], side)
            log.info("encoding %s %s (%d lines) -> %s", split, side, len(lines), stem)
            start = time.perf_counter()
            encoded = encode_split(tokenizer, lines, what=f"{split} {side}")
            log.info("encoded %s %s in %.1f s", split, side, time.perf_counter() - start)
            return encoded

        return cached_split(stem, f"{split} {side} ids", encode)

    def _keep(self, split: str, src: EncodedSplit, tgt: EncodedSplit) -> np.ndarray:
        if split != "train":
            return np.arange(len(src))
        where = f"{self.corpus.describe(split)} in pieces"
        return self.length_filter.keep(src.lengths, tgt.lengths, where)

    def _corpus(self, split: str) -> ParallelCorpus:
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}, expected one of {SPLITS}")
        if not self._datasets:
            raise RuntimeError("TranslationDataModule.setup() must run before reading splits")
        if split == "train":  # not kept in memory: read again
            return self._read(split)[1]
        return self._texts[split]

    def sources(self, split: str) -> list[str]:
        """Normalised source sentences (what the model reads); train is read again."""
        return self._corpus(split).src

    def references(self, split: str) -> list[str]:
        """Target sentences; val and test verbatim (for BLEU), train preprocessed."""
        return self._corpus(split).tgt

    def gold_alignments(self, split: str) -> list[PieceAlignment | None] | None:
        """The corpus's gold word alignments of val or test by example index, each with the
        word of every piece the model reads; None for a corpus without them, and for a sentence
        whose pieces do not split into its words (logged with the count kept).

        Raises:
            CorpusError: the corpus gives another number of alignments than pairs.
        """
        if split not in self._gold:
            words = self.corpus.alignments(split) if split != "train" else None
            self._gold[split] = None if words is None else self._with_pieces(split, words)
        return self._gold[split]

    def _with_pieces(self, split: str, words: list[Alignment]) -> list[PieceAlignment | None]:
        dataset = self._datasets[split]
        pairs = list(self.corpus.pairs(split))  # the text the alignments index
        if len(words) != len(pairs) or len(pairs) != len(dataset.src):
            raise CorpusError(
                f"{self.corpus.describe(split)}: {len(words)} gold alignments for "
                f"{len(pairs)} sentence pairs"
            )
        src_tok, tgt_tok = self._built_tokenizers()
        gold: list[PieceAlignment | None] = []
        for i, (alignment, (source, target)) in enumerate(zip(words, pairs, strict=True)):
            source_pieces = src_tok.pieces(dataset.src[i].tolist())
            target_pieces = tgt_tok.pieces(dataset.tgt[i].tolist())
            gold.append(piece_alignment(alignment, source_pieces, target_pieces, source, target))
        kept = sum(entry is not None for entry in gold)
        if kept < len(gold):
            log.warning(
                "%s: %d of %d gold alignments kept for AER; the pieces of the others do not "
                "split into their words",
                self.corpus.describe(split),
                kept,
                len(gold),
            )
        return gold

    # --- loaders -----------------------------------------------------------------------------

    def _sampler(self, split: str, shuffle: bool) -> TokenBudgetBatchSampler:
        dataset = self._datasets[split]
        trainer = self.trainer  # runs with use_distributed_sampler=False: ranks are split here
        num_replicas, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        return TokenBudgetBatchSampler(
            src_lengths=dataset.src.lengths[dataset.keep],
            tgt_lengths=dataset.tgt.lengths[dataset.keep],
            max_tokens=self.max_tokens,
            max_sentences=self.max_sentences,
            shuffle=shuffle,
            seed=self.seed,
            num_replicas=num_replicas,
            rank=rank,
            with_epoch=isinstance(dataset, SampledPairDataset),
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self._datasets[split],
            batch_sampler=self._sampler(split, shuffle),
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=own_generator(),
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches; a checkpoint records the place in the epoch (resumable)."""
        return ResumableDataLoader(
            self._datasets["train"],
            self._sampler("train", shuffle=True),
            collate,
            self.num_workers,
            batches_done=self._batches_done,
        )

    def _batches_done(self) -> int:
        # batches of this epoch already trained on (processed, so including the one whose
        # on_train_batch_end is writing the checkpoint)
        if self.trainer is None:
            return 0
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return int(getattr(progress, "processed", progress.completed))

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def build_datamodule(
    data: DataPipeline | DictConfig, tokenizers: tuple[Tokenizer, Tokenizer] | None = None
) -> TranslationDataModule:
    """The data module of a ``data`` config checked by ``seq2attn.config.validate`` (a node is
    checked here by :func:`validate_data`), with the given (source, target) ``tokenizers`` in
    place of the config's; a corpus that rejects its arguments (e.g. an unknown Multi30k
    language) raises its :class:`CorpusError`."""
    if isinstance(data, DictConfig):
        data = validate_data(data)
    try:
        corpus = instantiate(data.corpus)
    except InstantiationException as error:
        if isinstance(error.__cause__, CorpusError):
            raise error.__cause__ from None
        raise
    module = get_class(data._target_)
    return module(corpus=corpus, tokenizers=tokenizers, **data.module_arguments())


def attached_datamodule(trainer: L.Trainer) -> TranslationDataModule:
    """The data module the trainer runs on (its tokenizers and references)."""
    datamodule = getattr(trainer, "datamodule", None)
    if not isinstance(datamodule, TranslationDataModule):
        raise RuntimeError("seq2attn runs need a TranslationDataModule attached to the trainer")
    return datamodule
