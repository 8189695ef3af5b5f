"""Content-keyed cache: atomic writes, entries checked against a manifest, memory-mapped splits.

An encoded split of N sequences is two ``.npy`` files (nanoGPT's ``train.bin`` idea): ``ids``, all
token ids concatenated (int32), and ``offsets`` (int64, N + 1 entries), so sequence i is
``ids[offsets[i]:offsets[i + 1]]``. A tokenizer is one ``.model`` file. Each file is written to a
temporary name in the same directory, fsynced and renamed, so readers see a whole file or none.
Every entry ends with ``<stem>.manifest.json``, written last: the size and sha256 of each file.
Loading checks the files against it, so a truncated or overwritten file is a :class:`DamagedEntry`,
never wrong content or a numpy/SentencePiece traceback.
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
from tqdm import tqdm

from seq2attn.data.tokenizer import Tokenizer

KEY_LENGTH = 16
ENCODE_CHUNK = 50_000  # sentences per SentencePiece call: bounds the Python lists alive at once
HASH_BLOCK = 1 << 20


class DamagedEntry(Exception):
    """A cache entry whose files are missing, differ from its manifest, or cannot be read."""


def cache_key(*parts: object) -> str:
    """Hex sha256 prefix over JSON-encoded parts; equal exactly when the parts are equal."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True).encode())
        digest.update(b"\0")  # JSON never contains a raw NUL, so parts cannot run together
    return digest.hexdigest()[:KEY_LENGTH]


def model_key(settings_key: str, tokenizer: Tokenizer) -> str:
    """``settings_key`` extended by a hash of ``tokenizer``'s serialised model: keying ids by it
    means they are never paired with another model trained with the same settings."""
    return cache_key(settings_key, hashlib.sha256(tokenizer.proto).hexdigest())


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


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Let ``write`` fill a temporary file beside ``path``, then rename it onto ``path``: the
    file is either complete or absent, and the contents never need to sit whole in memory."""
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
    atomic_write(Path(path), lambda file: file.write(data))


# --- entries: files plus a manifest written last ---------------------------------------------


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file's contents, in hex, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _manifest_path(stem: Path) -> Path:
    return stem.with_name(stem.name + ".manifest.json")


def _write_entry(stem: Path, writes: Sequence[tuple[Path, Callable[[BinaryIO], object]]]) -> None:
    """Write each file atomically, then the manifest; an interrupted write leaves none of them."""
    _manifest_path(stem).unlink(missing_ok=True)  # a rebuild is incomplete until it ends
    try:
        for path, write in writes:
            atomic_write(path, write)
        files = {p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)} for p, _ in writes}
        atomic_write_bytes(_manifest_path(stem), json.dumps({"files": files}, indent=1).encode())
    except BaseException:
        for path, _ in writes:
            path.unlink(missing_ok=True)
        raise


def _check_entry(stem: Path, paths: Sequence[Path]) -> bool:
    """True when ``paths`` match the manifest of ``stem``, False when none of them exists.

    Raises:
        DamagedEntry: the manifest is missing or unreadable, or a file is missing or differs.
    """
    manifest = _manifest_path(stem)
    if not manifest.exists():
        present = [path.name for path in paths if path.exists()]
        if not present:
            return False
        raise DamagedEntry(
            f"{manifest.name} is missing beside {', '.join(present)} (an interrupted build, "
            "or a cache written before manifests)"
        )
    try:
        files = json.loads(manifest.read_bytes())["files"]
        expected = {name: (int(v["size"]), str(v["sha256"])) for name, v in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DamagedEntry(f"{manifest.name}: unreadable ({error!r})") from None
    if sorted(expected) != sorted(path.name for path in paths):
        raise DamagedEntry(f"{manifest.name} lists {sorted(expected)}, not this entry's files")
    for path in paths:
        size, sha256 = expected[path.name]
        if not path.exists():
            raise DamagedEntry(f"{path.name}: missing")
        if (found := path.stat().st_size) != size:
            raise DamagedEntry(f"{path.name}: {found} bytes, the manifest records {size}")
        if file_sha256(path) != sha256:
            raise DamagedEntry(f"{path.name}: content differs from its sha256 in the manifest")
    return True


def _model_path(stem: Path) -> Path:
    return stem.with_name(stem.name + ".model")


def save_tokenizer(stem: str | os.PathLike[str], proto: bytes) -> None:
    """Atomically write the SentencePiece model ``<stem>.model``, then its manifest."""
    _write_entry(Path(stem), [(_model_path(Path(stem)), lambda file: file.write(proto))])


def load_tokenizer(stem: str | os.PathLike[str]) -> Tokenizer | None:
    """The tokenizer saved under ``stem``, or None when nothing is cached there.

    Raises:
        DamagedEntry: the entry is incomplete, differs from its manifest or is not a model.
    """
    path = _model_path(Path(stem))
    if not _check_entry(Path(stem), [path]):
        return None
    try:
        return Tokenizer.from_proto(path.read_bytes())
    except (RuntimeError, ValueError) as error:
        raise DamagedEntry(f"{path.name}: SentencePiece cannot read it ({error})") from None


# --- encoded splits ----------------------------------------------------------------------------


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
    """Atomically write ``<stem>.ids.npy``, ``<stem>.offsets.npy``, then their manifest."""
    ids_path, offsets_path = _split_paths(Path(stem))
    _write_entry(
        Path(stem),
        [
            (ids_path, lambda file: np.save(file, split.ids)),
            (offsets_path, lambda file: np.save(file, split.offsets)),
        ],
    )


def _load_array(path: Path, dtype: type[np.generic]) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as error:
        raise DamagedEntry(f"{path.name}: numpy cannot read it ({error})") from None
    if array.dtype != dtype or array.ndim != 1:
        raise DamagedEntry(
            f"{path.name}: a {array.dtype} array of shape {array.shape}, not 1-D {dtype.__name__}"
        )
    return array


def load_split(stem: str | os.PathLike[str]) -> EncodedSplit | None:
    """The memory-mapped split saved under ``stem``, or None when nothing is cached there.

    Raises:
        DamagedEntry: the entry is incomplete, differs from its manifest or is inconsistent.
    """
    ids_path, offsets_path = _split_paths(Path(stem))
    if not _check_entry(Path(stem), [ids_path, offsets_path]):
        return None
    ids, offsets = _load_array(ids_path, np.int32), _load_array(offsets_path, np.int64)
    bounded = len(offsets) > 0 and offsets[0] == 0 and offsets[-1] == len(ids)
    if not bounded or np.any(np.diff(offsets) < 0):
        raise DamagedEntry(f"{offsets_path.name}: not offsets rising from 0 to the {len(ids)} ids")
    return EncodedSplit(ids, offsets)


def encode_split(
    tokenizer: Tokenizer, texts: Sequence[str], chunk_size: int = ENCODE_CHUNK, what: str = ""
) -> EncodedSplit:
    """Encode ``texts`` chunk by chunk into flat arrays, never one list of all id lists; a
    progress bar named ``what`` counts the lines on a terminal when there is more than one
    chunk."""
    starts = range(0, len(texts), chunk_size)
    with tqdm(
        total=len(texts),
        desc=f"encoding {what}".strip(),
        unit=" lines",
        disable=None if len(starts) > 1 else True,  # None: shown on a terminal only
    ) as bar:
        parts = []
        for start in starts:
            chunk = list(texts[start : start + chunk_size])
            parts.append(EncodedSplit.from_sequences(tokenizer.encode(chunk)))
            bar.update(len(chunk))
    return EncodedSplit.concatenate(parts)
