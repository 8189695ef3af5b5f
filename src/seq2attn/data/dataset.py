"""Encoded pairs as a dataset of examples, and their padded batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from seq2attn.data.cache import EncodedSplit
from seq2attn.data.corpus import ParallelCorpus
from seq2attn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer


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


# (index, source ids, target ids): arrays from the dataset, lists from raw sentences
Example = tuple[int, np.ndarray | Sequence[int], np.ndarray | Sequence[int]]


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


@dataclass(frozen=True)
class SubwordSampling:
    """How training pairs are segmented anew: ``alpha`` and ``nbest`` of :meth:`Tokenizer.sample`,
    and the run's ``seed``."""

    alpha: float
    nbest: int
    seed: int


class SampledPairDataset(PairDataset):
    """Training examples segmented anew in every epoch (subword regularisation, Kudo 2018).

    Item ``(epoch, j)`` is pair ``i = keep[j]``, each side drawn by :meth:`Tokenizer.sample`
    with a seed fixed by ``(seed, epoch, i)``: each epoch sees other segmentations, and a run
    resumed mid-epoch draws what an uninterrupted one would. Batches are still cut by the
    lengths of the one best segmentation (``src``, ``tgt``), so a batch of sampled pieces, a
    little longer on average, may exceed ``data.max_tokens`` by that much.
    """

    def __init__(
        self,
        src: EncodedSplit,
        tgt: EncodedSplit,
        keep: np.ndarray,
        texts: ParallelCorpus,
        tokenizers: tuple[Tokenizer, Tokenizer],
        sampling: SubwordSampling,
    ) -> None:
        super().__init__(src, tgt, keep)
        if len(texts) != len(src):
            raise ValueError(f"got {len(texts)} training texts for {len(src)} encoded pairs")
        self.texts, self.tokenizers, self.sampling = texts, tokenizers, sampling

    def __getitem__(self, key: tuple[int, int]) -> Example:  # type: ignore[override]
        epoch, j = key
        index = int(self.keep[j])
        # SentencePiece takes 2^32 - 1 for "no seed given": one value fewer
        seeds = np.random.SeedSequence([self.sampling.seed, epoch, index]).generate_state(2)
        seeds %= np.uint32(0xFFFFFFFF)
        alpha, nbest = self.sampling.alpha, self.sampling.nbest
        src_tokenizer, tgt_tokenizer = self.tokenizers
        source = src_tokenizer.sample(self.texts.src[index], alpha, nbest, int(seeds[0]))
        target = tgt_tokenizer.sample(self.texts.tgt[index], alpha, nbest, int(seeds[1]))
        return index, source, target
