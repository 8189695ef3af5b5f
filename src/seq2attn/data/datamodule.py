"""TranslationDataModule: corpus -> cached SentencePiece -> cached encoded splits -> batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import sentencepiece as spm
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from seq2attn.data.batching import TokenBudgetBatchSampler
from seq2attn.data.cache import EncodedSplit, atomic_write_bytes, cache_key, load_split, save_split
from seq2attn.data.corpus import ParallelCorpus
from seq2attn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, train_sentencepiece

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


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


class PairDataset(Dataset[Example]):
    """Examples ``keep`` of an encoded split; item j is ``(i, src[i], tgt[i])``, ``i = keep[j]``."""

    def __init__(self, src: EncodedSplit, tgt: EncodedSplit, keep: np.ndarray) -> None:
        self.src, self.tgt, self.keep = src, tgt, keep

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, j: int) -> Example:
        index = int(self.keep[j])
        return index, self.src[index], self.tgt[index]


class TranslationDataModule(L.LightningDataModule):
    """Builds tokenizers and encoded splits once per content key under ``cache_dir``.

    Tokenizer key: corpus fingerprint + tokenizer settings + side (``joint``, ``src`` or ``tgt``);
    encoded split key: tokenizer key + split name. SentencePiece sees the train split only.
    ``prepare_data`` (rank 0) fills the cache, so with several ranks ``setup`` only reads it.
    """

    def __init__(
        self,
        corpus: Any,
        vocab_size: int,
        joint_vocab: bool,
        sp_model_type: str,
        character_coverage: float,
        max_tokens: int | None,
        max_sentences: int | None,
        max_length: int,
        cache_dir: str,
        seed: int,
        num_workers: int,
    ) -> None:
        super().__init__()
        self.corpus = corpus
        self.vocab_size, self.joint_vocab = vocab_size, joint_vocab
        self.sp_model_type, self.character_coverage = sp_model_type, character_coverage
        self.max_tokens, self.max_sentences, self.max_length = max_tokens, max_sentences, max_length
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
        self._texts = self.corpus.splits()
        log.info("corpus pairs: %s", {name: len(self._texts[name]) for name in SPLITS})
        (src_key, src_tokenizer), (tgt_key, tgt_tokenizer) = self._build_tokenizers()
        self._tokenizers = src_tokenizer, tgt_tokenizer
        for name in SPLITS:
            src = self._encode(name, "src", src_key, src_tokenizer)
            tgt = self._encode(name, "tgt", tgt_key, tgt_tokenizer)
            self._datasets[name] = PairDataset(src, tgt, self._keep(name, src, tgt))

    def _build_tokenizers(self) -> tuple[tuple[str, Tokenizer], tuple[str, Tokenizer]]:
        train = self._texts["train"]
        if self.joint_vocab:
            joint = self._tokenizer("joint", train.src + train.tgt)
            return joint, joint
        return self._tokenizer("src", train.src), self._tokenizer("tgt", train.tgt)

    def _tokenizer(self, side: str, sentences: list[str]) -> tuple[str, Tokenizer]:
        settings = [self.vocab_size, self.sp_model_type, self.character_coverage, spm.__version__]
        key = cache_key(self.corpus.fingerprint(), side, settings)
        path = self.cache_dir / f"spm-{side}-{key}.model"
        if path.exists():
            log.info("reusing cached tokenizer %s", path)
            return key, Tokenizer.from_proto(path.read_bytes())
        log.info("training %s tokenizer (vocab_size<=%d) -> %s", side, self.vocab_size, path)
        proto = train_sentencepiece(
            sentences, self.vocab_size, self.sp_model_type, self.character_coverage
        )
        atomic_write_bytes(path, proto)
        return key, Tokenizer.from_proto(proto)

    def _encode(self, split: str, side: str, key: str, tokenizer: Tokenizer) -> EncodedSplit:
        stem = self.cache_dir / f"{split}-{side}-{cache_key(key, split)}"
        cached = load_split(stem)
        if cached is not None:
            log.info("reusing cached %s %s ids %s", split, side, stem)
            return cached
        log.info("encoding %s %s -> %s", split, side, stem)
        texts = self._texts[split].src if side == "src" else self._texts[split].tgt
        encoded = EncodedSplit.from_sequences(tokenizer.encode(texts))
        save_split(stem, encoded)
        return encoded

    def _keep(self, split: str, src: EncodedSplit, tgt: EncodedSplit) -> np.ndarray:
        if split != "train":
            return np.arange(len(src))
        src_lengths, tgt_lengths = src.lengths, tgt.lengths
        # Empty sources cannot be packed by the encoder RNN.
        fits = (src_lengths > 0) & (np.maximum(src_lengths, tgt_lengths) <= self.max_length)
        log.info(
            "dropped %d of %d training pairs (empty source or longer than max_length=%d pieces)",
            int((~fits).sum()),
            len(fits),
            self.max_length,
        )
        return np.flatnonzero(fits)

    # --- access ------------------------------------------------------------------------------

    def _corpus(self, split: str) -> ParallelCorpus:
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}, expected one of {SPLITS}")
        if not self._texts:
            raise RuntimeError("TranslationDataModule.setup() must run before reading splits")
        return self._texts[split]

    def sources(self, split: str) -> list[str]:
        return self._corpus(split).src

    def references(self, split: str) -> list[str]:
        return self._corpus(split).tgt

    # --- loaders -----------------------------------------------------------------------------

    def _replicas(self) -> tuple[int, int]:
        # The trainer runs with use_distributed_sampler=False: ranks are split here.
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self._datasets[split]
        num_replicas, rank = self._replicas()
        sampler = TokenBudgetBatchSampler(
            src_lengths=dataset.src.lengths[dataset.keep],
            tgt_lengths=dataset.tgt.lengths[dataset.keep],
            max_tokens=self.max_tokens,
            max_sentences=self.max_sentences,
            shuffle=shuffle,
            seed=self.seed,
            num_replicas=num_replicas,
            rank=rank,
        )
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def build_datamodule(cfg: DictConfig) -> TranslationDataModule:
    """The data module described by the ``data`` config group."""
    return instantiate(cfg)
