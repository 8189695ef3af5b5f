"""Sentences in and translations out, one per line: files or stdin/stdout, in chunks.

Lines end at ``\\n`` only (a ``\\r\\n`` loses its ``\\r``; a lone ``\\r`` stays inside its line,
as the corpus readers treat it), and bytes that are not UTF-8 become U+FFFD, for files and stdin
alike. An output file is written under a temporary name and renamed when the last line is in,
so an interrupted run leaves the previous file (or none), and it may not be the input file.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

from seq2attn.data.cache import atomic_temporary
from seq2attn.schema import ConfigError


def read_chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """Lines without their line ends and outer spaces, ``size`` at a time."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line.removesuffix("\n").removesuffix("\r").strip())
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@contextlib.contextmanager
def open_input(path: str | None) -> Iterator[TextIO]:
    """The lines of a file, or of stdin when ``path`` is null."""
    if path is None:
        stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace", newline="\n")
        try:
            yield stdin
        finally:
            stdin.detach()  # leave sys.stdin open
        return
    with open(path, encoding="utf-8", errors="replace", newline="\n") as handle:
        yield handle


@contextlib.contextmanager
def open_output(path: str | None, input_path: str | None = None) -> Iterator[TextIO]:
    """A file written whole or not at all, or stdout when ``path`` is null.

    Raises:
        ConfigError: ``path`` is the input file, which would be emptied before it is read.
    """
    if path is None:
        yield sys.stdout
        return
    if input_path is not None and _same_file(path, input_path):
        raise ConfigError(
            f"output={path}: the same file as input={input_path}; writing it would destroy the "
            "sentences before they are read: give another output path"
        )
    fd, tmp = atomic_temporary(Path(path))
    try:
        with open(fd, "w", encoding="utf-8", newline="\n") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _same_file(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return Path(a).resolve() == Path(b).resolve()
