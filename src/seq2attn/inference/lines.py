"""Sentences in and translations out, one per line: files or stdin/stdout, in chunks."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable, Iterator
from typing import TextIO


def read_chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """Lines without their line ends and outer spaces, ``size`` at a time."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line.rstrip("\r\n").strip())
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@contextlib.contextmanager
def open_text(path: str | None, mode: str) -> Iterator[TextIO]:
    """A file (UTF-8; undecodable bytes replaced) or stdin/stdout when ``path`` is null."""
    if path is None:
        yield sys.stdin if mode == "r" else sys.stdout
        return
    with open(path, mode, encoding="utf-8", errors="replace") as handle:
        yield handle  # type: ignore[misc]
