"""The best single model of docs/results.md: a teacher trained, averaged and made to translate
the training set, a student of the same size trained on the original and the translated pairs
(sequence-level distillation, experiments.distill), the student averaged, its decoding chosen on
val and test scored once.

    python -m experiments.best --seed 1    # train seed 1 (unless its folders are done), score it
    python -m experiments.best --seed 1 --val-gate 40.45  # test only if val reaches 40.45
    python -m experiments.best --seed 2    # the second seed, in a sitting of its own
    python -m experiments.best --seed 1 --rejected "val below the recipe it was to replace"
    python -m experiments.best --report    # only refresh docs/results.md from the result files

A seed's folder, logs/best/seed<n>/ (``--runs`` changes the parent folder), holds three stages,
each made unless it is done (a training folder exists; ``distill/translate.json`` exists), and
never made again while a later stage made from it is kept:

- ``teacher/``: ``python src/train.py experiment=multi30k_best seed=<n>``; its five kept
  checkpoints averaged (src/average.py) and the average scored on val (beam 5, ``avg``);
- ``distill/``: the average's beam-5 translations of train.de and the union files;
- ``student/``: the same recipe on the union files (``data=text_pairs``, val and test still
  Multi30k's) with dropout 0.2 instead of the teacher's 0.3, validated every half epoch, since
  an epoch is twice as long.

A 2-core Xeon with AMX needs 33 to 41 minutes a training stage and 3 to translate; on a slower
CPU each training stage stops at the recipe's ``trainer.max_time`` of 55 minutes.
The driver refuses, with one line and exit code 2, to start from a working tree with uncommitted
changes (commit one seed's result files before the next seed), and to report a training folder
that holds no finished run, one trained by another command or from a tree with uncommitted changes,
or one whose commit's conf/ or src/ differ from the tree's in more than comments: delete such a
folder to train it again (and move a rejected recipe's seed folder aside before the next recipe).
The student's average is decoded on val with beam 5 at every setting of
experiments.decoding_grid (the budget harness's grid: length normalisation ``avg`` or GNMT alpha
0.6 / 1.0 / 1.4, trigram blocking off or on), the simplest setting within 0.2 BLEU of val's best
is chosen, and test_2016_flickr is decoded once with it, then again by a fresh ``src/eval.py``
process, which must reproduce the BLEU to 0.1; the only other decodes of test are src/train.py's
own greedy tests of each stage's best checkpoint when it ends. The student's single best
checkpoint is decoded on val with the chosen setting too, to show what averaging adds. Every
decode is kept in the seed's folder and read back by a later call.

Each seed's record goes under ``runs`` in docs/results/multi30k_best.json, keyed
``distilled_dropout02_seed<n>`` (scores, repetition rate, length ratio, the commands of every
stage, commits, machine, precision, steps, wall times); records of earlier recipes keep their
own tables (:data:`RECIPES`). With ``--rejected``, or when the student's val BLEU falls below
the gate (``--val-gate``, a rule fixed when the seed's folder is made, kept in its gate.json
and binding on every later call), the run is scored on val only (the average's test
is not decoded) and its record, with the reason, goes to docs/results/multi30k_best-rejected.json
under ``<commit>_seed<n>``. Recipes tried by hand are recorded there in the same schema, with
``status`` ``rejected``, ``candidate`` while a rule passed on one seed waits for the other,
or ``adopted`` once the other seed passed too and the trial became the recipe;
``control`` marks the recipe itself run by hand beside a trial (on the trial's teacher, say).
The ``best`` block of docs/results.md is generated from both files, a table per recipe with the
mean once two seeds are in, and seed 1's attention maps of the first three test sentences go to
docs/figures/best_attention_<n>.png.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    REPO,
    corpus,
    describe_machine,
    machine,
    mean_std,
    relative,
    require,
    shown,
    table,
)
from benchmarks.common import commit as tree_commit
from experiments.decoding_grid import BY_NAME, GRID, DecodingSetting, choose
from experiments.distill import TEACHER_DECODING, distil
from experiments.scoring import (
    HarnessError,
    changed_since,
    check_clean_tree,
    checkpoint_option,
    evaluate_with,
    run,
)
from seq2attn.checkpoints.loading import resolve_checkpoint
from seq2attn.report import write_section

RUNS = REPO / "logs" / "best"
RECIPE = "distilled_dropout02"
STUDENT_DROPOUT = 0.2  # the student's; its teacher keeps the experiment's 0.3
# the page's tables, the recipe first; records without a recipe are the teacher recipe alone
RECIPES = {
    RECIPE: f"The distilled students, dropout {STUDENT_DROPOUT} in the student (the recipe):",
    "distilled": "The distilled students at the teacher's dropout 0.3 (the earlier recipe):",
    "distilled_wide": (
        "A wider distilled student (encoder 384 per direction, decoder 768, up to 60 minutes), "
        "tried: on val no better than the dropout-0.3 students' (see above):"
    ),
    None: "The teacher recipe alone, before distillation (its seeds' own runs):",
}
RESULT = REPO / "docs" / "results" / "multi30k_best.json"
REJECTED = REPO / "docs" / "results" / "multi30k_best-rejected.json"
PAGE = REPO / "docs" / "results.md"
FIGURES = REPO / "docs" / "figures"
AVERAGED = 5
DATA = ("data=multi30k",)  # the corpus folder comes from experiments.scoring.run's SEQ2ATTN_DATA
HEATMAPS = 3
TEST = "test_2016_flickr"
SIDES = ("src", "tgt")
REPRODUCE_WITHIN = 0.1  # BLEU


def teacher_command(seed: int, run_dir: Path) -> list[str]:
    """The recipe on Multi30k."""
    return [
        "python",
        "src/train.py",
        "experiment=multi30k_best",
        f"seed={seed}",
        f"hydra.run.dir={shown(run_dir)}",
        "trainer.enable_progress_bar=false",
    ]


def student_command(seed: int, run_dir: Path, distilled: dict[str, Any]) -> list[str]:
    """The recipe on the distillation's union files with the student's dropout, scored on
    Multi30k's val and test, and validated every half epoch (an epoch is twice the teacher's)."""
    data = {"train": (distilled["union_src"], distilled["union_tgt"])}
    for split, name in (("val", "val"), ("test", TEST)):
        data[split] = (shown(corpus() / f"{name}.de.gz"), shown(corpus() / f"{name}.en.gz"))
    files = [
        f"data.{split}_{side}={path}"
        for split, paths in data.items()
        for side, path in zip(SIDES, paths, strict=True)
    ]
    return [
        "python",
        "src/train.py",
        "experiment=multi30k_best",
        f"seed={seed}",
        "data=text_pairs",
        *files,
        "trainer.val_check_interval=0.5",
        f"model.dropout={STUDENT_DROPOUT}",
        f"hydra.run.dir={shown(run_dir)}",
        "trainer.enable_progress_bar=false",
    ]


def train(run_dir: Path, command: list[str]) -> dict[str, Any]:
    """Train ``command`` in ``run_dir`` unless it holds a finished run; what the run recorded,
    after checking that it is this command, from a clean commit whose recipe (conf/) and code
    (src/) are still the ones here."""
    retrain = f"delete {shown(run_dir)} to train it again"
    process = None
    if not run_dir.exists():
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        process = run(command, run_dir.parent / f"{run_dir.name}.log")
    if not (run_dir / "metrics.json").is_file():
        raise HarnessError(f"{shown(run_dir)} holds no finished run (no metrics.json): {retrain}")
    record = json.loads((run_dir / "run.json").read_text())
    git = record.get("git") or {}
    if git.get("dirty") is not False or not git.get("commit"):
        raise HarnessError(
            f"{shown(run_dir)} was not trained from a clean commit (run.json: git {git}): it is "
            f"not reported; {retrain}"
        )
    if record.get("argv", [])[1:] != command[2:]:
        raise HarnessError(
            f"{shown(run_dir)} was trained by {' '.join(record.get('argv', []))!r}, not by "
            f"{' '.join(command[1:])!r}: {retrain}"
        )
    changed = changed_since(git["commit"], "conf", "src")
    if changed:
        raise HarnessError(
            f"{shown(run_dir)} was trained at {git['commit'][:7]}; {', '.join(changed)} changed "
            f"since, so its scores would not be this recipe's: {retrain}"
        )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    precision = record.get("precision") or {}
    return {
        "command": f"SEQ2ATTN_DATA={shown(corpus())} {' '.join(command)}",
        "commit": git["commit"][:7],
        "precision": precision.get("chosen"),
        "precision_reason": precision.get("reason"),
        "wall_s": metrics["time/wall_s"],
        # start to exit and peak RSS of the training process, when this call trained it
        "process_wall_s": process.wall_s if process else None,
        "peak_rss_mb": process.peak_rss_mb if process else None,
        "steps": metrics.get("trainer/global_step"),
        "params": metrics["params"],
        "stop_reason": metrics.get("stop_reason"),
        "val_bleu_greedy_best": metrics["val/bleu_best"],
    }


def average(run_dir: Path) -> tuple[Path, str]:
    """The run's kept checkpoints averaged into ``averaged.ckpt``; its path and command."""
    out = run_dir / "averaged.ckpt"
    command = ["python", "src/average.py", shown(run_dir), "--best", str(AVERAGED)]
    command += ["--out", shown(out)]
    if not out.is_file():
        run(command, run_dir / "average.log")
    return out, " ".join(command)


def decode(checkpoint: Path, split: str, setting: DecodingSetting, folder: Path) -> dict[str, Any]:
    """Beam-5 scores of ``checkpoint`` on ``split`` with ``setting`` (read back when done)."""
    return evaluate_with([checkpoint], split, folder, (*DATA, *setting.seq2attn()))


def heatmaps(checkpoint: Path, setting: DecodingSetting, work: Path) -> list[str]:
    """Attention maps of the first test sentences, copied to docs/figures/."""
    with gzip.open(corpus() / f"{TEST}.de.gz", "rt", encoding="utf-8") as text:
        lines = text.read().splitlines()[:HEATMAPS]
    work.mkdir(parents=True, exist_ok=True)
    (work / "input.de").write_text("".join(line + "\n" for line in lines))
    drawn = [work / f"sentence_{number:05d}.png" for number in range(1, HEATMAPS + 1)]
    command = [
        "python",
        "src/translate.py",
        f"ckpt_path={checkpoint_option([checkpoint])}",
        f"input={shown(work / 'input.de')}",
        f"output={shown(work / 'output.en')}",
        f"attention_dir={shown(work)}",
        *setting.seq2attn(),
        f"hydra.run.dir={shown(work)}",
    ]
    if not all(png.is_file() for png in drawn):
        run(command, work / "translate.log")
    figures = []
    for number, png in enumerate(drawn, 1):
        target = FIGURES / f"best_attention_{number}.png"
        shutil.copyfile(png, target)
        figures.append(shown(target))
    return figures


def teacher(seed_dir: Path, seed: int) -> tuple[Path, dict[str, Any]]:
    """The teacher trained (unless done), averaged and scored on val with the beam it
    translates with; its average and its record."""
    run_dir = seed_dir / "teacher"
    trained = train(run_dir, teacher_command(seed, run_dir))
    averaged, average_command = average(run_dir)
    val = decode(averaged, "val", TEACHER_DECODING, run_dir / "eval" / "averaged-val-avg")
    record = {**trained, "average_command": average_command, "val_bleu": val["bleu"]}
    return averaged, record


def check_stage_order(seed_dir: Path) -> None:
    """Refuse to make a stage again while a later stage, made from its earlier output, is kept."""
    stages = [
        ("teacher", seed_dir / "teacher"),
        ("distill", seed_dir / "distill" / "translate.json"),
        ("student", seed_dir / "student"),
    ]
    for position, (name, done) in enumerate(stages):
        later = [shown(seed_dir / after) for after, path in stages[position + 1 :] if path.exists()]
        if not done.exists() and later:
            raise HarnessError(
                f"{shown(seed_dir / name)} is not done, but {' and '.join(later)} were made from "
                f"an earlier one: delete them too, to make them again from the new {name}"
            )


def fix_gate(seed_dir: Path, requested: float | None) -> float | None:
    """The seed's val gate: ``requested``, kept in gate.json when the seed's folder is made;
    afterwards the kept one, which no call can change."""
    kept = seed_dir / "gate.json"
    if not seed_dir.exists():
        seed_dir.mkdir(parents=True)
        kept.write_text(json.dumps({"val_gate": requested}) + "\n")
    stored = json.loads(kept.read_text())["val_gate"] if kept.is_file() else None
    if requested is not None and requested != stored:
        raise HarnessError(
            f"--val-gate {requested:g}: {shown(seed_dir)} was started with "
            f"{'no gate' if stored is None else f'the gate {stored:g}'}, fixed before training; "
            "it cannot change"
        )
    return stored


def validate(seed_dir: Path, seed: int) -> dict[str, Any]:
    """Teacher, distillation and student (each unless done); the student averaged and its
    decoding chosen on val; the seed's record so far."""
    check_stage_order(seed_dir)
    teacher_average, teacher_record = teacher(seed_dir, seed)
    data = corpus()
    distilled = distil(
        teacher_average, data / "train.de.gz", data / "train.en.gz", seed_dir / "distill", run
    )
    run_dir = seed_dir / "student"
    trained = train(run_dir, student_command(seed, run_dir, distilled))
    averaged, average_command = average(run_dir)
    evals = run_dir / "eval"
    val = {s.name: decode(averaged, "val", s, evals / f"averaged-val-{s.name}") for s in GRID}
    chosen = choose({name: scores["bleu"] for name, scores in val.items()})
    single = resolve_checkpoint(run_dir)
    single_val = decode(single, "val", chosen, evals / f"single-val-{chosen.name}")
    stages = [teacher_record["wall_s"], distilled["translate_wall_s"], trained["wall_s"]]
    return {
        "seed": seed,
        "recipe": RECIPE,
        **trained,
        "average_command": average_command,
        "teacher": teacher_record,
        "distillation": distilled,
        # training the teacher, translating the training set, training the student
        "total_wall_s": sum(stages) if None not in stages else None,
        "machine": describe_machine(machine()),  # that scored it (and trained it, if this call did)
        "decoding": chosen.name,
        "val_bleu": val[chosen.name]["bleu"],
        "val_by_decoding": {
            name: {key: scores[key] for key in ("bleu", "repetition_rate", "length_ratio")}
            for name, scores in val.items()
        },
        "single_checkpoint": {"checkpoint": shown(single), "val_bleu": single_val["bleu"]},
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def score(seed_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """The seed's record from :func:`validate` with test scored once by the chosen setting and
    again by a fresh process."""
    seed = record["seed"]
    chosen = BY_NAME[record["decoding"]]
    run_dir = seed_dir / "student"
    averaged = run_dir / "averaged.ckpt"
    evals = run_dir / "eval"
    test = decode(averaged, "test", chosen, evals / f"averaged-test-{chosen.name}")
    again = decode(averaged, "test", chosen, evals / f"averaged-test-{chosen.name}-again")
    if abs(again["bleu"] - test["bleu"]) > REPRODUCE_WITHIN:
        raise HarnessError(
            f"a fresh src/eval.py scored test {again['bleu']:.2f}, not {test['bleu']:.2f} "
            f"(allowed: {REPRODUCE_WITHIN}): {again['command']}"
        )
    return {
        **record,
        "test_bleu": test["bleu"],
        "test_chrf": test["chrf"],
        "test_ter": test["ter"],
        "repetition_rate": test["repetition_rate"],
        "length_ratio": test["length_ratio"],
        "reproduced_bleu": again["bleu"],
        "eval_command": test["command"],
        "signature": test["signatures"]["bleu"],
        "figures": heatmaps(averaged, chosen, run_dir / "heatmaps") if seed == 1 else [],
    }


def markdown(result: dict[str, Any], rejected: dict[str, Any]) -> str:
    """The seeds' table (and their mean), the val grid, how each run was made, then the val
    scores of the recipes tried by hand that wait for another seed, were adopted or were
    rejected, and of the controls."""
    lines = []
    for recipe, title in RECIPES.items():
        seeds = [r for r in result["runs"].values() if r.get("recipe") == recipe]
        if seeds:
            lines.append(f"{title}\n")
            lines += seeds_markdown(seeds)
    for status, title, why in TRIED:
        runs = [r for r in rejected["runs"].values() if r.get("status", "rejected") == status]
        if runs:
            lines.append(f"{title} (their averages scored on val only, never on test):\n")
            lines.append(table([*TRIED_HEADERS, why], [tried_row(r) for r in runs]))
    return "\n".join(lines)


# the records of multi30k_best-rejected.json by status: the table's title and last column
TRIED = (
    ("candidate", "Candidates that passed their rule on one seed, waiting for the other", "rule"),
    ("adopted", "Trials that passed their rule on both seeds and became the recipe", "rule"),
    ("rejected", "Rejected recipes", "why rejected"),
    ("control", "Controls: the recipe itself, run by hand beside a trial", "what it controls"),
)
TRIED_HEADERS = ["recipe at commit", "steps", "train min", "precision"]
TRIED_HEADERS += ["decoding (chosen on val)", "val BLEU", "best greedy val BLEU"]


def tried_row(r: dict[str, Any]) -> list[Any]:
    """A row of :data:`TRIED`'s tables."""
    return [
        f"{r['commit']}, seed {r['seed']}",
        f"{r['steps']:,.0f}",
        f"{(r.get('total_wall_s') or r['wall_s']) / 60:.0f}",
        r["precision"],
        r["decoding"],
        f"{r['val_bleu']:.2f}",
        f"{r['val_bleu_greedy_best']:.2f}",
        r["reason"],
    ]


def seeds_markdown(seeds: list[dict[str, Any]]) -> list[str]:
    """The table of one recipe's seeds, their val grid and how each was made."""
    runs = sorted(seeds, key=lambda r: r["seed"])
    rows = [
        [
            r["seed"],
            f"{r['steps']:,.0f}",
            f"{(r.get('total_wall_s') or r['wall_s']) / 60:.0f}",
            r["precision"],
            r["decoding"],
            f"{r['val_bleu']:.2f}",
            f"{r['test_bleu']:.2f}",
            f"{r['test_chrf']:.2f}",
            f"{r['repetition_rate']:.1f}",
            f"{r['length_ratio']:.3f}",
        ]
        for r in runs
    ]
    if len(runs) > 1:
        rows.append(
            [
                f"mean of {len(runs)}",
                "",
                "",
                "",
                "",
                mean_std([r["val_bleu"] for r in runs]),
                mean_std([r["test_bleu"] for r in runs]),
                mean_std([r["test_chrf"] for r in runs]),
                mean_std([r["repetition_rate"] for r in runs], ".1f"),
                mean_std([r["length_ratio"] for r in runs], ".3f"),
            ]
        )
    headers = ["seed", "steps", "train min", "precision", "decoding (chosen on val)", "val BLEU"]
    headers += ["test BLEU", "test chrF", "repetition %", "length ratio"]
    lines = [table(headers, rows)]
    grid = [
        [s.name]
        + [
            f"{r['val_by_decoding'][s.name]['bleu']:.2f} "
            f"({r['val_by_decoding'][s.name]['repetition_rate']:.1f} %)"
            for r in runs
        ]
        for s in GRID
    ]
    grid.append(
        ["single best checkpoint, chosen setting"]
        + [f"{r['single_checkpoint']['val_bleu']:.2f}" for r in runs]
    )
    lines.append("Val BLEU (repetition rate) of each run's average, by decoding setting:\n")
    lines.append(table(["decoding", *(f"seed {r['seed']}" for r in runs)], grid))
    for r in runs:
        if "teacher" in r:
            lines.append(distillation_markdown(r))
        lines.append(
            f"Seed {r['seed']}: `{r['command']}` at commit {r['commit']} on {r['machine']} "
            f"({r['precision']}: {r['precision_reason']}), {r['steps']:,.0f} steps in "
            f"{r['wall_s'] / 60:.0f} min, {r['params']:,.0f} parameters; averaged by "
            f"`{r['average_command']}`; test scored by `{r['eval_command']}` (a fresh process "
            f"gave {r['reproduced_bleu']:.2f}).\n"
        )
    commits, machines = ({r[key] for r in runs} for key in ("commit", "machine"))
    if len(commits) > 1:
        lines.append(
            "The seeds were trained at different commits (above): the mean spans whatever "
            "changed in between.\n"
        )
    if len(machines) > 1:
        lines.append(
            "The seeds ran on different machines (above): the time limit gives a faster one "
            "more steps.\n"
        )
    lines.append(f"Signature: `{runs[0]['signature']}`.\n")
    return lines


def distillation_markdown(r: dict[str, Any]) -> str:
    """How a seed's teacher was trained and made the student's data."""
    teacher, distilled = r["teacher"], r["distillation"]
    return (
        f"Seed {r['seed']}'s teacher: `{teacher['command']}` at commit {teacher['commit']} "
        f"({teacher['precision']}), {teacher['steps']:,.0f} steps in "
        f"{teacher['wall_s'] / 60:.0f} min; averaged by `{teacher['average_command']}`, which "
        f"scores val {teacher['val_bleu']:.2f} (beam 5, `avg`) and translated the training "
        f"sources in {distilled['translate_wall_s'] / 60:.1f} min by "
        f"`{distilled['translate_command']}`; {distilled['pairs']:,} pairs were written for the "
        "student (before its length filters). The train minutes above add the teacher's, the "
        "translation's and the student's; the steps and precision are the student's.\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--seed", type=int, help="train (unless done) and score this seed")
    group.add_argument("--report", action="store_true", help="only refresh the page")
    parser.add_argument(
        "--rejected",
        metavar="REASON",
        help="with --seed: score val only and record the recipe as rejected, for this reason",
    )
    parser.add_argument(
        "--val-gate",
        type=float,
        metavar="BLEU",
        help="with --seed, before its folder exists: score the student's average on test only "
        "if its val BLEU reaches BLEU, else record the recipe as rejected (the rule, fixed "
        "before training and kept with the seed)",
    )
    parser.add_argument(
        "--runs", type=Path, default=RUNS, help=f"the runs' parent folder (default {shown(RUNS)})"
    )
    args = parser.parse_args(argv)
    if args.seed is None and (args.rejected is not None or args.val_gate is not None):
        parser.error("--rejected and --val-gate go with --seed")
    if args.seed is not None:
        if args.seed < 1:
            parser.error(f"--seed {args.seed}: must be 1 or more")
        require("python -m experiments.best", corpus() / "train.de.gz")
        seed_dir = args.runs.resolve() / f"seed{args.seed}"
        try:
            check_clean_tree(tree_commit())
            gate = fix_gate(seed_dir, args.val_gate)
            record = validate(seed_dir, args.seed) | {"val_gate": gate}
            reason, val = args.rejected, round(record["val_bleu"], 2)
            if reason is None and gate is not None and val < gate:
                reason = f"val {val:.2f} below the gate {gate:.2f} set before training"
            if reason is None:
                record = score(seed_dir, record)
                path, key = RESULT, f"{RECIPE}_seed{args.seed}"
            else:
                record |= {"status": "rejected", "reason": reason}
                path, key = REJECTED, f"{record['commit']}_seed{args.seed}"
        except HarnessError as refusal:
            print(f"experiments.best: {refusal}", file=sys.stderr)
            sys.exit(2)
        kept = load(path)
        kept["runs"][key] = relative(record)
        path.write_text(json.dumps(kept, indent=2) + "\n")
        print(f"wrote {shown(path)}")
    if not (RESULT.is_file() or REJECTED.is_file()):
        print(f"experiments.best: no {shown(RESULT)} yet: run --seed 1 first", file=sys.stderr)
        sys.exit(2)
    page = markdown(load(RESULT), load(REJECTED))
    write_section(page, PAGE, "best")
    print(page, end="")


def load(path: Path) -> dict[str, Any]:
    """A result file's records, or none yet."""
    return json.loads(path.read_text()) if path.is_file() else {"runs": {}}


if __name__ == "__main__":
    main()
