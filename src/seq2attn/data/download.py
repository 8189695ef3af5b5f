"""Downloads checked against a pinned sha256 (or for gzip integrity) and written atomically; the
official Multi30k files and their checksums."""

from __future__ import annotations

import gzip
import hashlib
import urllib.request
import zlib
from pathlib import Path

from seq2attn.data.cache import atomic_write_bytes
from seq2attn.data.corpus import CorpusError

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
