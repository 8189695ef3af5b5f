"""experiments.distill: the student's union files from the teacher's best hypotheses, or from the
hypotheses of its beam closest to the references (sequence-level interpolation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.common import Measured
from experiments.distill import BEST, CLOSEST, closest_hypotheses, distil
from experiments.scoring import HarnessError
from seq2attn.inference.outputs import nbest_lines
from seq2attn.inference.translator import Translation
from seq2attn.search import Hypothesis, Ranking

REFERENCES = ["a dog runs on the grass .", "two men play music .", "a girl ."]
# per source, the teacher's beam best first: the closest to the reference is first only for the
# last source
BEAMS = [
    ["a dog runs .", "a dog runs on the grass .", "the cat sleeps ."],
    ["two men make music .", "two men are playing music .", "two men play music ."],
    ["a girl .", "a young girl ."],
]


class Words:
    """The decoding half of a tokenizer whose pieces are whole words."""

    def __init__(self, words: list[str]) -> None:
        self.words = words

    def decode(self, rows: list[list[int]]) -> list[str]:
        return [" ".join(self.words[token] for token in row) for row in rows]


def moses(beams: list[list[str]]) -> list[str]:
    """The beams as src/translate.py writes them (``nbest_output``), scores falling."""
    words = sorted({word for beam in beams for text in beam for word in text.split()})
    translations = [
        Translation(
            source="",
            text=beam[0],
            nbest=[
                Hypothesis([words.index(word) for word in text.split()], -1.0 - rank, None)
                for rank, text in enumerate(beam)
            ],
            source_pieces=[],
            target_pieces=[],
        )
        for beam in beams
    ]
    return nbest_lines(translations, Words(words), Ranking())  # type: ignore[arg-type]


def test_the_closest_hypothesis_has_the_highest_sentence_bleu_and_the_better_rank_on_a_tie(
    tmp_path: Path,
) -> None:
    picked = closest_hypotheses(moses(BEAMS), REFERENCES, tmp_path / "n.txt")
    assert picked == ["a dog runs on the grass .", "two men play music .", "a girl ."]
    tie = [["a girl . x", "a girl . y"], ["a girl . y", "a girl . x"]]
    assert closest_hypotheses(moses(tie), ["a girl .", "a girl ."], tmp_path / "n.txt") == [
        "a girl . x",
        "a girl . y",
    ]


def test_bars_and_ampersands_in_a_hypothesis_are_escaped_and_read_back(tmp_path: Path) -> None:
    lines = moses([["a | b & c &#124; d", "a b"]])
    assert lines[0].startswith("0 ||| a &#124; b &amp; c &amp;#124; d ||| logprob= -1.0000 ||| ")
    picked = closest_hypotheses(lines, ["a | b & c &#124; d"], tmp_path / "n.txt")
    assert picked == ["a | b & c &#124; d"]


@pytest.mark.parametrize(
    "bad",
    ["0 ||| a dog . ||| -1.0", "x ||| a dog . ||| logprob= -1 ||| -1",
     "3 ||| a dog . ||| logprob= -1 ||| -1", "\u00b2 ||| a dog . ||| logprob= -1 ||| -1"],
)  # fmt: skip
def test_a_malformed_nbest_line_is_named(bad: str, tmp_path: Path) -> None:
    lines = [moses(BEAMS)[0], bad]
    with pytest.raises(HarnessError, match=r"n\.txt, line 2: not `sentence \|\|\| hypothesis"):
        closest_hypotheses(lines, REFERENCES, tmp_path / "n.txt")


def test_a_source_without_hypotheses_is_named(tmp_path: Path) -> None:
    with pytest.raises(
        HarnessError, match=r"n\.txt holds no hypothesis of source 1: a later call translates"
    ):
        closest_hypotheses(moses(BEAMS[:1]), REFERENCES[:2], tmp_path / "n.txt")


class FakeTranslate:
    """src/translate.py: the beam's first hypotheses to ``output``, the whole beams to
    ``nbest_output`` when asked."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def __call__(self, command: list[str], log: Path) -> Measured:
        self.commands.append(command)
        options = dict(part.split("=", 1) for part in command[2:])
        Path(options["output"]).write_text("".join(beam[0] + "\n" for beam in BEAMS))
        if "nbest_output" in options:
            Path(options["nbest_output"]).write_text("".join(f"{line}\n" for line in moses(BEAMS)))
        return Measured(returncode=0, wall_s=12.0, peak_rss_mb=900.0)


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path, Path]:
    teacher, sources, targets = tmp_path / "teacher.ckpt", tmp_path / "s.de", tmp_path / "t.en"
    teacher.write_bytes(b"weights")
    sources.write_text("ein Hund .\nzwei Männer .\nein Mädchen .\n")
    targets.write_text("".join(line + "\n" for line in REFERENCES))
    return teacher, sources, targets


@pytest.mark.parametrize("closest", [False, True])
def test_the_union_holds_the_references_and_the_chosen_teacher_hypotheses(
    corpus: tuple[Path, Path, Path], tmp_path: Path, closest: bool
) -> None:
    translate, folder = FakeTranslate(), tmp_path / "distill"
    record = distil(*corpus, folder, translate, closest=closest)
    teacher = [beam[0] for beam in BEAMS]
    if closest:
        teacher = ["a dog runs on the grass .", "two men play music .", "a girl ."]
    union = (folder / "union.en").read_text().splitlines()
    assert union == REFERENCES + teacher
    assert (folder / "union.de").read_text() == 2 * corpus[1].read_text()
    assert record["teacher_hypothesis"] == (CLOSEST if closest else BEST)
    assert record.get("not_the_best") == (2 if closest else None)
    asked = "decoding.n_best=5" in translate.commands[0]
    assert asked == closest and (f"nbest_output={folder}/train.teacher.nbest.txt" in
                                 translate.commands[0]) == closest  # fmt: skip
    assert json.loads((folder / "translate.json").read_text())["pairs"] == 6
    assert distil(*corpus, folder, translate, closest=closest) == record  # done: reused
    assert len(translate.commands) == 1
    with pytest.raises(HarnessError, match=r"holds the teacher's .* hypotheses, not the "):
        distil(*corpus, folder, translate, closest=not closest)


def test_a_stopped_translation_leaves_nothing_a_later_call_would_take(
    corpus: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "distill"
    folder.mkdir()  # a closest-hypothesis call stopped here before its record was written
    (folder / "train.teacher.en").write_text("stale .\n" * 3)
    (folder / "train.teacher.nbest.txt").write_text("0 ||| stale . ||| logprob= -1 ||| -1\n")
    distil(*corpus, folder, FakeTranslate())
    assert not (folder / "train.teacher.nbest.txt").exists()
    assert "stale" not in (folder / "union.en").read_text()
