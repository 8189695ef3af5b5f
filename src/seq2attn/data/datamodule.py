"""TranslationDataModule: corpus -> preprocessing -> SentencePiece -> encoded splits -> batches."""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import numpy as np
import sentencepiece as spm
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from seq2attn.config import ConfigError, DataSchema, check
from seq2attn.data.batching import TokenBudgetBatchSampler
from seq2attn.data.cache import EncodedSplit, atomic_write_bytes, cache_key, load_split, save_split
from seq2attn.data.corpus import SPLITS, Corpus, CorpusError, ParallelCorpus
from seq2attn.data.preprocess import LengthFilter, TextFilter
from seq2attn.data.resumable import ResumableDataLoader
from seq2attn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, train_sentencepiece

log = logging.getLogger(__name__)

ENCODE_CHUNK = 50_000  # sentences per SentencePiece call: bounds the Python lists alive at once


@dataclass
class Batch:
    """A padded batch; ``tgt_in = [BOS y_1 .. y_n]`` and ``tgt_out = [y_1 .. y_n EOS]``.

    Attributes:
        src: (B, S) source ids, PAD_ID-padded.
        src_lengths: (B,) real source lengths.
        tgt_in: (B, T) decoder inputs, PAD_ID-padded.
        tgt_out: (B, T) decoder targets, PAD_ID-padded.
        indices: (B,) positions of the examples in their split.
    """

    src: torch.Tensor
    src_lengths: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    indices: torch.Tensor

    @property
    def num_target_tokens(self) -> int:
        return int((self.tgt_out != PAD_ID).sum())


Example = tuple[int, np.ndarray, np.ndarray]


def collate(examples: list[Example]) -> Batch:
    """Pad ``(index, source ids, target ids)`` examples into a Batch (module-level: picklable)."""
    indices, sources, targets = zip(*examples, strict=True)
    src = [torch.as_tensor(np.asarray(s, dtype=np.int64)) for s in sources]
    tgt = [torch.as_tensor(np.asarray(t, dtype=np.int64)) for t in targets]
    bos, eos = torch.tensor([BOS_ID]), torch.tensor([EOS_ID])
    return Batch(
        src=pad_sequence(src, batch_first=True, padding_value=PAD_ID),
        src_lengths=torch.tensor([len(s) for s in src]),
        tgt_in=pad_sequence([torch.cat([bos, t]) for t in tgt], True, PAD_ID),
        tgt_out=pad_sequence([torch.cat([t, eos]) for t in tgt], True, PAD_ID),
        indices=torch.tensor(indices),
    )


def encode_split(
    tokenizer: Tokenizer, texts: Sequence[str], chunk_size: int = ENCODE_CHUNK
) -> EncodedSplit:
    """Encode ``texts`` chunk by chunk into flat arrays, never one list of all id lists."""
    parts = [
        EncodedSplit.from_sequences(tokenizer.encode(list(texts[start : start + chunk_size])))
        for start in range(0, len(texts), chunk_size)
    ]
    return EncodedSplit.concatenate(parts)


EMPTY_SOURCE = np.array([EOS_ID], dtype=np.int32)


class PairDataset(Dataset[Example]):
    """Examples ``keep`` of an encoded split; item j is ``(i, src[i], tgt[i])``, ``i = keep[j]``.

    Val and test are never filtered, so a source may be empty there; it is given as a lone EOS,
    because the encoder RNN cannot pack a length-0 sequence.
    """

    def __init__(self, src: EncodedSplit, tgt: EncodedSplit, keep: np.ndarray) -> None:
        self.src, self.tgt, self.keep = src, tgt, keep

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, j: int) -> Example:
        index = int(self.keep[j])
        source = self.src[index]
        return index, source if len(source) else EMPTY_SOURCE, self.tgt[index]


class TranslationDataModule(L.LightningDataModule):
    """Builds tokenizers and encoded splits once per content key under ``cache_dir``.

    Keys: a split's text key hashes the corpus fingerprint of the split (file contents, reader
    settings) and the text filter; the tokenizer key hashes the train text key, the tokenizer
    settings and the side (``joint``, ``src`` or ``tgt``); an encoded split's key hashes the
    tokenizer key and the split's text key. SentencePiece sees the filtered train split only.
    When the tokenizer and the encoded train split are cached, the train text is not even read.
    The piece-length filter is cheap and runs on every setup, so changing it needs no rebuild.
    ``prepare_data`` (rank 0) fills the cache, so with several ranks ``setup`` only reads it.
    """

    def __init__(
        self,
        corpus: Corpus,
        text_filter: TextFilter,
        length_filter: LengthFilter,
        vocab_size: int,
        joint_vocab: bool,
        sp_model_type: str,
        character_coverage: float,
        max_tokens: int | None,
        max_sentences: int | None,
        cache_dir: str,
        seed: int,
        num_workers: int,
        spm_model: str | None = None,
    ) -> None:
        super().__init__()
        self.spm_model = None if spm_model is None else Path(spm_model)
        self.corpus, self.text_filter, self.length_filter = corpus, text_filter, length_filter
        self.vocab_size, self.joint_vocab = vocab_size, joint_vocab
        self.sp_model_type, self.character_coverage = sp_model_type, character_coverage
        self.max_tokens, self.max_sentences = max_tokens, max_sentences
        self.cache_dir, self.seed, self.num_workers = Path(cache_dir), seed, num_workers
        self._texts: dict[str, ParallelCorpus] = {}
        self._datasets: dict[str, PairDataset] = {}
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
        if "train" not in texts:
            log.info("train split fully cached: no tokenizer training and no re-tokenising")

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
        if self.spm_model is not None:
            given = self._given_tokenizer(self.spm_model)
            return given, given
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

    @staticmethod
    def _given_tokenizer(path: Path) -> tuple[str, Tokenizer]:
        """The SentencePiece model at ``path``, keyed by its bytes, used for both sides."""
        if not path.is_file():
            raise CorpusError(f"data.spm_model={path}: file not found")
        proto = path.read_bytes()
        try:
            tokenizer = Tokenizer.from_proto(proto)
        except (RuntimeError, ValueError) as error:
            raise CorpusError(
                f"data.spm_model={path}: not a usable SentencePiece model ({error})"
            ) from None
        log.info("using the SentencePiece model %s (%d ids)", path, tokenizer.vocab_size)
        return cache_key("given", hashlib.sha256(proto).hexdigest()), tokenizer

    def _tokenizer(
        self, side: str, train_key: str, sentences: Callable[[], Iterable[str]]
    ) -> tuple[str, Tokenizer]:
        settings = [self.vocab_size, self.sp_model_type, self.character_coverage, spm.__version__]
        key = cache_key(train_key, side, settings)
        path = self.cache_dir / f"spm-{side}-{key}.model"
        if path.exists():
            log.info("reusing cached tokenizer %s", path)
            return key, Tokenizer.from_proto(path.read_bytes())
        texts = sentences()
        log.info("training %s tokenizer (vocab_size<=%d) -> %s", side, self.vocab_size, path)
        start = time.perf_counter()
        proto = train_sentencepiece(
            texts, self.vocab_size, self.sp_model_type, self.character_coverage
        )
        atomic_write_bytes(path, proto)
        log.info("trained %s tokenizer in %.1f s", side, time.perf_counter() - start)
        return key, Tokenizer.from_proto(proto)

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
        cached = load_split(stem)
        if cached is not None:
            log.info("reusing cached %s %s ids %s", split, side, stem)
            return cached
        lines = getattr(read(split)[0], side)
        log.info("encoding %s %s (%d lines) -> %s", split, side, len(lines), stem)
        start = time.perf_counter()
        encoded = encode_split(tokenizer, lines)
        save_split(stem, encoded)
        log.info("encoded %s %s in %.1f s", split, side, time.perf_counter() - start)
        return encoded

    def _keep(self, split: str, src: EncodedSplit, tgt: EncodedSplit) -> np.ndarray:
        if split != "train":
            return np.arange(len(src))
        where = f"{self.corpus.describe(split)} in pieces"
        return self.length_filter.keep(src.lengths, tgt.lengths, where)

    # --- access ------------------------------------------------------------------------------

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

    # --- loaders -----------------------------------------------------------------------------

    def _replicas(self) -> tuple[int, int]:
        # The trainer runs with use_distributed_sampler=False: ranks are split here.
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def _sampler(self, split: str, shuffle: bool) -> TokenBudgetBatchSampler:
        dataset = self._datasets[split]
        num_replicas, rank = self._replicas()
        return TokenBudgetBatchSampler(
            src_lengths=dataset.src.lengths[dataset.keep],
            tgt_lengths=dataset.tgt.lengths[dataset.keep],
            max_tokens=self.max_tokens,
            max_sentences=self.max_sentences,
            shuffle=shuffle,
            seed=self.seed,
            num_replicas=num_replicas,
            rank=rank,
        )

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self._datasets[split],
            batch_sampler=self._sampler(split, shuffle),
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
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


def build_datamodule(cfg: DictConfig) -> TranslationDataModule:
    """The data module described by the ``data`` config group, validated by DataSchema.

    ``cfg.corpus`` is instantiated (its keys interpolate ``data.*`` keys such as
    ``data.src_lang``); the other keys become the data module's arguments.

    Raises:
        ConfigError: a key of ``data`` is invalid.
        CorpusError: the corpus rejects its arguments (e.g. an unknown Multi30k language).
    """
    missing = sorted(OmegaConf.missing_keys(cfg))  # full keys: data.train_src, ...
    if missing:
        raise ConfigError(
            f"{', '.join(missing)}: not set; give each a value, e.g. {missing[0]}=path/to/file"
        )
    settings = check(DataSchema, cfg, "data")
    try:
        corpus = instantiate(cfg.corpus)
    except InstantiationException as error:
        if isinstance(error.__cause__, CorpusError):
            raise error.__cause__ from None
        raise
    return get_class(settings._target_)(
        corpus=corpus,
        text_filter=TextFilter(
            normalization=settings.normalization.value,
            drop_empty=settings.drop_empty,
            max_chars=settings.max_chars,
        ),
        length_filter=LengthFilter(
            min_length=settings.min_length,
            max_length=settings.max_length,
            max_length_ratio=settings.max_length_ratio,
        ),
        vocab_size=settings.vocab_size,
        joint_vocab=settings.joint_vocab,
        sp_model_type=settings.sp_model_type.value,
        character_coverage=settings.character_coverage,
        max_tokens=settings.max_tokens,
        max_sentences=settings.max_sentences,
        cache_dir=settings.cache_dir,
        seed=settings.seed,
        num_workers=settings.num_workers,
        spm_model=settings.spm_model,
    )
