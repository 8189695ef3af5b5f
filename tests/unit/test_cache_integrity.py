"""Damaged cache entries are rebuilt, ids are keyed by the tokenizer's bytes, builds are locked."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

from seq2attn.data import datamodule
from seq2attn.data.cache import (
    DamagedEntry,
    EncodedSplit,
    load_split,
    load_tokenizer,
    model_key,
    save_split,
    save_tokenizer,
)
from seq2attn.data.cache_entries import cached_split
from seq2attn.data.datamodule import TranslationDataModule
from seq2attn.data.tokenizer import Tokenizer, train_sentencepiece
from tests.unit.test_datamodule import make

ROOT = Path(__file__).resolve().parents[2]


def data_digest(dm: TranslationDataModule) -> str:
    """sha256 over both tokenizers and every batch of every split."""
    digest = hashlib.sha256(dm.src_tokenizer.proto + dm.tgt_tokenizer.proto)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for batch in loader:
            for tensor in (batch.src, batch.tgt_out, batch.indices):
                digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def pieces(dm: TranslationDataModule) -> list[str]:
    return dm.src_tokenizer.pieces(list(range(dm.src_tokenizer.vocab_size)))


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


@pytest.fixture(scope="module")
def cold(tmp_path_factory) -> tuple[Path, str, list[str]]:
    """A cache built from nothing, with its data digest and tokenizer pieces."""
    folder = tmp_path_factory.mktemp("cold")
    dm = make(folder)
    return folder, data_digest(dm), pieces(dm)


def rebuild(cold, tmp_path, caplog, damage) -> list[str]:
    """Copy the cold cache, ``damage`` it, set up again; -> the seq2attn warnings."""
    folder, digest, cold_pieces = cold
    cache = tmp_path / "cache"
    shutil.copytree(folder, cache)
    damage(cache)
    with caplog.at_level(logging.WARNING, logger="seq2attn"):
        dm = make(cache)
    assert data_digest(dm) == digest and pieces(dm) == cold_pieces
    assert file_bytes(cache) == file_bytes(folder)
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.WARNING and record.name.startswith("seq2attn")
    ]


def truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def flip(data: bytes) -> bytes:
    """The same size, one byte in the middle changed."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


@pytest.mark.parametrize(
    ("damage", "reason"),
    [(truncate, "bytes, the manifest records"), (flip, "differs from its sha256")],
)
@pytest.mark.parametrize(
    "pattern", ["train-src-*.ids.npy", "val-tgt-*.offsets.npy", "spm-joint-*.model"]
)
def test_a_damaged_file_is_rebuilt_with_one_warning(
    cold, tmp_path, caplog, pattern, damage, reason
):
    names = []

    def damage_one(cache: Path) -> None:
        (path,) = cache.glob(pattern)
        path.write_bytes(damage(path.read_bytes()))
        names.append(path.name)

    (warning,) = rebuild(cold, tmp_path, caplog, damage_one)
    assert "rebuilding the damaged cache entry" in warning
    assert f"{names[0]}: " in warning and reason in warning


@pytest.mark.parametrize("pattern", ["train-tgt-*.manifest.json", "spm-joint-*.manifest.json"])
def test_a_missing_manifest_is_rebuilt_with_one_warning(cold, tmp_path, caplog, pattern):
    def delete(cache: Path) -> None:
        (path,) = cache.glob(pattern)
        path.unlink()

    (warning,) = rebuild(cold, tmp_path, caplog, delete)
    assert "manifest.json is missing beside" in warning


# --- what the manifest cannot catch: files numpy or SentencePiece cannot use -----------------


@pytest.mark.parametrize(
    ("ids", "offsets", "message"),
    [
        (np.array([{}], dtype=object), np.array([0, 1]), "ids.npy: numpy cannot read it"),
        (np.arange(3.0), np.array([0, 3]), "ids.npy: a float64 array of shape (3,), not 1-D int32"),
        (np.arange(3, dtype=np.int32), np.array([0, 5]), "offsets rising from 0 to the 3 ids"),
        (np.arange(3, dtype=np.int32), np.array([0, 2, 1, 3]), "offsets rising from 0 to the 3"),
    ],
)
def test_a_consistent_but_unusable_split_is_damaged(tmp_path, ids, offsets, message):
    save_split(tmp_path / "bad", EncodedSplit(ids, offsets.astype(np.int64)))
    with pytest.raises(DamagedEntry, match=re.escape(message)):
        load_split(tmp_path / "bad")


def test_a_consistent_but_unusable_model_is_damaged(tmp_path):
    save_tokenizer(tmp_path / "spm", b"not a model")
    with pytest.raises(DamagedEntry, match=r"spm.model: SentencePiece cannot read it"):
        load_tokenizer(tmp_path / "spm")
    assert load_tokenizer(tmp_path / "nothing") is None


# --- keys ----------------------------------------------------------------------------------------


def test_the_ids_key_changes_with_the_tokenizer_model_bytes():
    texts = ["the dog sees the cat", "a cat sleeps"] * 20
    one = Tokenizer.from_proto(train_sentencepiece(texts, 30, "unigram", 1.0))
    other = Tokenizer.from_proto(train_sentencepiece(texts, 30, "bpe", 1.0))
    assert model_key("k", one) == model_key("k", Tokenizer.from_proto(one.proto))
    assert model_key("k", one) != model_key("k", other)
    assert model_key("k", one) != model_key("j", one)


def test_ids_are_never_paired_with_another_tokenizer(cold, tmp_path, caplog):
    """A valid but different model in the tokenizer's entry (e.g. another run's) gets new ids."""
    folder, _, _ = cold
    cache = tmp_path / "cache"
    shutil.copytree(folder, cache)
    (model,) = cache.glob("spm-joint-*.model")
    other_model = make(tmp_path / "other", vocab_size=120).src_tokenizer.proto
    save_tokenizer(model.with_suffix(""), other_model)
    with caplog.at_level(logging.INFO, logger=datamodule.__name__):
        dm = make(cache)
    assert dm.src_tokenizer.proto == other_model
    assert caplog.text.count("encoding ") == 6  # 3 splits x 2 sides, none reused
    references = dm.references("val")
    for batch in dm.val_dataloader():
        for row, index in zip(batch.tgt_out.tolist(), batch.indices.tolist(), strict=True):
            assert dm.tgt_tokenizer.decode([row]) == [references[index]]


# --- processes building one entry ---------------------------------------------------------------


def test_a_waiting_process_loads_what_the_lock_holder_built(tmp_path, caplog):
    stem, sequences = tmp_path / "train-src-key", [[5, 6], [7]]
    holder = FileLock(tmp_path / "train-src-key.lock")  # another process, as far as flock knows
    holder.acquire()
    built, loaded = [], []

    def encode() -> EncodedSplit:
        built.append(stem)
        return EncodedSplit.from_sequences([[9]])

    waiter = threading.Thread(target=lambda: loaded.append(cached_split(stem, "ids", encode)))
    with caplog.at_level(logging.INFO, logger="seq2attn"):
        waiter.start()
        deadline = time.monotonic() + 60
        while "another process is building" not in caplog.text and waiter.is_alive():
            assert time.monotonic() < deadline, "the waiter never logged that it waits"
            time.sleep(0.01)
        save_split(stem, EncodedSplit.from_sequences(sequences))
        holder.release()
        waiter.join(timeout=60)
    assert not waiter.is_alive() and not built
    assert f"waiting for {stem}.lock: another process is building" in caplog.text
    assert [loaded[0][i].tolist() for i in range(len(loaded[0]))] == sequences


def child() -> None:
    """The concurrency test's child process: wait for the other, build, print counts + digest."""
    cache, barrier, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    builds = {"trained": 0, "encoded": 0}
    train, encode = datamodule.train_sentencepiece, datamodule.encode_split

    def slow_train(*args):
        builds["trained"] += 1
        time.sleep(1.0)  # the other process finds the tokenizer missing meanwhile
        return train(*args)

    def counted_encode(*args, **kwargs):
        builds["encoded"] += 1
        return encode(*args, **kwargs)

    datamodule.train_sentencepiece, datamodule.encode_split = slow_train, counted_encode
    (barrier / name).touch()
    deadline = time.monotonic() + 120
    while len(os.listdir(barrier)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    digest = data_digest(make(cache))
    print(json.dumps(builds | {"digest": digest}))


@pytest.mark.slow  # two processes each import lightning: about 35 s on 2 cores
def test_concurrent_builds_of_a_cold_cache_build_each_entry_once(cold, tmp_path):
    cache, barrier = tmp_path / "cache", tmp_path / "barrier"
    barrier.mkdir()
    code = "from tests.unit.test_cache_integrity import child; child()"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(cache), str(barrier), name],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    outputs = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=300)
            assert process.returncode == 0, err
            outputs.append((json.loads(out.strip().splitlines()[-1]), err))
    finally:
        for process in processes:
            process.kill()
            process.wait(timeout=30)
    reports = [report for report, _ in outputs]
    assert sum(r["trained"] for r in reports) == 1
    assert sum(r["encoded"] for r in reports) == 6  # 3 splits x 2 sides
    assert reports[0]["digest"] == reports[1]["digest"] == cold[1]
    assert "another process is building this cache entry" in "".join(err for _, err in outputs)
