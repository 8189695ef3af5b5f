from __future__ import annotations

import io
import os
import sys

import numpy as np
import pytest

from seq2attn.data.cache import (
    DamagedEntry,
    EncodedSplit,
    atomic_write_bytes,
    cache_key,
    encode_split,
    load_split,
    save_split,
)
from seq2attn.data.tokenizer import Tokenizer, train_sentencepiece

SEQUENCES = [[5, 6, 7], [], [9], [10, 11]]


def test_cache_key_is_stable_and_short():
    key = cache_key("fp", 8000, {"a": 1, "b": 2.5})
    assert key == cache_key("fp", 8000, {"b": 2.5, "a": 1})
    assert len(key) == 16 and int(key, 16) >= 0


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("fp", 8000), ("fp", 8001)),
        (("fp", 8000), ("fq", 8000)),
        (("fp", 1), ("fp", "1")),
        (("ab", "c"), ("a", "bc")),
        (("fp",), ("fp", None)),
        (("fp", [1, 2]), ("fp", [2, 1])),
        (("fp", 1.0), ("fp", 0.9995)),
    ],
)
def test_cache_key_changes_when_any_part_changes(a, b):
    assert cache_key(*a) != cache_key(*b)


def test_atomic_write_bytes_writes_and_replaces(tmp_path):
    path = tmp_path / "sub" / "model"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == ["model"]


def test_interrupted_byte_write_leaves_nothing(tmp_path, monkeypatch):
    def crash(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", crash)  # the data is written, the rename has not happened
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(tmp_path / "model", b"data")
    assert os.listdir(tmp_path) == []


def test_encoded_split_round_trip_is_memory_mapped(tmp_path):
    save_split(tmp_path / "train-src", EncodedSplit.from_sequences(SEQUENCES))
    split = load_split(tmp_path / "train-src")
    assert isinstance(split.ids, np.memmap) and isinstance(split.offsets, np.memmap)
    assert split.ids.dtype == np.int32 and split.offsets.dtype == np.int64
    assert split.offsets.tolist() == [0, 3, 3, 4, 6]
    assert len(split) == 4
    assert [split[i].tolist() for i in range(len(split))] == SEQUENCES
    assert split.lengths.tolist() == [3, 0, 1, 2]


def test_empty_split_round_trips(tmp_path):
    save_split(tmp_path / "empty", EncodedSplit.from_sequences([]))
    split = load_split(tmp_path / "empty")
    assert len(split) == 0 and split.lengths.tolist() == []


def test_missing_split_is_a_miss_and_a_partial_one_is_damaged(tmp_path):
    assert load_split(tmp_path / "nothing") is None
    np.save(tmp_path / "half.ids.npy", np.arange(3, dtype=np.int32))  # killed before offsets
    with pytest.raises(DamagedEntry, match=r"half.manifest.json is missing beside half.ids.npy"):
        load_split(tmp_path / "half")


def test_interrupted_split_write_leaves_nothing(tmp_path, monkeypatch):
    real_save = np.save

    def save_then_crash(file, array):
        if array.dtype == np.int64:  # the offsets, written second
            file.write(b"\x93NUMPY partial")
            raise OSError("disk full")
        real_save(file, array)

    monkeypatch.setattr(np, "save", save_then_crash)
    with pytest.raises(OSError, match="disk full"):
        save_split(tmp_path / "train-src", EncodedSplit.from_sequences(SEQUENCES))
    assert os.listdir(tmp_path) == []
    assert load_split(tmp_path / "train-src") is None


def test_atomic_writes_give_files_the_umask_permissions(tmp_path):
    previous = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "shared.bin", b"x")
    finally:
        os.umask(previous)
    assert (tmp_path / "shared.bin").stat().st_mode & 0o777 == 0o640  # 0o666 & ~0o027, not 0o600


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, as a user's console does."""

    def isatty(self) -> bool:
        return True


def test_encoding_a_split_of_several_chunks_shows_its_progress_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokenizer = Tokenizer.from_proto(
        train_sentencepiece(["the dog sees a cat", "a cat sees the dog"] * 50, 40, "unigram", 1.0)
    )
    texts = [f"the dog sees {i} cats" for i in range(25)]
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    chunked = encode_split(tokenizer, texts, chunk_size=10, what="train src")
    assert "encoding train src: 100%" in terminal.getvalue() and "25/25" in terminal.getvalue()
    whole = encode_split(tokenizer, texts, chunk_size=100, what="train src")  # one chunk: no bar
    assert terminal.getvalue().count("encoding train src: 100%") == 1
    assert np.array_equal(chunked.ids, whole.ids) and np.array_equal(chunked.offsets, whole.offsets)
