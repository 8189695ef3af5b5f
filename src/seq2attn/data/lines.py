"""Line semantics shared by the file readers, content hashes, paths, and the file corpus base.

A file is read as bytes and split at ``\\n`` (a final line without one counts; ``\\r\\n`` endings
and a UTF-8 byte-order mark are accepted); ``.gz`` files are decompressed on the fly; each text is
decoded as UTF-8 and stripped of surrounding whitespace. With ``on_decode_error="replace"``
undecodable bytes become U+FFFD and the affected lines are counted in the log instead of stopping
the run. Bad input becomes a :class:`CorpusError` that names the file and the 1-based line.

Fingerprints hash the file *contents* (sha256, streamed) plus the reader settings and
:data:`READER_VERSION`: size and mtime would miss an edit that keeps the size within the mtime
resolution and would change on a mere copy, while hashing costs about 0.3 s per 100 MB.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import logging
import zlib
from abc import abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from seq2attn.data.corpus import CorpusError, SplitCorpus

log = logging.getLogger(__name__)

DecodeErrors = Literal["strict", "replace"]
READER_VERSION = 1  # bump when the line semantics above change: cached corpora are rebuilt
HASH_CHUNK = 1 << 20


def _open(path: Path) -> Any:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_lines(path: Path, on_decode_error: DecodeErrors) -> Iterator[str]:
    """The decoded lines of ``path`` without their line endings (see the module docstring).

    Raises:
        CorpusError: bytes that are not UTF-8 (strict), or a damaged gzip stream.
    """
    replaced = number = 0
    try:
        with _open(path) as file:
            for number, raw in enumerate(file, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    if on_decode_error == "strict":
                        bad = raw.rstrip(b"\r\n")[error.start : error.start + 4]
                        raise CorpusError(
                            f"{path}, line {number}: bytes that are not UTF-8 ({bad!r} at byte "
                            f"{error.start} of the line); fix the file or set "
                            "data.on_decode_error=replace"
                        ) from None
                    line = raw.decode("utf-8", errors="replace")
                    replaced += 1
                if number == 1:
                    line = line.removeprefix("\ufeff")
                yield line.rstrip("\r\n")
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise CorpusError(
            f"{path}: damaged gzip data after line {number} ({error}); download or compress "
            "the file again"
        ) from None
    if replaced:
        log.warning("%s: replaced bytes that are not UTF-8 in %d lines", path, replaced)


def count_lines(path: Path) -> int:
    """Lines of ``path`` as :func:`read_lines` counts them, without decoding."""
    try:
        with _open(path) as file:
            return sum(1 for _ in file)
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise CorpusError(f"{path}: damaged gzip data ({error})") from None


def read_aligned(src: Path, tgt: Path, on_decode_error: DecodeErrors) -> Iterator[tuple[str, str]]:
    """Stripped ``(source, target)`` pairs of two line-aligned files.

    Raises:
        CorpusError: the files have different line counts (both named and counted), or see
            :func:`read_lines`.
    """
    end = object()
    pairs = itertools.zip_longest(
        read_lines(src, on_decode_error), read_lines(tgt, on_decode_error), fillvalue=end
    )
    for source, target in pairs:
        if source is end or target is end:
            raise CorpusError(
                f"source and target files must have the same number of lines, but {src} has "
                f"{count_lines(src)} and {tgt} has {count_lines(tgt)}"
            )
        assert isinstance(source, str) and isinstance(target, str)
        yield source.strip(), target.strip()


def read_tsv(path: Path, on_decode_error: DecodeErrors) -> Iterator[tuple[str, str]]:
    """Stripped ``(source, target)`` pairs of ``source<TAB>target`` lines.

    Raises:
        CorpusError: a line without exactly one tab (file and line named), or see
            :func:`read_lines`.
    """
    for number, line in enumerate(read_lines(path, on_decode_error), start=1):
        fields = line.split("\t")
        if len(fields) != 2:
            raise CorpusError(
                f"{path}, line {number}: expected exactly one tab between source and target, "
                f"found {len(fields) - 1}"
            )
        yield fields[0].strip(), fields[1].strip()


def hash_files(paths: list[Path], *settings: object) -> str:
    """sha256 over the contents of ``paths``, ``settings`` and READER_VERSION."""
    digest = hashlib.sha256(json.dumps([READER_VERSION, *settings]).encode())
    for path in paths:
        digest.update(b"\0file\0")
        with open(path, "rb") as file:
            while chunk := file.read(HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def resolve(path: str, key: str) -> Path:
    """``path``, or ``path.gz`` when only that exists.

    Raises:
        CorpusError: neither exists; the message lists both paths searched.
    """
    given = Path(path).expanduser()
    candidates = [given] if given.suffix == ".gz" else [given, given.with_name(given.name + ".gz")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(c.absolute()) for c in candidates)
    raise CorpusError(f"data.{key}={path}: file not found (searched {searched})")


class FileCorpus(SplitCorpus):
    """A corpus whose splits are files; the fingerprint hashes their contents."""

    on_decode_error: DecodeErrors

    @abstractmethod
    def _files(self, split: str) -> list[Path]: ...

    def fingerprint(self, split: str) -> str:
        return hash_files(self._files(split), type(self).__name__, self.on_decode_error)
