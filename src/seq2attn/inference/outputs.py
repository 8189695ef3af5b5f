"""Files written from translations: hypotheses, Moses n-best lists, samples, heatmap pages.

Each is written to a temporary name beside it and renamed when complete, so an interrupted run
leaves the previous file or none, never half of one."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seq2attn.config import DecodingSchema
from seq2attn.data.cache import atomic_write_bytes
from seq2attn.data.tokenizer import Tokenizer
from seq2attn.inference.translator import Translation, Translator
from seq2attn.plotting import PageEntry, attention_page, heatmap_png, save_heatmaps


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """``payload`` as indented JSON with sorted keys."""
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def write_lines(path: Path, lines: Sequence[str]) -> None:
    """One line per item."""
    atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode())


def write_nbest(path: Path, translations: Sequence[Translation], tokenizer: Tokenizer) -> None:
    """Moses-style n-best list: ``sentence ||| hypothesis ||| model score``."""
    lines = []
    for index, translation in enumerate(translations):
        texts = tokenizer.decode([hyp.tokens for hyp in translation.nbest])
        lines += [
            f"{index} ||| {text} ||| {hyp.score:.4f}"
            for hyp, text in zip(translation.nbest, texts, strict=True)
        ]
    write_lines(path, lines)


def write_samples(
    path: Path, sources: Sequence[str], references: Sequence[str], hypotheses: Sequence[str]
) -> None:
    """Side-by-side ``SRC`` / ``REF`` / ``HYP`` blocks."""
    blocks = [
        f"SRC: {src}\nREF: {ref}\nHYP: {hyp}\n"
        for src, ref, hyp in zip(sources, references, hypotheses, strict=True)
    ]
    atomic_write_bytes(path, "\n".join(blocks).encode())


def heatmap_entries(
    translations: Sequence[Translation], folder: Path, first: int
) -> list[PageEntry]:
    """Write ``sentence_<n>.png`` per translation with attention (n counts from ``first``) and
    return the page entries of all of them."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for number, translation in enumerate(translations, start=first):
        attention = translation.attention_map
        png = None if attention is None else heatmap_png(attention)
        if png is not None:
            atomic_write_bytes(folder / f"sentence_{number:05d}.png", png)
        entries.append(PageEntry(translation.source, translation.text, png))
    return entries


def write_attention_page(entries: Sequence[PageEntry], folder: Path) -> Path:
    """``attention.html``: every sentence with its translation and heatmap."""
    page = folder / "attention.html"
    atomic_write_bytes(page, attention_page(entries).encode())
    return page


def write_test_artifacts(
    translator: Translator,
    sources: Sequence[str],
    references: Sequence[str],
    hypotheses: dict[int, str],
    decoding: DecodingSchema,
    output_dir: Path,
    samples: int = 10,
    heatmaps: int = 3,
) -> None:
    """A training run's test outputs: ``test_hypotheses.txt`` (the test phase's, or translated
    anew when that phase saw only part of the split), ``samples.txt`` and ``attention.png``."""
    if len(hypotheses) < len(sources):  # a limited test, or one run in spawned processes
        hypotheses = dict(enumerate(translator.translate(sources, decoding).texts))
    indices = sorted(hypotheses)
    write_lines(output_dir / "test_hypotheses.txt", [hypotheses[i] for i in indices])
    shown = indices[:samples]
    write_samples(
        output_dir / "samples.txt",
        [sources[i] for i in shown],
        [references[i] for i in shown],
        [hypotheses[i] for i in shown],
    )
    translations = translator.translate(sources[:heatmaps], decoding)
    maps = [m for t in translations if (m := t.attention_map) is not None]
    if maps:
        save_heatmaps(maps, output_dir / "attention.png")
