from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import logging
import os
import re
import sys
import tempfile
import types
import urllib.error
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seq2attn.data import download, lines, readers
from seq2attn.data.corpus import CorpusError
from seq2attn.data.lines import read_aligned, read_lines, read_tsv
from seq2attn.data.readers import HFCorpus, Multi30kCorpus, TextPairsCorpus, TsvCorpus


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def pairs_corpus(tmp_path: Path, src: bytes, tgt: bytes, **kwargs) -> TextPairsCorpus:
    for split in ("train", "val", "test"):
        write(tmp_path / f"{split}.de", src)
        write(tmp_path / f"{split}.en", tgt)
    names = {f"{s}_{side}": str(tmp_path / f"{s}.{lang}") for s in ("train", "val", "test")
             for side, lang in (("src", "de"), ("tgt", "en"))}  # fmt: skip
    return TextPairsCorpus(**names, **kwargs)


# --- line semantics -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.txt", "a.txt.gz"])
def test_lines_crlf_bom_and_final_line(tmp_path, name):
    path = write(tmp_path / name, "\ufeffeins\r\nzwei  \n\n drei".encode())
    assert list(read_lines(path, "strict")) == ["eins", "zwei  ", "", " drei"]


def test_empty_file_has_no_lines_and_a_newline_is_one_empty_line(tmp_path):
    assert list(read_lines(write(tmp_path / "e", b""), "strict")) == []
    assert list(read_lines(write(tmp_path / "n", b"\n"), "strict")) == [""]


def test_aligned_pairs_are_stripped(tmp_path):
    corpus = pairs_corpus(tmp_path, b" ein Hund \nzwei\n", b"a dog\t\n two\n")
    assert list(corpus.pairs("train")) == [("ein Hund", "a dog"), ("zwei", "two")]


# --- bad input ----------------------------------------------------------------------------------


def test_different_line_counts_name_both_files_and_counts(tmp_path):
    corpus = pairs_corpus(tmp_path, b"a\nb\nc\n", b"x\ny\n")
    with pytest.raises(CorpusError) as error:
        list(corpus.pairs("val"))
    assert str(error.value) == (
        f"source and target files must have the same number of lines, but {tmp_path}/val.de has "
        f"3 and {tmp_path}/val.en has 2"
    )


def test_bytes_not_utf8_name_file_and_line(tmp_path):
    corpus = pairs_corpus(tmp_path, b"gut\nok\n", b"fine\nbad \xff\xfe byte\n")
    with pytest.raises(CorpusError) as error:
        list(corpus.pairs("train"))
    assert str(error.value) == (
        f"{tmp_path}/train.en, line 2: bytes that are not UTF-8 (b'\\xff\\xfe b' at byte 4 of "
        "the line); fix the file or set data.on_decode_error=replace"
    )


def test_replace_counts_the_lines(tmp_path, caplog):
    corpus = pairs_corpus(tmp_path, b"\xffa\nb\n\xfe\n", b"x\ny\nz\n", on_decode_error="replace")
    with caplog.at_level(logging.WARNING, logger=lines.__name__):
        pairs = list(corpus.pairs("train"))
    assert pairs == [("\ufffda", "x"), ("b", "y"), ("\ufffd", "z")]
    assert f"{tmp_path}/train.de: replaced bytes that are not UTF-8 in 2 lines" in caplog.text


def test_missing_file_lists_the_paths_searched(tmp_path):
    corpus = pairs_corpus(tmp_path, b"a\n", b"b\n")
    corpus.paths["test"] = (str(tmp_path / "nope.de"), corpus.paths["test"][1])
    with pytest.raises(CorpusError) as error:
        corpus.fingerprint("test")
    assert str(error.value) == (
        f"data.test_src={tmp_path}/nope.de: file not found (searched {tmp_path}/nope.de, "
        f"{tmp_path}/nope.de.gz)"
    )


def test_a_gz_twin_is_found(tmp_path):
    write(tmp_path / "x.de.gz", b"a\n")
    assert lines.resolve(str(tmp_path / "x.de"), "train_src") == tmp_path / "x.de.gz"


@pytest.mark.parametrize(("line", "tabs"), [(b"no tab here", 0), (b"a\tb\tc", 2)])
def test_tsv_line_without_exactly_one_tab(tmp_path, line, tabs):
    path = write(tmp_path / "train.tsv", b"ein\tone\n" + line + b"\n")
    with pytest.raises(CorpusError) as error:
        list(read_tsv(path, "strict"))
    assert str(error.value) == (
        f"{path}, line 2: expected exactly one tab between source and target, found {tabs}"
    )


def test_tsv_corpus_reads_pairs(tmp_path):
    for split in ("train", "val", "test"):
        write(tmp_path / f"{split}.tsv.gz", b" ein Hund\ta dog \nzwei\ttwo\n")
    corpus = TsvCorpus(*(str(tmp_path / f"{s}.tsv") for s in ("train", "val", "test")), "strict")
    assert corpus.splits()["test"].tgt == ["a dog", "two"]


def test_damaged_gzip_names_the_file(tmp_path):
    path = tmp_path / "train.de.gz"
    data = gzip.compress(b"".join(b"%d\n" % i for i in range(20_000)))
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorpusError, match=re.escape(f"{path}: damaged gzip data after line")):
        list(read_lines(path, "strict"))


# --- fingerprints -------------------------------------------------------------------------------


def test_fingerprint_follows_the_content_not_the_mtime(tmp_path):
    corpus = pairs_corpus(tmp_path, b"a\nb\n", b"x\ny\n")
    before = corpus.fingerprint("train")
    os.utime(tmp_path / "train.de", (0, 0))
    assert corpus.fingerprint("train") == before
    write(tmp_path / "train.de", b"a\nc\n")
    assert corpus.fingerprint("train") != before
    replace = pairs_corpus(tmp_path, b"a\nb\n", b"x\ny\n", on_decode_error="replace")
    assert replace.fingerprint("train") != pairs_corpus(tmp_path, b"a\nb\n", b"x\ny\n").fingerprint(
        "train"
    )


# --- Multi30k -----------------------------------------------------------------------------------


def multi30k(root: Path, **overrides) -> Multi30kCorpus:
    args = {"root": str(root), "src_lang": "de", "tgt_lang": "en", "test_split": "test_2016_flickr",
            "on_decode_error": "strict", "download": True}  # fmt: skip
    return Multi30kCorpus(**(args | overrides))


def fake_multi30k(root: Path, langs=("de", "en"), plain: bool = False) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test_2016_flickr"):
        for lang in langs:
            write(root / f"{split}.{lang}{'' if plain else '.gz'}", f"{split} {lang}\n".encode())


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("src_lang", "xx", "data.src_lang=xx: not a Multi30k language; allowed: cs, de, en, fr"),
        ("tgt_lang", "de", "data.src_lang and data.tgt_lang are both de: pick two"),
        ("test_split", "test", "data.test_split=test: not a Multi30k test set; allowed: "
         "test_2016_flickr, test_2017_flickr, test_2017_mscoco, test_2018_flickr"),
    ],
)  # fmt: skip
def test_multi30k_rejects_bad_settings(tmp_path, key, value, message):
    with pytest.raises(CorpusError) as error:
        multi30k(tmp_path, **{key: value})
    assert str(error.value) == message


@pytest.mark.parametrize("plain", [False, True])
def test_multi30k_reads_gz_or_plain_files_and_maps_test(tmp_path, plain):
    fake_multi30k(tmp_path, plain=plain)
    splits = multi30k(tmp_path).splits()
    assert splits["test"].src == ["test_2016_flickr de"]
    assert splits["train"].tgt == ["train en"]


def test_multi30k_offline_names_the_urls_and_the_folder(tmp_path, monkeypatch):
    fake_multi30k(tmp_path, langs=("de",))

    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(download.urllib.request, "urlopen", offline)
    with pytest.raises(CorpusError) as error:
        multi30k(tmp_path).fingerprint("train")  # the first access, before any work
    message = str(error.value)
    assert message.startswith(f"Multi30k files are missing in {tmp_path} (download failed: ")
    assert "Temporary failure in name resolution" in message
    url = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
    for split in ("train", "val", "test_2016_flickr"):
        assert f"{tmp_path}/{split}.en[.gz]" in message
        assert f"\n  {url}{split}.en.gz" in message
    assert f"Download these files into {tmp_path}" in message
    assert {p.name for p in tmp_path.iterdir()} == {
        "train.de.gz", "val.de.gz", "test_2016_flickr.de.gz"}  # fmt: skip


def test_multi30k_without_download_says_so(tmp_path):
    with pytest.raises(CorpusError, match=r"missing in .* \(data.download=false\)"):
        multi30k(tmp_path, download=False).fingerprint("val")


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *args):
        self.close()


def test_download_checks_the_checksum_and_caches(tmp_path, monkeypatch):
    served = {f"{s}.{lang}.gz": gzip.compress(f"{s} {lang}\n".encode())
              for s in ("train", "val", "test_2016_flickr") for lang in ("de", "en")}  # fmt: skip
    table = {name: hashlib.sha256(data).hexdigest() for name, data in served.items()}
    requested = []

    def urlopen(url, timeout):
        requested.append(url.rsplit("/", 1)[1])
        return FakeResponse(served[requested[-1]])

    monkeypatch.setattr(readers, "MULTI30K_SHA256", table)
    monkeypatch.setattr(download.urllib.request, "urlopen", urlopen)
    corpus = multi30k(tmp_path / "m30k")
    assert corpus.splits()["val"].src == ["val de"]
    assert sorted(requested) == sorted(served)
    assert sorted(p.name for p in (tmp_path / "m30k").iterdir()) == sorted(served)
    corpus.splits()  # cached now: no second download
    assert len(requested) == len(served)

    served["train.en.gz"] = gzip.compress(b"tampered\n")
    (tmp_path / "m30k" / "train.en.gz").unlink()
    with pytest.raises(CorpusError, match="train.en.gz: checksum mismatch .* discarded"):
        corpus.fingerprint("train")
    assert not (tmp_path / "m30k" / "train.en.gz").exists()
    assert [p.name for p in (tmp_path / "m30k").iterdir() if p.name.startswith(".")] == []


def test_download_without_pinned_checksum_checks_gzip(tmp_path, monkeypatch):
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: FakeResponse(b"<"))
    with pytest.raises(CorpusError, match="not a complete gzip file"):
        download.fetch("https://example.org/test_2018_flickr.de.gz", tmp_path / "t.gz", None)
    assert list(tmp_path.iterdir()) == []


def test_official_checksums_match_the_shared_copies():
    shared = Path(__file__).resolve().parents[3] / "shared" / "data" / "multi30k"
    if not shared.is_dir():
        pytest.skip(f"no Multi30k copy in {shared}")
    for name, digest in download.MULTI30K_SHA256.items():
        assert hashlib.sha256((shared / name).read_bytes()).hexdigest() == digest, name


# --- Hugging Face -------------------------------------------------------------------------------


class FakeDataset(list):
    column_names = ["translation"]
    _fingerprint = "abc123"


def fake_datasets(monkeypatch, rows) -> list:
    calls = []

    def load_dataset(name, config, split, revision):
        calls.append((name, config, split, revision))
        return FakeDataset(rows)

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def hf_corpus(**overrides) -> HFCorpus:
    args = {"dataset": "wmt/wmt16", "dataset_config": "de-en", "revision": None, "src_lang": "de",
            "tgt_lang": "en", "val_split": "validation", "test_split": "test"}  # fmt: skip
    return HFCorpus(**(args | overrides))


def test_hf_reads_translation_rows(monkeypatch):
    calls = fake_datasets(monkeypatch, [{"translation": {"de": " Hund ", "en": "dog"}}])
    corpus = hf_corpus()
    assert list(corpus.pairs("val")) == [("Hund", "dog")]
    assert calls == [("wmt/wmt16", "de-en", "validation", None)]
    assert corpus.fingerprint("test") != hf_corpus(revision="v1").fingerprint("test")


def test_hf_names_missing_languages(monkeypatch):
    fake_datasets(monkeypatch, [{"translation": {"de": "Hund", "fr": "chien"}}])
    with pytest.raises(CorpusError, match="row 1: no de/en text \\(languages: de, fr\\)"):
        list(hf_corpus().pairs("train"))


def test_hf_without_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import fails
    with pytest.raises(CorpusError, match=re.escape("pip install -e '.[hf]'")):
        hf_corpus().fingerprint("train")


def test_hf_real_dataset():
    pytest.importorskip("datasets", reason="the optional `datasets` extra is not installed")
    try:
        pairs = list(hf_corpus(dataset="wmt/wmt16", dataset_config="de-en").pairs("val"))
    except Exception as error:  # no network or hub unavailable
        pytest.skip(f"the Hugging Face hub is not reachable: {error}")
    assert len(pairs) == 2169 and all(s and t for s, t in pairs)


# --- property tests -----------------------------------------------------------------------------

NO_NEWLINE = st.binary(max_size=12).filter(lambda b: b"\n" not in b)
LINE = st.one_of(
    NO_NEWLINE,
    st.text(max_size=8).map(str.encode).filter(lambda b: b"\n" not in b),
    st.sampled_from([b"", b"\r", b"\t", b"a\tb", b"\xef\xbb\xbfbom", b"\xc3", b" x "]),
)
FILE = st.tuples(st.lists(LINE, max_size=6), st.booleans(), st.booleans())


def file_bytes(lines: list[bytes], trailing_newline: bool) -> bytes:
    return b"\n".join(lines) + (b"\n" if trailing_newline and lines else b"")


def model_lines(data: bytes) -> list[bytes]:
    """The raw lines read_lines documents: split at \\n, a final \\n ends the last line."""
    parts = data.split(b"\n")
    return parts[:-1] if parts[-1] == b"" else parts


def model_decode(raw: bytes, number: int, path: Path, mode: str) -> str:
    try:
        text = raw.decode("utf-8", errors=mode)
    except UnicodeDecodeError:
        raise CorpusError(f"{path}, line {number}: bytes that are not UTF-8") from None
    return (text.removeprefix("\ufeff") if number == 1 else text).rstrip("\r\n")


def outcome(function):
    try:
        return function()
    except CorpusError as error:
        return CorpusError(str(error))


def same(result, expected) -> bool:
    if isinstance(expected, CorpusError):
        return isinstance(result, CorpusError) and str(result).startswith(str(expected))
    return result == expected


def model_aligned(src: bytes, tgt: bytes, paths: tuple[Path, Path], mode: str):
    lines = model_lines(src), model_lines(tgt)
    pairs = []
    for number in range(1, max(map(len, lines)) + 1):  # zip_longest order: source first
        texts = [
            model_decode(side[number - 1], number, path, mode)
            for side, path in zip(lines, paths, strict=True)
            if number <= len(side)
        ]
        if len(texts) < 2:
            return CorpusError(
                f"source and target files must have the same number of lines, but {paths[0]} "
                f"has {len(lines[0])} and {paths[1]} has {len(lines[1])}"
            )
        pairs.append((texts[0].strip(), texts[1].strip()))
    return pairs


@settings(max_examples=150, deadline=None)
@given(src=FILE, tgt=FILE, mode=st.sampled_from(["strict", "replace"]), gz=st.booleans())
def test_aligned_reader_gives_the_corpus_or_the_documented_error(src, tgt, mode, gz):
    with tempfile.TemporaryDirectory() as folder:
        suffix = ".gz" if gz else ""
        paths = Path(folder, "s" + suffix), Path(folder, "t" + suffix)
        data = file_bytes(*src[:2]), file_bytes(*tgt[:2])
        for path, content in zip(paths, data, strict=True):
            write(path, content)
        expected = outcome(lambda: model_aligned(*data, paths, mode))
        result = outcome(lambda: list(read_aligned(*paths, mode)))
        assert same(result, expected), (result, expected)


@settings(max_examples=100, deadline=None)
@given(content=FILE, mode=st.sampled_from(["strict", "replace"]))
def test_tsv_reader_gives_the_corpus_or_the_documented_error(content, mode):
    with tempfile.TemporaryDirectory() as folder:
        path = write(Path(folder, "x.tsv"), file_bytes(*content[:2]))

        def model():
            pairs = []
            for number, raw in enumerate(model_lines(path.read_bytes()), start=1):
                fields = model_decode(raw, number, path, mode).split("\t")
                if len(fields) != 2:
                    raise CorpusError(f"{path}, line {number}: expected exactly one tab")
                pairs.append((fields[0].strip(), fields[1].strip()))
            return pairs

        result = outcome(lambda: list(read_tsv(path, mode)))
        assert same(result, outcome(model)), (result, outcome(model))


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=300), gz_name=st.booleans(), tsv=st.booleans())
def test_random_bytes_never_crash_the_readers(data, gz_name, tsv):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "x.gz" if gz_name else "x")
        path.write_bytes(data)  # raw, so a .gz name usually holds a damaged stream
        read = (
            (lambda: list(read_tsv(path, "strict")))
            if tsv
            else (lambda: list(read_aligned(path, path, "strict")))
        )
        result = outcome(read)
        if isinstance(result, CorpusError):
            assert str(path) in str(result)
        else:
            assert all(isinstance(s, str) and isinstance(t, str) for s, t in result)


class CutOffResponse(FakeResponse):
    def read(self, *args):
        raise http.client.IncompleteRead(b"\x1f\x8b", 1000)


def test_a_download_cut_off_mid_way_is_one_corpus_error(tmp_path, monkeypatch):
    monkeypatch.setattr(download.urllib.request, "urlopen", lambda url, timeout: CutOffResponse())
    with pytest.raises(CorpusError, match=r"download failed: IncompleteRead"):
        multi30k(tmp_path / "m30k").fingerprint("val")
    assert not (tmp_path / "m30k").exists() or not list((tmp_path / "m30k").iterdir())


def test_a_data_root_that_is_a_file_is_named(tmp_path):
    (tmp_path / "multi30k").write_text("not a folder")
    with pytest.raises(CorpusError, match=r"data\.root=.*multi30k: a file, not a folder"):
        multi30k(tmp_path / "multi30k")
