"""Sequence-level knowledge distillation (Kim and Rush, 2016): a teacher translates the training
sources with beam search, and a student of the same size trains on the original pairs together
with the teacher's (source, translation) pairs. The teacher's outputs are simpler and more
consistent than human references, so the student learns them more easily than the references
alone.

    union.de = train.de + train.de
    union.en = train.en + teacher(train.de)

With ``closest=True`` (after Kim and Rush's sequence-level interpolation, Seq-Inter, which
trains on these alone; here they join the references) the teacher's line is not its best
hypothesis but, of its beam's five, the one of the highest sentence BLEU against the reference:
a target the teacher finds likely and that is nearer the truth. The translation then waits for
five finished hypotheses a sentence, so it takes longer. It is for trials by hand
(``distil(..., closest=True)``); experiments.best distils with the best hypotheses.

The files go to one folder: ``train.de`` (the sources, unzipped for src/translate.py),
``train.teacher.en`` (the teacher's beam-5 translations, length normalised by ``avg``; with
``closest``, also ``train.teacher.nbest.txt``, the five of each source),
``union.de`` and ``union.en``, and ``translate.json`` (the command, its wall time, which
hypothesis was taken, and the SHA-256 of the teacher checkpoint and of the union files), whose
presence marks the stage done. Each file
is written whole under a temporary name and then renamed, so a stopped call leaves no half file
that a later call would take for a finished one; a later call refuses files made from another
teacher checkpoint, by another choice of hypothesis, or changed since.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import Measured, shown
from experiments.decoding_grid import DecodingSetting
from experiments.scoring import HarnessError
from seq2attn.data.cache import atomic_write_bytes, file_sha256
from seq2attn.data.corpus import CorpusError
from seq2attn.data.lines import read_lines
from seq2attn.inference.outputs import nbest_unescaped
from seq2attn.metrics import sentence_bleu

TEACHER_DECODING = DecodingSetting("avg")  # beam 5, score divided by length
TEACHER_BEAM = 5
BEST, CLOSEST = "best", f"closest of {TEACHER_BEAM} by sentence BLEU"
NUMBER = re.compile(r"[0-9]+")
Run = Callable[[list[str], Path], Measured]


def lines_of(path: Path) -> list[str]:
    """The lines of a plain or gzipped UTF-8 text file as the corpus readers read them."""
    try:
        return list(read_lines(path, "strict"))
    except CorpusError as error:
        raise HarnessError(str(error)) from None


def write_whole(path: Path, lines: list[str]) -> None:
    """``lines`` into ``path``, which appears only once it is complete."""
    atomic_write_bytes(path, "".join(line + "\n" for line in lines).encode("utf-8"))


def translate_command(
    teacher: Path, source: Path, output: Path, folder: Path, nbest: Path | None = None
) -> list[str]:
    """src/translate.py writing the teacher's beam-5 translations of ``source`` to ``output``,
    and the whole beam of each to ``nbest`` when given."""
    whole_beam = (
        [f"decoding.n_best={TEACHER_BEAM}", f"nbest_output={shown(nbest)}"] if nbest else []
    )
    return [
        "python",
        "src/translate.py",
        f"ckpt_path={shown(teacher)}",
        f"input={shown(source)}",
        f"output={shown(output)}",
        "decoding=beam",
        f"decoding.beam_size={TEACHER_BEAM}",
        *TEACHER_DECODING.seq2attn(),
        *whole_beam,
        f"hydra.run.dir={shown(folder / 'translate')}",
    ]


def closest_hypotheses(nbest: list[str], references: list[str], path: Path) -> list[str]:
    """Per reference, the hypothesis of its n-best list (src/translate.py's ``nbest_output``:
    ``i ||| text ||| logprob= x ||| score``, best first) of the highest sentence BLEU against
    it, the better ranked on a tie."""
    beams: list[list[str]] = [[] for _ in references]
    again = "a later call translates again"
    for number, line in enumerate(nbest, start=1):
        fields = line.split(" ||| ")
        if len(fields) != 4 or not NUMBER.fullmatch(fields[0]) or int(fields[0]) >= len(beams):
            raise HarnessError(
                f"{shown(path)}, line {number}: not `sentence ||| hypothesis ||| logprob= x ||| "
                f"score` of one of {len(beams)} sources: {again}"
            )
        beams[int(fields[0])].append(nbest_unescaped(fields[1]))
    if not all(beams):
        missing = next(i for i, beam in enumerate(beams) if not beam)
        raise HarnessError(f"{shown(path)} holds no hypothesis of source {missing}: {again}")
    return [
        max(beam, key=lambda hypothesis: sentence_bleu(hypothesis, reference))
        for beam, reference in zip(beams, references, strict=True)
    ]


def distil(
    teacher: Path, sources: Path, targets: Path, folder: Path, run: Run, closest: bool = False
) -> dict[str, Any]:
    """The union training files of the student in ``folder`` (made unless ``translate.json``
    says they are), built from the ``teacher`` checkpoint's translations of ``sources`` (with
    ``closest``, the beam's hypothesis nearest each reference); what was run and how long it
    took. Files made from another teacher or choice, or changed since, are refused."""
    folder.mkdir(parents=True, exist_ok=True)
    source_lines, target_lines = lines_of(sources), lines_of(targets)
    if len(source_lines) != len(target_lines):
        raise HarnessError(
            f"{shown(sources)} has {len(source_lines)} lines, {shown(targets)} "
            f"{len(target_lines)}: they must be line-aligned"
        )
    plain, translated = folder / "train.de", folder / "train.teacher.en"
    whole_beams = folder / "train.teacher.nbest.txt"
    nbest = whole_beams if closest else None
    union = {"union_src": folder / "union.de", "union_tgt": folder / "union.en"}
    record_path = folder / "translate.json"
    command = translate_command(teacher, plain, translated, folder, nbest)
    chosen = CLOSEST if closest else BEST
    if not record_path.is_file():
        write_whole(plain, source_lines)
        for stale in (translated, whole_beams):  # a stopped translation is done again, not reused
            stale.unlink(missing_ok=True)
        process = run(command, folder / "translate.log")
        teacher_lines = checked(lines_of(translated), len(source_lines), translated)
        taken, differ = teacher_lines, {}
        if nbest is not None:
            taken = closest_hypotheses(lines_of(nbest), target_lines, nbest)
            differ = {
                "not_the_best": sum(a != b for a, b in zip(taken, teacher_lines, strict=True))
            }
        write_whole(union["union_src"], source_lines + source_lines)
        write_whole(union["union_tgt"], target_lines + taken)
        record = {
            "translate_command": " ".join(command),
            "translate_wall_s": process.wall_s,
            "teacher_hypothesis": chosen,
            **differ,
            "teacher_sha256": file_sha256(teacher),
            "pairs": 2 * len(source_lines),  # as written, before the training filters
            **{f"{key}_sha256": file_sha256(path) for key, path in union.items()},
        }
        write_whole(record_path, json.dumps(record, indent=2).splitlines())
    record = json.loads(record_path.read_text())
    redo = f"delete {shown(folder)} and the student trained on it to distil again"
    if record.get("teacher_sha256") != file_sha256(teacher):
        raise HarnessError(f"{shown(folder)} was translated by another {shown(teacher)}: {redo}")
    if record.get("teacher_hypothesis", BEST) != chosen:
        raise HarnessError(
            f"{shown(folder)} holds the teacher's {record.get('teacher_hypothesis', BEST)} "
            f"hypotheses, not the {chosen}: {redo}"
        )
    for key, path in union.items():
        if not path.is_file() or record.get(f"{key}_sha256") != file_sha256(path):
            raise HarnessError(f"{shown(path)} is missing or changed since it was made: {redo}")
    return record | {key: shown(path) for key, path in union.items()}


def checked(lines: list[str], expected: int, path: Path) -> list[str]:
    """The teacher's lines, refused unless there is one per source (an empty one is dropped with
    its pair by the training filter, ``data.drop_empty``)."""
    if len(lines) != expected:
        raise HarnessError(
            f"{shown(path)} holds {len(lines)} translations of {expected} sources: a later "
            "call translates them again"
        )
    return lines
