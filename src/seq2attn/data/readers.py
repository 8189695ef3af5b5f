"""Corpora read from files (Multi30k, two aligned text files per split, TSV) or the Hugging Face
hub, each with the schema of the keys it adds to ``data`` (its ``data_schema``).

Every reader streams lines as :mod:`seq2attn.data.lines` defines them and turns bad input into a
:class:`CorpusError` that names the file, the 1-based line number or the counts involved.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import MISSING

from seq2attn.alignment import Alignment, AlignmentFileError, read_pharaoh
from seq2attn.data.corpus import SPLITS, CorpusError, SplitCorpus, check_split
from seq2attn.data.download import (
    MULTI30K_LANGUAGES,
    MULTI30K_SHA256,
    MULTI30K_TEST_SPLITS,
    MULTI30K_URL,
    fetch,
)
from seq2attn.data.lines import DecodeErrors, FileCorpus, read_aligned, read_tsv, resolve
from seq2attn.data.pipeline import DataPipeline

log = logging.getLogger(__name__)


class OnDecodeError(Enum):  # not a str Enum: its member `replace` would shadow str.replace
    strict = "strict"
    replace = "replace"


@dataclass
class FileData(DataPipeline):
    """The key every file corpus adds: what undecodable bytes do."""

    on_decode_error: OnDecodeError = MISSING


@dataclass
class TextPairsData(FileData):
    """``data=text_pairs``: a source and a target file per split."""

    train_src: str = MISSING
    train_tgt: str = MISSING
    val_src: str = MISSING
    val_tgt: str = MISSING
    test_src: str = MISSING
    test_tgt: str = MISSING
    # gold word alignments (Pharaoh ``i-j`` / ``i?j`` over whitespace words), for val/aer
    val_align: str | None = None
    test_align: str | None = None


class TextPairsCorpus(FileCorpus):
    """Two line-aligned plain-text files (optionally ``.gz``) per split, and optionally a gold
    word alignment file (Pharaoh format, as fast_align writes) for val and test."""

    data_schema: ClassVar[type[DataPipeline]] = TextPairsData

    def __init__(
        self,
        train_src: str,
        train_tgt: str,
        val_src: str,
        val_tgt: str,
        test_src: str,
        test_tgt: str,
        on_decode_error: DecodeErrors = "strict",
        val_align: str | None = None,
        test_align: str | None = None,
    ) -> None:
        self.paths = {
            "train": (train_src, train_tgt),
            "val": (val_src, val_tgt),
            "test": (test_src, test_tgt),
        }
        self.alignment_paths = {"val": val_align, "test": test_align}
        self.on_decode_error = on_decode_error

    def _files(self, split: str) -> list[Path]:
        check_split(split)
        src, tgt = self.paths[split]
        return [resolve(src, f"{split}_src"), resolve(tgt, f"{split}_tgt")]

    def pairs(self, split: str) -> Iterator[tuple[str, str]]:
        src, tgt = self._files(split)
        return read_aligned(src, tgt, self.on_decode_error)

    def alignments(self, split: str) -> list[Alignment] | None:
        """The gold word alignments of val or test from ``data.<split>_align``, None without.

        Raises:
            CorpusError: the file is missing, has another number of lines than the split has
                pairs, or a line that is malformed or links a word the pair does not have.
        """
        check_split(split)
        given = self.alignment_paths.get(split)
        if given is None:
            return None
        path = resolve(given, f"{split}_align")
        pairs = list(self.pairs(split))
        try:
            return read_pharaoh(
                path,
                [len(source.split()) for source, _ in pairs],
                [len(target.split()) for _, target in pairs],
            )
        except AlignmentFileError as error:
            raise CorpusError(f"data.{split}_align: {error}") from error

    def describe(self, split: str) -> str:
        return f"the {split} split ({' + '.join(str(p) for p in self._files(split))})"


@dataclass
class TsvData(FileData):
    """``data=tsv``: one file per split."""

    train_file: str = MISSING
    val_file: str = MISSING
    test_file: str = MISSING


class TsvCorpus(FileCorpus):
    """One ``source<TAB>target`` file (optionally ``.gz``) per split."""

    data_schema: ClassVar[type[DataPipeline]] = TsvData

    def __init__(
        self, train_file: str, val_file: str, test_file: str, on_decode_error: DecodeErrors
    ) -> None:
        self.paths = {"train": train_file, "val": val_file, "test": test_file}
        self.on_decode_error = on_decode_error

    def _files(self, split: str) -> list[Path]:
        check_split(split)
        return [resolve(self.paths[split], f"{split}_file")]

    def pairs(self, split: str) -> Iterator[tuple[str, str]]:
        return read_tsv(self._files(split)[0], self.on_decode_error)

    def describe(self, split: str) -> str:
        return f"the {split} split ({self._files(split)[0]})"


@dataclass
class Multi30kData(FileData):
    """``data=multi30k``: the folder, the language pair and the test set (checked by the corpus)."""

    root: str = MISSING
    src_lang: str = MISSING
    tgt_lang: str = MISSING
    test_split: str = MISSING
    download: bool = MISSING


class Multi30kCorpus(FileCorpus):
    """Multi30k task 1 (Elliott et al., 2016): ``{split}.{lang}[.gz]`` files under ``root``.

    The data module's ``test`` split is ``test_split``. Missing files are downloaded from the
    official repository into ``root`` (checksums in MULTI30K_SHA256) unless ``download`` is off;
    the first access to any split checks all splits, so a run without the files stops before any
    work, naming the URLs and the folder.
    """

    data_schema: ClassVar[type[DataPipeline]] = Multi30kData

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
        if Path(root).expanduser().is_file():
            raise CorpusError(
                f"data.root={root}: a file, not a folder; point data.root (or SEQ2ATTN_DATA) at "
                "the folder that holds the Multi30k files"
            )
        self.root, self.src_lang, self.tgt_lang = Path(root).expanduser(), src_lang, tgt_lang
        self.test_split, self.on_decode_error, self.download = test_split, on_decode_error, download

    def _name(self, split: str) -> str:
        check_split(split)
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
            except (OSError, http.client.HTTPException) as error:  # offline, cut off mid-way
                reason = f"download failed: {type(error).__name__}: {error}"
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


@dataclass
class HFData(DataPipeline):
    """``data=hf``: the dataset, its revision, the language pair and the split names."""

    dataset: str = MISSING
    dataset_config: str | None = MISSING
    revision: str | None = MISSING
    src_lang: str = MISSING
    tgt_lang: str = MISSING
    val_split: str = MISSING
    test_split: str = MISSING


class HFCorpus(SplitCorpus):
    """A translation dataset of the Hugging Face hub, read with the optional ``datasets`` package.

    Rows must have a ``translation`` column of ``{language: text}`` dicts, as the hub's
    translation datasets do (``wmt14``, ``iwslt2017``, ``opus_books``, ...). ``val_split`` and
    ``test_split`` name the dataset's own splits. The fingerprint is the dataset's own
    (``Dataset._fingerprint``, a hash of its files and processing) plus these settings.
    """

    data_schema: ClassVar[type[DataPipeline]] = HFData

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
        check_split(split)
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
