"""Files written from translations: hypotheses, Moses n-best lists, samples, heatmaps and the
interactive attention page.

Each is written to a temporary name beside it and renamed when complete, so an interrupted run
leaves the previous file or none, never half of one."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from seq2attn.attention_page import PageHeader, PageHypothesis, PageSentence, render
from seq2attn.config import DecodingSchema
from seq2attn.data.cache import atomic_write_bytes
from seq2attn.data.tokenizer import Tokenizer
from seq2attn.inference.translator import Translation, Translator
from seq2attn.metrics import sentence_bleu
from seq2attn.plotting import heatmap_png, save_heatmaps
from seq2attn.search import Ranking


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """``payload`` as indented JSON with sorted keys."""
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def write_lines(path: Path, lines: Sequence[str]) -> None:
    """One line per item."""
    atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode())


# what a hypothesis of an n-best line escapes, in this order (undone in reverse), as Moses does
NBEST_ESCAPES = (("&", "&amp;"), ("|", "&#124;"))


def nbest_escaped(text: str) -> str:
    """``text`` as an n-best line's hypothesis field: no ``|`` left to split it on."""
    for raw, code in NBEST_ESCAPES:
        text = text.replace(raw, code)
    return text


def nbest_unescaped(field: str) -> str:
    """The hypothesis an n-best line's field was escaped from (:func:`nbest_escaped`)."""
    for raw, code in reversed(NBEST_ESCAPES):
        field = field.replace(code, raw)
    return field


def nbest_lines(
    translations: Sequence[Translation], tokenizer: Tokenizer, ranking: Ranking, first: int = 0
) -> list[str]:
    """Moses n-best lines, ``sentence ||| hypothesis ||| logprob= log p(Y|X) ||| s(Y, X)``, best
    first by the search's key s (:class:`seq2attn.search.Ranking`), sentences counted from
    ``first``; ``&`` and ``|`` in a hypothesis are written ``&amp;`` and ``&#124;``, as Moses
    escapes them. A source of no pieces gets one empty hypothesis of score 0."""
    lines = []
    for index, translation in enumerate(translations, start=first):
        if not translation.nbest:
            lines.append(f"{index} |||  ||| logprob= 0.0000 ||| 0.0000")
            continue
        texts = tokenizer.decode([hyp.tokens for hyp in translation.nbest])
        lines += [
            f"{index} ||| {nbest_escaped(text)} ||| logprob= {hyp.score:.4f} ||| "
            f"{ranking.key(hyp):.4f}"
            for hyp, text in zip(translation.nbest, texts, strict=True)
        ]
    return lines


def write_samples(
    path: Path, sources: Sequence[str], references: Sequence[str], hypotheses: Sequence[str]
) -> None:
    """Side-by-side ``SRC`` / ``REF`` / ``HYP`` blocks."""
    blocks = [
        f"SRC: {src}\nREF: {ref}\nHYP: {hyp}\n"
        for src, ref, hyp in zip(sources, references, hypotheses, strict=True)
    ]
    atomic_write_bytes(path, "\n".join(blocks).encode())


def page_sentence(
    translation: Translation, tokenizer: Tokenizer, reference: str | None = None
) -> PageSentence:
    """A translation as a sentence of the attention page: every n-best hypothesis with its
    pieces and attention, and the reference with the sentence BLEU of the best when given."""
    hypotheses = [
        PageHypothesis(
            text=text,
            score=hyp.score,
            pieces=tokenizer.pieces(hyp.tokens) + ["</s>"],
            weights=None if hyp.attention is None else hyp.attention.float().cpu().numpy(),
        )
        for hyp, text in zip(
            translation.nbest, tokenizer.decode([h.tokens for h in translation.nbest]), strict=True
        )
    ]
    return PageSentence(
        source=translation.source,
        source_pieces=translation.source_pieces,
        hypotheses=hypotheses,
        reference=reference,
        bleu=None if reference is None else sentence_bleu(translation.text, reference),
    )


def write_heatmaps(translations: Sequence[Translation], folder: Path, first: int) -> None:
    """``sentence_<n>.png`` per translation with attention (n counts from ``first``), titled
    with its number and source."""
    folder.mkdir(parents=True, exist_ok=True)
    for number, translation in enumerate(translations, start=first):
        attention = translation.attention_map
        if attention is not None:
            titled = dataclasses.replace(attention, title=f"{number}. {translation.source}")
            atomic_write_bytes(folder / f"sentence_{number:05d}.png", heatmap_png(titled))


def write_attention_page(header: PageHeader, sentences: Sequence[PageSentence], path: Path) -> Path:
    """The interactive attention page (:mod:`seq2attn.attention_page`) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, render(header, sentences).encode())
    return path


def page_header(
    title: str, model: str, config: dict[str, Any], decoding: DecodingSchema
) -> PageHeader:
    """The page's header: ``model`` (checkpoint paths, or the run and step), the config keys
    of :data:`SUMMARY_KEYS` that ``config`` has, and the decoding settings."""
    summary = {}
    for key in SUMMARY_KEYS:
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            summary[key] = node
    settings = {
        key: value.value if isinstance(value, Enum) else value
        for key, value in dataclasses.asdict(decoding).items()
    }
    return PageHeader(title, model, summary, settings)


# the training config keys a page's header shows, where the config has them
SUMMARY_KEYS = (
    "run_name",
    "data.src_lang",
    "data.tgt_lang",
    "attention.type",
    "attention.input_feeding",
    "cell.type",
    "model.embedding_size",
    "model.encoder_hidden_size",
    "model.hidden_size",
    "model.bidirectional",
    "model.reverse_source",
    "teacher_forcing.feedback",
    "trainer.max_steps",
    "seed",
)


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
    maps = [
        dataclasses.replace(m, title=f"{n}. {t.source}\nreference: {ref}")
        for n, (t, ref) in enumerate(zip(translations, references, strict=False), start=1)
        if (m := t.attention_map) is not None
    ]
    if maps:
        save_heatmaps(maps, output_dir / "attention.png")
