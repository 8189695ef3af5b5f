"""Corpora read from files: Multi30k, two aligned text files per split, TSV, Hugging Face.

Every reader streams lines and turns bad input into a :class:`CorpusError` that names the file,
the 1-based line number or the counts involved. Line semantics are the same everywhere: a file is
read as bytes and split at ``\\n`` (a final line without one counts; ``\\r\\n`` endings and a UTF-8
byte-order mark are accepted); ``.gz`` files are decompressed on the fly; each text is decoded as
UTF-8 and stripped of surrounding whitespace. With ``on_decode_error="replace"`` undecodable bytes
become U+FFFD and the affected lines are counted in the log instead of stopping the run.

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
import urllib.error
import urllib.request
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from seq2attn.data.cache import atomic_write_bytes
from seq2attn.data.corpus import SPLITS, CorpusError, ParallelCorpus

log = logging.getLogger(__name__)

DecodeErrors = Literal["strict", "replace"]
READER_VERSION = 1  # bump when the line semantics above change: cached corpora are rebuilt
HASH_CHUNK = 1 << 20


# --- lines ------------------------------------------------------------------------------------


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


class _SplitCorpus(ABC):
    """A corpus that streams each split; ``splits`` reads them all into memory."""

    @abstractmethod
    def pairs(self, split: str) -> Iterator[tuple[str, str]]: ...

    def splits(self) -> dict[str, ParallelCorpus]:
        return {name: ParallelCorpus.from_pairs(self.pairs(name)) for name in SPLITS}


class _FileCorpus(_SplitCorpus):
    """A corpus whose splits are files; the fingerprint hashes their contents."""

    on_decode_error: DecodeErrors

    @abstractmethod
    def _files(self, split: str) -> list[Path]: ...

    def fingerprint(self, split: str) -> str:
        return hash_files(self._files(split), type(self).__name__, self.on_decode_error)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise KeyError(f"unknown split {split!r}, expected one of {SPLITS}")


# --- text pairs and TSV ------------------------------------------------------------------------


class TextPairsCorpus(_FileCorpus):
    """Two line-aligned plain-text files (optionally ``.gz``) per split."""

    def __init__(
        self,
        train_src: str,
        train_tgt: str,
        val_src: str,
        val_tgt: str,
        test_src: str,
        test_tgt: str,
        on_decode_error: DecodeErrors = "strict",
    ) -> None:
        self.paths = {
            "train": (train_src, train_tgt),
            "val": (val_src, val_tgt),
            "test": (test_src, test_tgt),
        }
        self.on_decode_error = on_decode_error

    def _files(self, split: str) -> list[Path]:
        _check_split(split)
        src, tgt = self.paths[split]
        return [resolve(src, f"{split}_src"), resolve(tgt, f"{split}_tgt")]

    def pairs(self, split: str) -> Iterator[tuple[str, str]]:
        src, tgt = self._files(split)
        return read_aligned(src, tgt, self.on_decode_error)

    def describe(self, split: str) -> str:
        return f"the {split} split ({' + '.join(str(p) for p in self._files(split))})"


class TsvCorpus(_FileCorpus):
    """One ``source<TAB>target`` file (optionally ``.gz``) per split."""

    def __init__(
        self, train_file: str, val_file: str, test_file: str, on_decode_error: DecodeErrors
    ) -> None:
        self.paths = {"train": train_file, "val": val_file, "test": test_file}
        self.on_decode_error = on_decode_error

    def _files(self, split: str) -> list[Path]:
        _check_split(split)
        return [resolve(self.paths[split], f"{split}_file")]

    def pairs(self, split: str) -> Iterator[tuple[str, str]]:
        return read_tsv(self._files(split)[0], self.on_decode_error)

    def describe(self, split: str) -> str:
        return f"the {split} split ({self._files(split)[0]})"


# --- Multi30k ----------------------------------------------------------------------------------

MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{name}"
MULTI30K_LANGUAGES = ("cs", "de", "en", "fr")
MULTI30K_TEST_SPLITS = (
    "test_2016_flickr",
    "test_2017_flickr",
    "test_2017_mscoco",
    "test_2018_flickr",
)
# sha256 of the official files, computed from the copies in ../shared/data/multi30k. The other
# test sets (test_2017_*, test_2018_flickr) were not available to hash, so no checksum is pinned
# for them: a download is only checked to be a non-empty, complete gzip stream.
MULTI30K_SHA256 = {
    "train.cs.gz": "a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "val.cs.gz": "b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
    "test_2016_flickr.cs.gz": "200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
}
DOWNLOAD_TIMEOUT = 30.0  # seconds per request


def fetch(url: str, path: Path, sha256: str | None, timeout: float = DOWNLOAD_TIMEOUT) -> None:
    """Download ``url`` to ``path`` (atomically), after checking its sha256 or gzip integrity.

    Raises:
        OSError: the request failed (``urllib.error.URLError`` is an OSError).
        CorpusError: the download does not match ``sha256`` or is not a complete gzip stream.
    """
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data = response.read()
    if sha256 is not None:
        found = hashlib.sha256(data).hexdigest()
        if found != sha256:
            raise CorpusError(
                f"{url}: checksum mismatch (sha256 {found}, expected {sha256}); "
                "the download was discarded"
            )
    else:
        try:
            if not gzip.decompress(data):
                raise CorpusError(f"{url}: the download is empty; it was discarded")
        except (gzip.BadGzipFile, EOFError, zlib.error) as error:
            raise CorpusError(
                f"{url}: the download is not a complete gzip file ({error}); it was discarded"
            ) from None
    atomic_write_bytes(path, data)


class Multi30kCorpus(_FileCorpus):
    """Multi30k task 1 (Elliott et al., 2016): ``{split}.{lang}[.gz]`` files under ``root``.

    The data module's ``test`` split is ``test_split``. Missing files are downloaded from the
    official repository into ``root`` (checksums in MULTI30K_SHA256) unless ``download`` is off;
    the first access to any split checks all splits, so a run without the files stops before any
    work, naming the URLs and the folder.
    """

    def __init__(
        self,
        root: str,
        src_lang: str,
        tgt_lang: str,
        test_split: str,
        on_decode_error: DecodeErrors,
        download: bool,
    ) -> None:
        for key, lang in (("src_lang", src_lang), ("tgt_lang", tgt_lang)):
            if lang not in MULTI30K_LANGUAGES:
                raise CorpusError(
                    f"data.{key}={lang}: not a Multi30k language; allowed: "
                    + ", ".join(MULTI30K_LANGUAGES)
                )
        if src_lang == tgt_lang:
            raise CorpusError(f"data.src_lang and data.tgt_lang are both {src_lang}: pick two")
        if test_split not in MULTI30K_TEST_SPLITS:
            raise CorpusError(
                f"data.test_split={test_split}: not a Multi30k test set; allowed: "
                + ", ".join(MULTI30K_TEST_SPLITS)
            )
        self.root, self.src_lang, self.tgt_lang = Path(root).expanduser(), src_lang, tgt_lang
        self.test_split, self.on_decode_error, self.download = test_split, on_decode_error, download

    def _name(self, split: str) -> str:
        _check_split(split)
        return self.test_split if split == "test" else split

    def _local(self, split: str) -> list[tuple[Path, ...]]:
        """Per language: the candidate paths of one split file, gzipped first."""
        name = self._name(split)
        stems = [self.root / f"{name}.{lang}" for lang in (self.src_lang, self.tgt_lang)]
        return [(stem.with_name(stem.name + ".gz"), stem) for stem in stems]

    def _files(self, split: str) -> list[Path]:
        missing = [
            candidates[0]
            for name in SPLITS
            for candidates in self._local(name)
            if not any(c.is_file() for c in candidates)
        ]
        if missing:
            self._download(missing)
        return [next(c for c in candidates if c.is_file()) for candidates in self._local(split)]

    def _download(self, missing: list[Path]) -> None:
        urls = [MULTI30K_URL.format(name=path.name) for path in missing]
        reason = "data.download=false"
        if self.download:
            try:
                for url, path in zip(urls, missing, strict=True):
                    log.info("downloading %s -> %s", url, path)
                    fetch(url, path, MULTI30K_SHA256.get(path.name))
                return
            except OSError as error:  # offline, HTTP errors, unwritable folder
                reason = f"download failed: {error}"
        searched = ", ".join(f"{p}[.gz]" for p in (path.with_suffix("") for path in missing))
        folder = self.root.absolute()
        raise CorpusError(
            f"Multi30k files are missing in {folder} ({reason}).\nSearched: {searched}.\n"
            f"Download these files into {folder} (or point data.root or SEQ2ATTN_DATA at the "
            "folder that holds them):\n  " + "\n  ".join(urls)
        )

    def pairs(self, split: str) -> Iterator[tuple[str, str]]:
        src, tgt = self._files(split)
        return read_aligned(src, tgt, self.on_decode_error)

    def describe(self, split: str) -> str:
        return f"the Multi30k {self._name(split)} split {self.src_lang}-{self.tgt_lang}"


# --- Hugging Face datasets ---------------------------------------------------------------------


class HFCorpus(_SplitCorpus):
    """A translation dataset of the Hugging Face hub, read with the optional ``datasets`` package.

    Rows must have a ``translation`` column of ``{language: text}`` dicts, as the hub's
    translation datasets do (``wmt14``, ``iwslt2017``, ``opus_books``, ...). ``val_split`` and
    ``test_split`` name the dataset's own splits. The fingerprint is the dataset's own
    (``Dataset._fingerprint``, a hash of its files and processing) plus these settings.
    """

    def __init__(
        self,
        dataset: str,
        dataset_config: str | None,
        revision: str | None,
        src_lang: str,
        tgt_lang: str,
        val_split: str,
        test_split: str,
    ) -> None:
        self.dataset, self.dataset_config, self.revision = dataset, dataset_config, revision
        self.src_lang, self.tgt_lang = src_lang, tgt_lang
        self.names = {"train": "train", "val": val_split, "test": test_split}

    def _load(self, split: str) -> Any:
        _check_split(split)
        try:
            import datasets
        except ImportError:
            raise CorpusError(
                "data=hf needs the optional `datasets` package: pip install -e '.[hf]'"
            ) from None
        rows = datasets.load_dataset(
            self.dataset, self.dataset_config, split=self.names[split], revision=self.revision
        )
        if "translation" not in rows.column_names:
            raise CorpusError(
                f"{self.describe(split)} has no `translation` column (columns: "
                f"{', '.join(rows.column_names)})"
            )
        return rows

    def fingerprint(self, split: str) -> str:
        content = self._load(split)._fingerprint
        settings = [type(self).__name__, self.dataset, self.dataset_config, self.revision]
        settings += [self.names[split], self.src_lang, self.tgt_lang, content]
        return hashlib.sha256(json.dumps(settings).encode()).hexdigest()

    def pairs(self, split: str) -> Iterator[tuple[str, str]]:
        for number, row in enumerate(self._load(split), start=1):
            translation = row["translation"]
            if self.src_lang not in translation or self.tgt_lang not in translation:
                raise CorpusError(
                    f"{self.describe(split)}, row {number}: no {self.src_lang}/{self.tgt_lang} "
                    f"text (languages: {', '.join(translation)}); set data.src_lang/tgt_lang"
                )
            yield str(translation[self.src_lang]).strip(), str(translation[self.tgt_lang]).strip()

    def describe(self, split: str) -> str:
        config = f" ({self.dataset_config})" if self.dataset_config else ""
        return f"the {self.names[split]} split of {self.dataset}{config}"
