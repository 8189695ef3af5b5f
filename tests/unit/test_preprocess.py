from __future__ import annotations

import logging

import numpy as np
import pytest

from seq2attn.data import preprocess
from seq2attn.data.corpus import CorpusError
from seq2attn.data.preprocess import LengthFilter, TextFilter

LIGATURE, COMPOSED, DECOMPOSED = "\ufb01", "\u00e9", "e\u0301"  # "fi", "é", "e" + accent


@pytest.mark.parametrize(
    ("form", "expected"),
    [("NFKC", ["fi é", "fi é"]), ("NFC", [f"{LIGATURE} é", f"{LIGATURE} é"]),
     ("none", [f"{LIGATURE} {COMPOSED}", f"{LIGATURE} {DECOMPOSED}"])],
)  # fmt: skip
def test_normalization_forms(form, expected, caplog):
    pairs = [(f"{LIGATURE} {COMPOSED}", "x"), (f"{LIGATURE} {DECOMPOSED}", "y")]
    with caplog.at_level(logging.INFO, logger=preprocess.__name__):
        corpus = TextFilter(form, drop_empty=True, max_chars=100).training_pairs(pairs, "train")
    assert corpus.src == expected and corpus.tgt == ["x", "y"]
    changed = {"NFKC": 2, "NFC": 1}.get(form)
    assert (f"train: {form} normalisation changed {changed} pairs" in caplog.text) == bool(changed)


def test_each_filter_is_counted_and_logged(caplog):
    pairs = [("ok", "fine"), ("", "no source"), ("x" * 11, "long"), ("a", ""), ("b", "c")]
    with caplog.at_level(logging.INFO, logger=preprocess.__name__):
        corpus = TextFilter("NFKC", True, 10).training_pairs(pairs, "the train split (a + b)")
    assert corpus.src == ["ok", "b"]
    assert (
        "the train split (a + b): kept 2 of 5 pairs (max_chars=10 removed 1, drop_empty removed 2)"
        in caplog.text
    )


def test_drop_empty_off_keeps_empty_sides():
    corpus = TextFilter("none", False, 10).training_pairs([("", "x"), ("y", "")], "train")
    assert corpus.src == ["", "y"]


def test_an_empty_corpus_says_so():
    with pytest.raises(CorpusError) as error:
        TextFilter("NFKC", True, 10).training_pairs([], "the train split (a.de + a.en)")
    assert str(error.value) == "the train split (a.de + a.en) is empty: it has no pairs"


def test_a_corpus_emptied_by_filters_names_them():
    pairs = [("", "a"), ("x" * 50, "b"), ("c", "")]
    with pytest.raises(CorpusError) as error:
        TextFilter("NFKC", True, 10).training_pairs(pairs, "the train split")
    assert str(error.value) == (
        "the train split: no pair is left of 3 after filtering (max_chars=10 removed 1, "
        "drop_empty removed 2)"
    )


def test_long_lines_are_dropped_before_normalisation(monkeypatch):
    seen = []
    monkeypatch.setattr(preprocess.unicodedata, "is_normalized", lambda f, t: seen.append(t))
    monkeypatch.setattr(preprocess.unicodedata, "normalize", lambda f, t: t)
    huge = "w " * 2_000_000
    TextFilter("NFKC", True, 1000).training_pairs([(huge, "x"), ("a", "b")], "train")
    assert seen == ["a", "b"]


def test_evaluation_pairs_are_kept_references_verbatim_inputs_cut(caplog):
    pairs = [(f"{LIGATURE}x", f"{LIGATURE}y"), ("", ""), ("z" * 8, "ref " * 3)]
    with caplog.at_level(logging.WARNING, logger=preprocess.__name__):
        inputs, texts = TextFilter("NFKC", True, 5).evaluation_pairs(pairs, "the test split")
    assert texts.src == ["fix", "", "z" * 8]
    assert texts.tgt == [f"{LIGATURE}y", "", "ref " * 3]
    assert inputs.src == ["fix", "", "z" * 5] and inputs.tgt == ["fiy", "", "ref r"]
    assert "the test split: 1 pairs are longer than max_chars=5" in caplog.text


def test_an_empty_evaluation_split_says_so():
    with pytest.raises(CorpusError, match=r"^the val split \(v\) is empty: it has no pairs$"):
        TextFilter("NFKC", True, 5).evaluation_pairs([], "the val split (v)")


def test_length_filter_attributes_each_pair_to_the_first_filter(caplog):
    src = np.array([0, 3, 9, 2, 8, 4])
    tgt = np.array([2, 3, 1, 2, 2, 5])
    with caplog.at_level(logging.INFO, logger=preprocess.__name__):
        keep = LengthFilter(1, 8, 3.0).keep(src, tgt, "train in pieces")
    # 0: empty source (min_length); 2: 9 > 8 (max_length, also ratio); 4: ratio 4 > 3
    assert keep.tolist() == [1, 3, 5]
    assert (
        "train in pieces: kept 3 of 6 pairs (min_length=1 removed 1, max_length=8 removed 1, "
        "max_length_ratio=3.0 removed 1)" in caplog.text
    )
    assert LengthFilter(1, 8, None).keep(src, tgt, "x").tolist() == [1, 3, 4, 5]


def test_length_filter_that_removes_everything_names_the_filters():
    with pytest.raises(CorpusError) as error:
        LengthFilter(2, 3, None).keep(np.array([1, 5]), np.array([1, 2]), "train in pieces")
    assert str(error.value) == (
        "train in pieces: no pair is left of 2 after filtering (min_length=2 removed 1, "
        "max_length=3 removed 1)"
    )
