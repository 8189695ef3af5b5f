"""The interactive attention report: one self-contained HTML file (no network, no external
script) with a header (checkpoint, config summary, decoding settings), a table of contents and,
per sentence, the source, the hypotheses (n-best selectable), the reference and sentence BLEU
when known, and each hypothesis' attention a_tj (target piece t down the rows, source piece j
along the columns) drawn as an HTML grid on a colour scale from 0 to 1.

Hovering a target piece shows, over each source piece, the weight that row gives it; hovering
a cell shows its value. Every cell carries its weight to 3 decimals in ``data-w``."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

# viridis at 0, 1/4, 1/2, 3/4 and 1: the colour scale of the grid and of the PNG heatmaps
SCALE = ("#440154", "#3b528b", "#21918c", "#5ec962", "#fde725")
NOT_A_NUMBER = "#9e9e9e"


@dataclass(frozen=True)
class PageHypothesis:
    """One hypothesis: its text, model score, target pieces (rows, ending with ``</s>``) and
    attention weights (rows x source pieces; None for a model without attention)."""

    text: str
    score: float | None
    pieces: list[str]
    weights: np.ndarray | None


@dataclass(frozen=True)
class PageSentence:
    """One source sentence with its hypotheses (best first), and its reference and sentence
    BLEU where known."""

    source: str
    source_pieces: list[str]
    hypotheses: list[PageHypothesis]
    reference: str | None = None
    bleu: float | None = None


@dataclass(frozen=True)
class PageHeader:
    """What produced the page: its title, the model it shows, a summary of that model's config
    and the decoding settings."""

    title: str
    model: str
    config: Mapping[str, object] = field(default_factory=dict)
    decoding: Mapping[str, object] = field(default_factory=dict)


def colour(weight: float) -> str:
    """The scale's colour at ``weight`` in [0, 1], linear between its five stops; grey for a
    weight that is not a number (a diverged model)."""
    if not math.isfinite(weight):
        return NOT_A_NUMBER
    position = min(max(float(weight), 0.0), 1.0) * (len(SCALE) - 1)
    low = min(int(position), len(SCALE) - 2)
    fraction = position - low
    a, b = (_rgb(SCALE[low]), _rgb(SCALE[low + 1]))
    return "#" + "".join(f"{round(x + (y - x) * fraction):02x}" for x, y in zip(a, b, strict=True))


def render(header: PageHeader, sentences: Sequence[PageSentence]) -> str:
    """The page as one HTML document."""
    contents = "".join(
        f'<li><a href="#s{n}">{n}. {_escape(_shorten(s.source))}</a></li>'
        for n, s in enumerate(sentences, start=1)
    )
    body = "\n".join(_sentence(n, s) for n, s in enumerate(sentences, start=1))
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_escape(header.title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{_escape(header.title)}</h1>{_header(header)}{_legend()}"
        f"<nav><h2>Sentences</h2><ol>{contents}</ol></nav>\n{body}\n"
        f"<script>{SCRIPT}</script></body></html>\n"
    )


def _header(header: PageHeader) -> str:
    rows: list[tuple[str, object]] = [("model", header.model)]
    rows += [(f"config: {k}", v) for k, v in header.config.items()]
    rows += [(f"decoding: {k}", v) for k, v in header.decoding.items()]
    cells = "".join(f"<tr><th>{_escape(k)}</th><td>{_escape(str(v))}</td></tr>" for k, v in rows)
    return f'<table class="header">{cells}</table>'


def _legend() -> str:
    ticks = "".join(f"<span>{t}</span>" for t in ("0", "0.25", "0.5", "0.75", "1"))
    return (
        '<div class="legend"><span class="label">attention weight</span>'
        f'<div class="bar" style="background:linear-gradient(to right,{",".join(SCALE)})"></div>'
        f'<div class="ticks">{ticks}</div></div>'
    )


def _sentence(number: int, sentence: PageSentence) -> str:
    lines = [f'<p class="src"><b>source</b> {_escape(sentence.source)}</p>']
    if sentence.reference is not None:
        lines.append(f'<p class="ref"><b>reference</b> {_escape(sentence.reference)}</p>')
    if sentence.bleu is not None:
        lines.append(f'<p class="bleu"><b>sentence BLEU</b> {sentence.bleu:.1f}</p>')
    if len(sentence.hypotheses) > 1:
        options = "".join(
            f'<option value="{k}">{k + 1}. {_escape(_shorten(h.text))}{_score(h)}</option>'
            for k, h in enumerate(sentence.hypotheses)
        )
        lines.append(f'<label>hypothesis <select class="nbest">{options}</select></label>')
    if not sentence.hypotheses:
        lines.append("<p><em>empty source: nothing was translated</em></p>")
    for k, hypothesis in enumerate(sentence.hypotheses):
        hidden = " hidden" if k else ""
        lines.append(
            f'<div class="hyp" data-k="{k}"{hidden}>'
            f'<p class="out"><b>hypothesis {k + 1}</b> {_escape(hypothesis.text)}'
            f"{_score(hypothesis)}</p>{_grid(sentence.source_pieces, hypothesis)}</div>"
        )
    return (
        f'<section id="s{number}"><h2>{number}</h2>{"".join(lines)}'
        '<p class="info">hover a target piece or a cell</p></section>'
    )


def _grid(source: Sequence[str], hypothesis: PageHypothesis) -> str:
    if hypothesis.weights is None:
        return "<p><em>no attention (this model has none)</em></p>"
    weights = np.asarray(hypothesis.weights, dtype=np.float64)
    if weights.shape != (len(hypothesis.pieces), len(source)):
        raise ValueError(
            f"attention of shape {weights.shape} for {len(hypothesis.pieces)} target and "
            f"{len(source)} source pieces"
        )
    head = "".join(
        f'<th class="s" data-j="{j}"><span class="w"></span>'
        f'<span class="p">{_escape(p)}</span></th>'
        for j, p in enumerate(source)
    )
    rows = []
    for i, (piece, row) in enumerate(zip(hypothesis.pieces, weights, strict=True)):
        cells = "".join(
            f'<td data-w="{w:.3f}" style="background:{colour(w)}" '
            f'title="{_escape(piece)} \u2192 {_escape(source[j])}: {w:.3f}"></td>'
            for j, w in enumerate(row)
        )
        rows.append(f'<tr><th class="t" data-i="{i}">{_escape(piece)}</th>{cells}</tr>')
    return f'<table class="grid"><tr><th></th>{head}</tr>{"".join(rows)}</table>'


def _score(hypothesis: PageHypothesis) -> str:
    return "" if hypothesis.score is None else f" (score {hypothesis.score:.3f})"


def _shorten(text: str, limit: int = 70) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _rgb(code: str) -> tuple[int, int, int]:
    return int(code[1:3], 16), int(code[3:5], 16), int(code[5:7], 16)


STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em}"
    "table.header{border-collapse:collapse;font-size:0.85em}"
    "table.header th{text-align:left;padding-right:1em;color:#555;font-weight:normal}"
    ".legend{margin:1em 0;width:320px;font-size:0.8em}.legend .bar{height:12px}"
    ".legend .ticks{display:flex;justify-content:space-between}"
    "section{border-top:1px solid #ccc;padding:0.5em 0}.src,.ref{color:#444}"
    ".grid{border-collapse:collapse;margin:0.5em 0}"
    ".grid td{width:22px;height:22px;border:1px solid #fff;cursor:crosshair}"
    ".grid th{font-weight:normal;font-size:0.8em;padding:0 4px}"
    ".grid th.t{text-align:right;cursor:pointer}"
    ".grid th.s{vertical-align:bottom;height:6em}"
    ".grid th.s .p{writing-mode:vertical-rl;transform:rotate(180deg)}"
    ".grid th.s .w{display:block;font-size:0.75em;color:#b00;min-height:1.2em}"
    ".grid th.on{background:#ffe08a}.grid tr.on th.t{background:#ffe08a;font-weight:bold}"
    ".info{font-size:0.85em;color:#333;min-height:1.2em}"
)

# hover a target piece: its row's weights over the source pieces (shaded by weight); hover a
# cell: its value in the sentence's info line; the n-best select shows one hypothesis' grid
SCRIPT = """
for (const grid of document.querySelectorAll('table.grid')) {
  const info = grid.closest('section').querySelector('.info');
  const heads = grid.querySelectorAll('th.s');
  const clear = () => {
    grid.querySelectorAll('tr.on').forEach(r => r.classList.remove('on'));
    heads.forEach(h => { h.classList.remove('on'); h.style.background = '';
                         h.querySelector('.w').textContent = ''; });
  };
  grid.querySelectorAll('th.t').forEach(th => th.addEventListener('mouseenter', () => {
    clear();
    const row = th.parentElement;
    row.classList.add('on');
    row.querySelectorAll('td').forEach((td, j) => {
      const w = parseFloat(td.dataset.w);
      heads[j].querySelector('.w').textContent = td.dataset.w;
      heads[j].style.background = 'rgba(255,176,0,' + w + ')';
    });
    info.textContent = 'target ' + th.textContent + ': weights over the source pieces above';
  }));
  grid.querySelectorAll('td').forEach(td => td.addEventListener('mouseenter', () => {
    info.textContent = td.title;
    info.dataset.w = td.dataset.w;
  }));
  grid.addEventListener('mouseleave', clear);
}
for (const select of document.querySelectorAll('select.nbest')) {
  select.addEventListener('change', () => {
    select.closest('section').querySelectorAll('div.hyp').forEach(d => {
      d.hidden = d.dataset.k !== select.value;
    });
  });
}
"""
