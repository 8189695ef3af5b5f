"""What eval and translate read, under training's line policy; translations out, one per line.

Translate reads lines of a file or stdin as the corpus readers do (:mod:`seq2attn.data.lines`):
a line ends at ``\\n`` only (a ``\\r\\n`` loses its ``\\r``, a lone ``\\r`` stays inside its line,
a UTF-8 byte-order mark opening the input is dropped); bytes that are not UTF-8 stop the run with
the file (or ``stdin``) and line named (``on_decode_error=strict``) or become U+FFFD
(``replace``). As in training (:mod:`seq2attn.data.preprocess`), a stripped line longer than
``max_chars`` characters is cut to them before the tokenizer sees it. Replaced and cut lines are
counted and logged once, after the last line. Eval reads its split through the corpus, with the
data config's ``on_decode_error`` and ``max_chars``, exactly as training reads its test split.

An output file is written under a temporary name and renamed when the last line is in, so an
interrupted run, or a strict decoding error, leaves the previous file (or none); it may not be
the input file, another output or a folder, and its folder must be writable (missing folders are
made). On stdout, the translations of the chunks before the one holding the bad line are
out already: a chunk is decoded whole before any of it is translated.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, cast

from seq2attn.alignment import Alignment
from seq2attn.config.run import TranslateSchema, validate_eval_data
from seq2attn.data.cache import atomic_temporary
from seq2attn.data.corpus import CorpusError, ParallelCorpus
from seq2attn.data.preprocess import NormalizationForm, TextFilter
from seq2attn.data.readers import OnDecodeError
from seq2attn.inference.loading import build_corpus
from seq2attn.schema import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinePolicy:
    """How an input line becomes a source sentence (see the module docstring)."""

    on_decode_error: OnDecodeError
    max_chars: int
    normalization: NormalizationForm = "none"

    @classmethod
    def for_translate(cls, settings: TranslateSchema, stored: dict[str, Any]) -> LinePolicy:
        """The policy of translate's ``settings``; ``max_chars=null`` takes the training run's
        ``data.max_chars`` from the checkpoint's stored config ``stored``.

        Raises:
            ConfigError: ``max_chars`` is null and the checkpoint has no positive one.
        """
        data = stored.get("data", {})
        max_chars = settings.max_chars or data.get("max_chars")
        if not isinstance(max_chars, int) or max_chars < 1:
            raise ConfigError(
                f"max_chars=null takes the checkpoint's data.max_chars, but it is {max_chars!r}: "
                "give max_chars=<characters>"
            )
        return cls(settings.on_decode_error, max_chars, data.get("normalization", "none"))

    def prepare(self, raw_lines: Iterable[bytes], name: str) -> Iterator[str]:
        """The decoded, stripped, normalised (as training's sources) and cut lines of
        ``raw_lines`` (read from ``name``).

        Raises:
            CorpusError: bytes that are not UTF-8 under ``strict``, naming ``name`` and the line.
        """
        replaced = cut = 0
        normalize = TextFilter(self.normalization, False, self.max_chars).normalize
        for number, raw in enumerate(raw_lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                if self.on_decode_error is OnDecodeError.strict:
                    bad = raw.rstrip(b"\r\n")[error.start : error.start + 4]
                    raise CorpusError(
                        f"{name}, line {number}: bytes that are not UTF-8 ({bad!r} at byte "
                        f"{error.start} of the line); fix the input or set on_decode_error=replace"
                    ) from None
                line = raw.decode("utf-8", errors="replace")
                replaced += 1
            if number == 1:
                line = line.removeprefix("\ufeff")
            line = line.removesuffix("\n").removesuffix("\r").strip()
            line = normalize(line)
            if len(line) > self.max_chars:
                line = line[: self.max_chars]
                cut += 1
            yield line
        if replaced:
            log.warning("%s: replaced bytes that are not UTF-8 in %d lines", name, replaced)
        if cut:
            log.warning(
                "%s: %d lines are longer than max_chars=%d; the model sees their first "
                "max_chars characters",
                name,
                cut,
                self.max_chars,
            )


@dataclass(frozen=True)
class EvaluationSplit:
    """A split to evaluate on: the model's inputs (both sides normalised and cut to
    ``data.max_chars``), the texts to score (normalised sources, verbatim references) and the
    corpus's gold word alignments of its pairs, or None where it has none."""

    inputs: ParallelCorpus
    texts: ParallelCorpus
    gold: list[Alignment] | None


def read_split(data: dict[str, Any], source: str, split: str) -> EvaluationSplit:
    """An evaluation split, preprocessed as training's test split (see
    :meth:`TextFilter.evaluation_pairs`).

    ``data`` is a data config that comes (in part) from the checkpoint file ``source``.

    Raises:
        ConfigError: a data key the schemas reject.
        CorpusError: the split or its alignment file cannot be read (file and line named).
    """
    keys = validate_eval_data(data)
    normalization = cast(NormalizationForm, keys.normalization.value)
    text_filter = TextFilter(normalization, keys.drop_empty, keys.max_chars)
    corpus = build_corpus(data, source)
    where = corpus.describe(split)
    log.info("reading %s", where)
    inputs, texts = text_filter.evaluation_pairs(corpus.pairs(split), where)
    return EvaluationSplit(inputs, texts, corpus.alignments(split))


def read_chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """``lines``, ``size`` at a time."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@contextlib.contextmanager
def open_input(path: str | None, policy: LinePolicy) -> Iterator[Iterator[str]]:
    """The lines of a file, or of stdin when ``path`` is null, prepared by ``policy``.

    Raises:
        ConfigError: the file cannot be opened (the reason named).
    """
    if path is None:
        yield policy.prepare(sys.stdin.buffer, "stdin")
        return
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed by the with below)
    except OSError as error:
        raise ConfigError(f"input={path}: cannot read it ({error.strerror})") from None
    with handle:
        yield policy.prepare(handle, path)


def check_input(path: str | None) -> None:
    """Refuse, before any work, an input file that :func:`open_input` could not open (null:
    stdin). Checked without opening it, so that a named pipe is left to its reader.

    Raises:
        ConfigError: the file does not exist, is a folder or cannot be read.
    """
    if path is None:
        return
    if not os.path.exists(path):
        raise ConfigError(f"input={path}: cannot read it (No such file or directory)")
    if os.path.isdir(path):
        raise ConfigError(f"input={path} is a folder: give a file of sentences, one per line")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"input={path}: cannot read it (Permission denied)")


def check_outputs(input_path: str | None, outputs: dict[str, str | None]) -> None:
    """Refuse, before any work, output paths (option: path, null for stdout or none) that
    could not be written or would destroy what another names.

    Raises:
        ConfigError: a path is empty, a folder, the input file (which would be emptied before
            it is read), the path of another output, or in a folder that cannot be made or
            written.
    """
    given = {key: path for key, path in outputs.items() if path is not None}
    for key, path in given.items():
        if not str(path).strip():
            raise ConfigError(f"{key} is empty: give a file path, or null")
        if os.path.isdir(path):
            raise ConfigError(f"{key}={path}: a folder: give a file path")
        unwritable = folder_problem(Path(path))
        if unwritable:
            raise ConfigError(f"{key}={path}: cannot write it ({unwritable})")
        if input_path is not None and same_file(path, input_path):
            raise ConfigError(
                f"{key}={path}: the same file as input={input_path}; writing it would destroy "
                f"the sentences before they are read: give another {key} path"
            )
    keys = list(given)
    for i, key in enumerate(keys):
        for other in keys[i + 1 :]:
            if same_file(given[key], given[other]):
                raise ConfigError(
                    f"{other}={given[other]}: the same file as {key}={given[key]}: give "
                    "another path"
                )


def folder_problem(path: Path) -> str | None:
    """Why ``path``'s folder (made when missing) cannot take a new file, or None."""
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"no permission to write in {folder}"
    return None


@contextlib.contextmanager
def open_output(path: str | None, key: str = "output") -> Iterator[TextIO]:
    """A file written whole or not at all (paths checked by :func:`check_outputs`), or stdout
    when ``path`` is null; ``key`` is the option that named it.

    Raises:
        ConfigError: ``path`` cannot be written (the reason named).
    """
    if path is None:
        yield sys.stdout
        return
    try:
        fd, tmp = atomic_temporary(Path(path))
    except OSError as error:
        raise ConfigError(f"{key}={path}: cannot write it ({error.strerror})") from None
    try:
        with open(fd, "w", encoding="utf-8", newline="\n") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def same_file(a: str, b: str) -> bool:
    """Whether paths ``a`` and ``b`` name one file (existing or to be made)."""
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return Path(a).resolve() == Path(b).resolve()
