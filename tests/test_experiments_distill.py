"""experiments.distill: the student's union files from the teacher's best hypotheses, or from the
hypotheses of its beam closest to the references (sequence-level interpolation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.common import Measured
from experiments.distill import BEST, CLOSEST, closest_hypotheses, distil
from experiments.scoring import HarnessError

REFERENCES = ["a dog runs on the grass .", "two men play music .", "a girl ."]
# per source, the teacher's beam best first: the closest to the reference is never the first
BEAMS = [
    ["a dog runs .", "a dog runs on the grass .", "the cat sleeps ."],
    ["two men make music .", "two men are playing music .", "two men play music ."],
    ["a girl .", "a young girl ."],
]


def moses(beams: list[list[str]]) -> list[str]:
    return [f"{i} ||| {text} ||| {-k - 1.0:.4f}" for i, beam in enumerate(beams) for k, text in
            enumerate(beam)]  # fmt: skip


def test_the_closest_hypothesis_has_the_highest_sentence_bleu_and_the_better_rank_on_a_tie(
    tmp_path: Path,
) -> None:
    beams = [*BEAMS[:2], ["a girl .", "a girl ."]]
    picked = closest_hypotheses(moses(beams), REFERENCES, tmp_path / "n.txt")
    assert picked == ["a dog runs on the grass .", "two men play music .", "a girl ."]
    assert closest_hypotheses(moses(BEAMS[:1]), REFERENCES[:1] + ["no beam"], tmp_path) == [
        "a dog runs on the grass .",
        "",
    ]


@pytest.mark.parametrize(
    "bad", ["0 ||| a dog .", "x ||| a dog . ||| -1.0", "3 ||| a dog . ||| -1.0"]
)
def test_a_malformed_nbest_line_is_named(bad: str, tmp_path: Path) -> None:
    lines = [moses(BEAMS)[0], bad]
    with pytest.raises(HarnessError, match=r"n\.txt, line 2: not `sentence \|\|\| hypothesis"):
        closest_hypotheses(lines, REFERENCES, tmp_path / "n.txt")


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
