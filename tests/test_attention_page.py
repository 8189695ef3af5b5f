"""The interactive attention page: the weights it embeds are the model's, it is self-contained
and escapes what it shows; eval, translate and training runs write it."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from seq2attn.attention_page import (
    NOT_A_NUMBER,
    SCALE,
    PageHeader,
    PageHypothesis,
    PageSentence,
    colour,
    render,
)
from seq2attn.config import DecodingSchema
from seq2attn.data.toy import ToyCorpus
from seq2attn.inference import load
from seq2attn.inference.commands import evaluate
from seq2attn.inference.outputs import page_sentence
from seq2attn.metrics import sentence_bleu
from seq2attn.plotting import AttentionMap, heatmap_figure
from tests.conftest import compose_config


class Grids(HTMLParser):
    """Reads a page back: per section, per hypothesis div, the grid's rows of data-w values;
    the target and source piece labels; every href and src; the text of each section."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[list[list[list[float]]]] = []
        self.targets: list[list[list[str]]] = []
        self.sources: list[list[str]] = []
        self.links: list[str] = []
        self.texts: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.links += [v for k, v in attrs if k in ("href", "src") and v]
        if tag == "section":
            self.sections.append([])
            self.targets.append([])
            self.sources.append([])
            self.texts.append("")
        elif tag == "div" and found.get("class") == "hyp":
            self.sections[-1].append([])
            self.targets[-1].append([])
        elif tag == "tr" and self.sections and self.sections[-1]:
            self.sections[-1][-1].append([])
        elif tag == "td" and "data-w" in found:
            self.sections[-1][-1][-1].append(float(found["data-w"] or "nan"))
        elif tag == "th" and found.get("class") == "t":
            self._in = "target"
        elif tag == "span" and found.get("class") == "p" and len(self.sections[-1]) == 1:
            self._in = "source"

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "span"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self.texts:
            self.texts[-1] += data
        if self._in == "target":
            self.targets[-1][-1].append(data)
        elif self._in == "source":
            self.sources[-1].append(data)


def read_page(text: str) -> Grids:
    grids = Grids()
    grids.feed(text)
    return grids


def test_colour_runs_along_the_scale() -> None:
    assert colour(0.0) == SCALE[0] and colour(1.0) == SCALE[-1] and colour(0.5) == SCALE[2]
    assert colour(-3) == SCALE[0] and colour(7) == SCALE[-1]
    low, high = int(SCALE[0][1:3], 16), int(SCALE[1][1:3], 16)
    assert int(colour(0.125)[1:3], 16) == round((low + high) / 2)


def test_the_page_embeds_the_model_attention_of_every_nbest_hypothesis(
    trained_run: Path,
) -> None:
    translator = load(trained_run)
    sources = ToyCorpus(num_train=3000, num_val=100, num_test=100).splits()["test"].src[:3]
    decoding = DecodingSchema(strategy="beam", beam_size=3, n_best=2)
    translations = translator.translate(sources, decoding)
    page = render(
        PageHeader("t", "checkpoint x.ckpt", {"cell.type": "gru"}, {"beam_size": 3}),
        [page_sentence(t, translator.tgt_tokenizer) for t in translations],
    )
    grids = read_page(page)
    assert len(grids.sections) == 3
    for translation, section, targets, source in zip(
        translations, grids.sections, grids.targets, grids.sources, strict=True
    ):
        assert source == translation.source_pieces
        assert len(section) == 2  # both hypotheses, each with its own grid
        for hypothesis, rows, pieces in zip(translation.nbest, section, targets, strict=True):
            expected = hypothesis.attention.float().numpy()  # type: ignore[union-attr]
            assert np.allclose(np.array(rows[1:]), expected, atol=5e-4)  # rows[0]: the header
            assert pieces == [*translator.tgt_tokenizer.pieces(hypothesis.tokens), "</s>"]
    # self-contained: links only to its own sections; header and decoding shown
    assert grids.links == ["#s1", "#s2", "#s3"]
    assert "checkpoint x.ckpt" in page and "decoding: beam_size" in page
    assert page.count("<option") == 2 * 3


class Tags(HTMLParser):
    """Every start tag of a page, and the attribute names it carries."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes |= {name for name, _ in attrs}


ATTACK = """x"'><img src=x onerror=alert(1)><script>alert(2)</script>"""


def test_what_the_page_shows_is_escaped_in_every_field() -> None:
    weights = np.array([[0.25, 0.75], [1.0, 0.0]])
    hypothesis = PageHypothesis(ATTACK, -1.5, [ATTACK, "</s>"], weights)
    sentence = PageSentence(
        source=ATTACK,
        source_pieces=[ATTACK, "&amp;"],
        hypotheses=[hypothesis, hypothesis],
        reference=ATTACK,
        bleu=12.345,
    )
    page = render(PageHeader(ATTACK, ATTACK, {ATTACK: ATTACK}, {"beam": ATTACK}), [sentence])
    tags = Tags()
    tags.feed(page)
    assert "img" not in tags.tags and tags.tags.count("script") == 1  # the page's own script
    assert "onerror" not in tags.attributes
    grids = read_page(page)
    assert grids.sources == [[ATTACK, "&amp;"]] and grids.targets == [[[ATTACK, "</s>"]] * 2]
    assert grids.sections == [[[[], [0.25, 0.75], [1.0, 0.0]]] * 2]
    assert "sentence BLEU 12.3" in grids.texts[0] and f"reference {ATTACK}" in grids.texts[0]


def test_empty_sources_models_without_attention_and_nan_weights_have_their_own_rendering() -> None:
    assert colour(float("nan")) == NOT_A_NUMBER
    sentences = [
        PageSentence("", [], []),
        PageSentence("a b", ["a", "b"], [PageHypothesis("x", None, ["x", "</s>"], None)]),
        PageSentence(
            "a", ["a"], [PageHypothesis("x", None, ["x", "</s>"], np.array([[np.nan], [1.0]]))]
        ),
    ]
    page = render(PageHeader("t", "m"), sentences)
    grids = read_page(page)
    assert "empty source: nothing was translated" in grids.texts[0]
    assert "no attention (this model has none)" in grids.texts[1] and grids.sections[1] == [[]]
    assert np.isnan(grids.sections[2][0][1][0]) and grids.sections[2][0][2] == [1.0]
    assert f"background:{NOT_A_NUMBER}" in page


def test_a_grid_of_the_wrong_shape_is_refused() -> None:
    bad = PageHypothesis("x", None, ["a", "</s>"], np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"shape \(3, 2\) for 2 target and 2 source"):
        render(PageHeader("t", "m"), [PageSentence("s", ["a", "b"], [bad])])


def test_eval_writes_the_page_of_its_first_sentences_with_references_and_bleu(
    trained_run: Path, tmp_path: Path
) -> None:
    cfg = compose_config(
        "eval",
        [
            f"ckpt_path={trained_run}",
            f"paths.output_dir={tmp_path}",
            "decoding=greedy",
            "attention_page=4",
        ],
    )
    evaluate(cfg)
    page = (tmp_path / "test.attention.html").read_text()
    grids = read_page(page)
    hypotheses = (tmp_path / "test.hyp.txt").read_text().splitlines()
    references = (tmp_path / "test.ref.txt").read_text().splitlines()
    assert len(grids.sections) == 4
    for text, hypothesis, reference in zip(grids.texts, hypotheses, references, strict=False):
        assert f"reference {reference}" in text and f"hypothesis 1 {hypothesis}" in text
        assert f"sentence BLEU {sentence_bleu(hypothesis, reference):.1f}" in text
    decoding = json.loads((tmp_path / "scores.json").read_text())["decoding"]
    assert f"decoding: strategy</th><td>{decoding['strategy']}" in page
    assert "run_name" in page and str(trained_run) not in page  # the checkpoint, not its path


def test_attention_page_must_not_be_negative(trained_run: Path, tmp_path: Path) -> None:
    from seq2attn.config import ConfigError

    cfg = compose_config(
        "eval", [f"ckpt_path={trained_run}", f"paths.output_dir={tmp_path}", "attention_page=-1"]
    )
    with pytest.raises(ConfigError, match="attention_page: -1 sentences"):
        evaluate(cfg)


def test_a_heatmap_has_its_title_and_a_colour_bar() -> None:
    item = AttentionMap(
        np.full((2, 3), 1 / 3), ["a", "b", "c"], ["x", "</s>"], "1. a b c\nreference: x\nstep 7"
    )
    figure = heatmap_figure([item])
    heatmap, bar = figure.axes
    assert heatmap.get_title().splitlines() == ["1. a b c", "reference: x", "step 7"]
    long = AttentionMap(item.weights, item.source, item.target, "1. " + "word " * 60 + "\nstep 7")
    rows = heatmap_figure([long]).axes[0].get_title().splitlines()
    assert len(rows) == 3 and rows[1].endswith("…") and rows[2] == "step 7"  # the step stays
    assert bar.get_ylabel() == "attention weight" and bar.get_ylim() == (0.0, 1.0)
