"""Content-keyed cache: atomic file writes and memory-mapped encoded splits.

An encoded split of N sequences is two ``.npy`` files (nanoGPT's ``train.bin`` idea): ``ids``, all
token ids concatenated (int32), and ``offsets`` (int64, N + 1 entries), so sequence i is
``ids[offsets[i]:offsets[i + 1]]``. Each file is written to a temporary name in the same directory,
fsynced and renamed, so readers see a whole file or none. ``offsets`` is written last and marks a
complete entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from seq2attn.data.tokenizer import Tokenizer

KEY_LENGTH = 16
ENCODE_CHUNK = 50_000  # sentences per SentencePiece call: bounds the Python lists alive at once


def cache_key(*parts: object) -> str:
    """Hex sha256 prefix over JSON-encoded parts; equal exactly when the parts are equal."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True).encode())
        digest.update(b"\0")  # JSON never contains a raw NUL, so parts cannot run together
    return digest.hexdigest()[:KEY_LENGTH]


def atomic_temporary(path: Path) -> tuple[int, str]:
    """A new file beside ``path`` (descriptor and name) to rename onto it when complete, with
    the permissions the process umask gives new files (``mkstemp`` alone gives 0600, which
    breaks a cache or data folder shared by several users)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0o022)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)
    return fd, tmp


def _atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    fd, tmp = atomic_temporary(path)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that the file is either complete or absent."""
    _atomic_write(Path(path), lambda file: file.write(data))


class EncodedSplit:
    """Variable-length int sequences as a flat id array plus offsets (see the module docstring)."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray) -> None:
        self.ids, self.offsets = ids, offsets

    @classmethod
    def from_sequences(cls, sequences: Sequence[Sequence[int]]) -> EncodedSplit:
        lengths = np.fromiter((len(seq) for seq in sequences), dtype=np.int64, count=len(sequences))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = np.fromiter((i for seq in sequences for i in seq), dtype=np.int32, count=offsets[-1])
        return cls(ids, offsets)

    @classmethod
    def concatenate(cls, parts: Sequence[EncodedSplit]) -> EncodedSplit:
        """The sequences of ``parts`` one after another (empty parts allowed)."""
        arrays = [np.asarray(p.ids, dtype=np.int32) for p in parts]
        ids = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int32)
        starts = np.cumsum([0] + [len(p.ids) for p in parts])[:-1]
        offsets = [[0]] + [p.offsets[1:] + start for p, start in zip(parts, starts, strict=True)]
        return cls(ids, np.concatenate(offsets).astype(np.int64))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> np.ndarray:
        return self.ids[self.offsets[index] : self.offsets[index + 1]]

    @property
    def lengths(self) -> np.ndarray:
        """(N,) int64 sequence lengths."""
        return np.diff(self.offsets)


def _split_paths(stem: Path) -> tuple[Path, Path]:
    return stem.with_name(stem.name + ".ids.npy"), stem.with_name(stem.name + ".offsets.npy")


def save_split(stem: str | os.PathLike[str], split: EncodedSplit) -> None:
    """Atomically write ``<stem>.ids.npy`` then ``<stem>.offsets.npy``."""
    ids_path, offsets_path = _split_paths(Path(stem))
    try:
        _atomic_write(ids_path, lambda file: np.save(file, split.ids))
        _atomic_write(offsets_path, lambda file: np.save(file, split.offsets))
    except BaseException:
        ids_path.unlink(missing_ok=True)
        raise


def load_split(stem: str | os.PathLike[str]) -> EncodedSplit | None:
    """The memory-mapped split saved under ``stem``, or None when it is not (completely) cached."""
    ids_path, offsets_path = _split_paths(Path(stem))
    if not (ids_path.exists() and offsets_path.exists()):
        return None
    return EncodedSplit(np.load(ids_path, mmap_mode="r"), np.load(offsets_path, mmap_mode="r"))


def encode_split(
    tokenizer: Tokenizer, texts: Sequence[str], chunk_size: int = ENCODE_CHUNK
) -> EncodedSplit:
    """Encode ``texts`` chunk by chunk into flat arrays, never one list of all id lists."""
    parts = [
        EncodedSplit.from_sequences(tokenizer.encode(list(texts[start : start + chunk_size])))
        for start in range(0, len(texts), chunk_size)
    ]
    return EncodedSplit.concatenate(parts)
