"""Cache entries built once across processes, and rebuilt when damaged.

DDP ranks (which build their data before a process group exists) and multirun jobs may ask for the
same entry at once. An entry is loaded without a lock when it is complete; otherwise the caller
takes ``<entry>.lock`` (a ``filelock.FileLock`` beside it), loads again, and builds only if the
entry is still missing or damaged, so one process builds and the others wait and then load it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from filelock import FileLock, Timeout

from seq2attn.data.cache import (
    DamagedEntry,
    EncodedSplit,
    load_split,
    load_tokenizer,
    save_split,
    save_tokenizer,
)
from seq2attn.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

T = TypeVar("T")
LOCK_TIMEOUT = 3600.0  # seconds: training a tokenizer or encoding a large corpus takes minutes


@contextmanager
def _locked(entry: Path) -> Iterator[None]:
    lock = FileLock(entry.with_name(entry.name + ".lock"))  # umask permissions, like the entries
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for %s: another process is building this cache entry", lock.lock_file)
        try:
            lock.acquire(timeout=LOCK_TIMEOUT)
        except Timeout:
            raise TimeoutError(
                f"{lock.lock_file}: still locked after {LOCK_TIMEOUT:.0f} s; if no process is "
                "building this entry, delete it (left by a crash where the file system has no "
                "flock; see docs/data.md)"
            ) from None
    try:
        yield
    finally:
        lock.release()


def load_or_build(
    entry: Path, what: str, load: Callable[[], T | None], build: Callable[[], T]
) -> T:
    """``load()`` the cache entry ``entry``, or ``build()`` it once when missing or damaged.

    ``load`` returns None when nothing is cached and raises :class:`DamagedEntry` for a damaged
    entry; ``build`` writes the entry and returns its value. ``what`` names the entry in logs.
    """
    try:
        found = load()
    except DamagedEntry:
        found = None  # maybe being built right now: checked again under the lock
    if found is None:
        with _locked(entry):
            try:
                found = load()
            except DamagedEntry as damage:
                log.warning("rebuilding the damaged cache entry %s: %s", entry, damage)
            if found is None:
                return build()
    log.info("reusing cached %s %s", what, entry)
    return found


def cached_tokenizer(stem: Path, train: Callable[[], bytes]) -> Tokenizer:
    """The tokenizer cached as ``<stem>.model``; ``train`` returns a serialised model to cache."""

    def build() -> Tokenizer:
        proto = train()
        save_tokenizer(stem, proto)
        return Tokenizer.from_proto(proto)

    return load_or_build(stem, "tokenizer", lambda: load_tokenizer(stem), build)


def cached_split(stem: Path, what: str, encode: Callable[[], EncodedSplit]) -> EncodedSplit:
    """The split cached under ``stem`` (memory-mapped), or what ``encode`` returns, cached."""

    def build() -> EncodedSplit:
        split = encode()
        save_split(stem, split)
        return split

    return load_or_build(stem, what, lambda: load_split(stem), build)
