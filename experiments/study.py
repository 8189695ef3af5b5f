"""The attention study of docs/results.md: one Hydra multirun of the runs whose result files are
missing, their result files, then the page's tables and figures.

    python -m experiments.study             # run what is missing (joblib, two at a time), report
    python -m experiments.study --list      # every run's command, and whether it is done
    python -m experiments.study --limit 8   # only the first 8 missing runs (seed 1 first)
    python -m experiments.study --skip 3000steps  # leave out the runs whose command has this
    python -m experiments.study --report    # collect finished runs, refresh tables and figures

    python -m experiments.study --study toy # the toy study (the built-in corpus), likewise

Every run is ``python src/train.py experiment=study cpu.num_threads=1 <row overrides> seed=<s>``
(``experiment=toy_study`` for the toy study; one thread each, two side by side on a 2-core
machine). Its result file (config, metrics, commit, that command, and each validation's val/
metrics) is docs/results/[toy/]<run_name>-seed<s>.json; a run whose result file exists is
not run again, so a study stopped part-way continues where it stopped. The runs still missing
go to one ``src/train.py -m hydra/launcher=joblib`` multirun under logs/study/<date>_<time>/:
each of them is an experiment config written there (``experiment=<run>``: it includes
``experiment=study`` and sets the rest of the command above, so it composes the same config).
Runs that finished in an earlier, interrupted multirun are collected first, and a run killed
part-way resumes from the newest ``checkpoints/last.ckpt`` of its folder.
The tables between the ``<!-- report:<section> -->`` markers of docs/results.md, the bar charts
in docs/figures/ and the README's headline table (``<!-- report:headline -->``) are generated from
the result files by the report command's library (seq2attn.report).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from benchmarks.common import CONF, REPO, corpus, relative, require, shown
from seq2attn.report import collect_runs, export, report, variants_table, write_section
from seq2attn.report.chart import plot_curves

RESULTS = REPO / "docs" / "results"
PAGE = REPO / "docs" / "results.md"
README = REPO / "README.md"
FIGURES = REPO / "docs" / "figures"
LOGS = REPO / "logs" / "study"
# every run's command starts with its study's experiment, then one thread
THREADS = "cpu.num_threads=1"
HEADLINE_SEEDS = (1, 2, 3)
# the toy study's curves over training, one panel each
CURVES = ("val/aer", "val/attention_entropy", "val/bleu")
# The best Luong row of the scorer section by validation BLEU (34.02, seed 1): a headline row.
BEST_LUONG = ("scorer=scaled_general",)
# The best before the scaled general score joined the study (val 33.52): kept at 3 seeds too.
EARLIER_BEST_LUONG = ("scorer=scaled_dot", "attention.input_feeding=true")


@dataclass(frozen=True)
class Row:
    """One line of a section's table: the overrides of the study's base and the seeds run."""

    section: str
    overrides: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (1,)


def _rows() -> list[Row]:
    rows = [
        Row("attention", ("attention=none",), HEADLINE_SEEDS),
        Row("attention", ("attention=bahdanau",), HEADLINE_SEEDS),
        Row("attention", (), HEADLINE_SEEDS),  # the base: general scorer
        Row("attention", BEST_LUONG, HEADLINE_SEEDS),
        Row("attention", EARLIER_BEST_LUONG, HEADLINE_SEEDS),
    ]
    for feeding in ("false", "true"):
        for scorer in (
            "dot",
            "general",
            "concat",
            "mlp",
            "location",
            "scaled_dot",
            "scaled_general",
        ):
            overrides: tuple[str, ...] = (f"scorer={scorer}",) if scorer != "general" else ()
            if feeding == "true":
                overrides += ("attention.input_feeding=true",)
            rows.append(Row("scorers", overrides))
    # The control for the general score: W starts at the scaled score's scale, Adam's steps on it
    # stay full-size.
    rows += [
        Row("general_control", (), HEADLINE_SEEDS),
        Row("general_control", ("scorer.scale_init=true", "name_suffix=-scale_init")),
        Row("general_control", BEST_LUONG, HEADLINE_SEEDS),
    ]
    # The one-factor rows below change the best base by validation BLEU (Luong, scaled general
    # score, no input feeding; 3 seeds), whose attention works, unlike the general score's at
    # this learning rate.
    base = BEST_LUONG
    rows += [Row("cells", (*base, f"cell={cell}"), HEADLINE_SEEDS) for cell in ("rnn", "lstm")]
    rows += [
        Row("cells", (*base,), HEADLINE_SEEDS),
        Row("input_feeding", (*base,), HEADLINE_SEEDS),
        Row("input_feeding", (*base, "attention.input_feeding=true"), HEADLINE_SEEDS),
    ]
    # Sutskever et al. reversed the source of a unidirectional encoder without attention; with
    # a bidirectional encoder reversal only swaps the two directions' roles.
    unidirectional = ("attention=none", "model.bidirectional=false", "name_suffix=-unidirectional")
    rows += [
        Row("reversal", unidirectional, HEADLINE_SEEDS),
        Row("reversal", (*unidirectional, "model.reverse_source=true"), HEADLINE_SEEDS),
        Row("reversal", ("attention=none",), HEADLINE_SEEDS),
        Row("reversal", ("attention=none", "model.reverse_source=true")),
    ]
    # Scheduled sampling as Bengio et al. ran it: the token fed back is sampled from the model.
    sampled = ("teacher_forcing.feedback=sample", "name_suffix=-sample")
    rows += [
        Row("teacher_forcing", (*base,), HEADLINE_SEEDS),
        # k / (k + exp(i / k)) with k = 150: 0.99 at the start, 0.5 (its floor) from step ~750
        Row(
            "teacher_forcing",
            (*base, "teacher_forcing=inverse_sigmoid", "teacher_forcing.k=150", *sampled),
            HEADLINE_SEEDS,
        ),
        Row(
            "teacher_forcing",
            (*base, "teacher_forcing=constant", "teacher_forcing.p=0.75", *sampled),
        ),
        # 1.0 -> 0.5 over the 1,000 steps of a run
        Row(
            "teacher_forcing",
            (*base, "teacher_forcing=linear", "teacher_forcing.decay_steps=1000", *sampled),
        ),
    ]
    # Exposure bias where it could matter: 3,000 steps, teacher forcing always against scheduled
    # sampling (sampled feedback; k = 450 reaches the 0.5 floor near step 2,750), each with the
    # gap between the free-running and the teacher-forced validation loss.
    longer = ("trainer.max_steps=3000", "free_running_loss=true")
    rows += [
        Row("exposure_bias", (*base, *longer, "name_suffix=-3000steps"), (1, 2)),
        Row(
            "exposure_bias",
            (
                *base,
                "teacher_forcing=inverse_sigmoid",
                "teacher_forcing.k=450",
                "teacher_forcing.feedback=sample",
                *longer,
                "name_suffix=-sample-3000steps",
            ),
            (1, 2),
        ),
    ]
    # The one-factor rows first run on the general base, whose attention barely works at this
    # learning rate: kept as the record of that failure, superseded by the rows above.
    rows += [
        Row("general_base", ("cell=rnn",)),
        Row("general_base", ("cell=lstm",)),
        Row("general_base", ("attention.input_feeding=true",)),
        Row("general_base", ("teacher_forcing=constant", "teacher_forcing.p=0.75")),
        Row("general_base", ("teacher_forcing=linear", "teacher_forcing.decay_steps=1000")),
        Row("general_base", ("teacher_forcing=inverse_sigmoid", "teacher_forcing.k=150")),
    ]
    return rows


def _toy_rows() -> list[Row]:
    """GRU, both wirings x every scorer and no attention, 3 seeds; the cells for one Bahdanau
    and one Luong scorer, 1 seed."""
    scorers = (
        "additive",
        "concat",
        "dot",
        "general",
        "location",
        "mlp",
        "scaled_dot",
        "scaled_general",
    )
    rows = [Row("toy_scorers", ("attention=none",), HEADLINE_SEEDS)]
    rows += [
        Row("toy_scorers", (f"attention={wiring}", f"scorer={scorer}"), HEADLINE_SEEDS)
        for wiring in ("bahdanau", "luong")
        for scorer in scorers
    ]
    for wiring, scorer in (("bahdanau", "additive"), ("luong", "scaled_general")):
        rows += [
            Row("toy_cells", (f"attention={wiring}", f"scorer={scorer}", f"cell={cell}"))
            for cell in ("rnn", "lstm")
        ]
        rows.append(Row("toy_cells", (f"attention={wiring}", f"scorer={scorer}")))
    return rows


ROWS = _rows()
TOY_ROWS = _toy_rows()


@dataclass(frozen=True)
class StudyRun:
    """One training run of a row: its overrides of the study's base and its seed."""

    overrides: tuple[str, ...]
    seed: int
    experiment: str = "study"

    @property
    def args(self) -> list[str]:
        return [f"experiment={self.experiment}", THREADS, *self.overrides, f"seed={self.seed}"]

    @property
    def command(self) -> str:
        return "python src/train.py " + " ".join(self.args)

    @property
    def name(self) -> str:
        """The name of its experiment config in a multirun, from the overrides:
        ``study-scorer-dot_attention_input_feeding-true-seed1``, ``study-base-seed1``."""
        parts = [o.replace("=", "-").replace(".", "_") for o in self.overrides]
        return f"{self.experiment}-{'_'.join(parts) or 'base'}-seed{self.seed}"

    @cached_property
    def result_name(self) -> str:
        """``<run_name>-seed<s>.json``, ``run_name`` as the composed config has it."""
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            cfg = compose("train", overrides=self.args, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return f"{cfg.run_name}-seed{self.seed}.json"

    def experiment_config(self, resume_from: Path | None = None) -> str:
        """This run as an experiment config: its study's experiment, then the rest of its
        command (group choices as defaults-list overrides, values as keys); ``resume_from``, a
        checkpoint of an interrupted run of it, becomes its ``ckpt_path``."""
        given = [THREADS, *self.overrides, f"seed={self.seed}"]
        if resume_from is not None:
            given.append(f"ckpt_path={shown(resume_from)}")
        groups = [o for o in given if (CONF / o.split("=", 1)[0]).is_dir()]
        values = OmegaConf.from_dotlist([o for o in given if o not in groups])
        lines = ["# @package _global_", f"# {self.command}", "defaults:", f"  - {self.experiment}"]
        lines += [f"  - override /{o.replace('=', ': ', 1)}" for o in groups]
        return "\n".join(lines) + "\n" + OmegaConf.to_yaml(values)


def study_runs(rows: Sequence[Row] = ROWS, experiment: str = "study") -> list[StudyRun]:
    """Every run of the study once (rows shared by sections run once), seed 1 of all rows
    first."""
    unique: dict[tuple[tuple[str, ...], int], StudyRun] = {}
    for seed in sorted({s for row in rows for s in row.seeds}):
        for row in rows:
            if seed in row.seeds:
                run = StudyRun(row.overrides, seed, experiment)
                unique.setdefault((row.overrides, seed), run)
    return list(unique.values())


@dataclass(frozen=True)
class Study:
    """Rows trained from one experiment config, with where their result files and logs go."""

    experiment: str
    rows: tuple[Row, ...]
    results: Path
    logs: Path
    # the Multi30k files are needed (else the built-in corpus)
    needs_multi30k: bool

    @property
    def runs(self) -> list[StudyRun]:
        return study_runs(self.rows, self.experiment)

    @property
    def sections(self) -> list[str]:
        return list(dict.fromkeys(row.section for row in self.rows))

    def section_files(self, section: str) -> list[Path]:
        """The result files of a section's rows that exist, in the rows' order."""
        runs = [
            StudyRun(row.overrides, seed, self.experiment)
            for row in self.rows
            if row.section == section
            for seed in row.seeds
        ]
        paths = [self.results / run.result_name for run in runs]
        return [path for path in paths if path.is_file()]


STUDIES = {
    "multi30k": Study("study", tuple(ROWS), RESULTS, LOGS, needs_multi30k=True),
    "toy": Study("toy_study", tuple(TOY_ROWS), RESULTS / "toy", REPO / "logs" / "toy_study", False),
}


def missing(runs: Sequence[StudyRun], results: Path = RESULTS) -> list[StudyRun]:
    """The runs whose result file is not in ``results``."""
    return [run for run in runs if not (results / run.result_name).is_file()]


def selected(pending: Sequence[StudyRun], skip: Sequence[str], limit: int | None) -> list[StudyRun]:
    """The runs to run now: none whose command holds a ``skip`` text, at most ``limit``."""
    kept = [run for run in pending if not any(text in run.command for text in skip)]
    return kept[:limit]


def export_finished(runs: Sequence[StudyRun], logs: Path = LOGS, results: Path = RESULTS) -> int:
    """Write the result file of every run of ``runs`` that finished under ``logs`` and has none
    yet, with its single-run command and paths relative to the repository; how many."""
    by_name = {run.result_name: run for run in missing(runs, results)}
    if not by_name or not logs.is_dir():
        return 0
    finished, _ = collect_runs(logs)
    exported = 0
    for found in finished:
        run = by_name.pop(
            f"{found.config.get('run_name')}-seed{found.config.get('seed')}.json", None
        )
        if run is not None:
            export(
                [dataclasses.replace(found, config=relative(found.config), command=run.command)],
                results,
            )
            exported += 1
    return exported


def interrupted(run: StudyRun, logs: Path = LOGS) -> Path | None:
    """The newest resume checkpoint (``checkpoints/last.ckpt``) of an unfinished folder of
    ``run`` under ``logs`` (same run name and seed), None if there is none."""
    if not logs.is_dir():
        return None
    _, unfinished = collect_runs(logs)
    found = []
    for folder in unfinished:
        checkpoint = folder / "checkpoints" / "last.ckpt"
        if checkpoint.is_file():
            config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
            if f"{config.get('run_name')}-seed{config.get('seed')}.json" == run.result_name:
                found.append(checkpoint)
    return max(found, key=lambda path: path.stat().st_mtime, default=None)


def multirun(
    pending: Sequence[StudyRun], sweep_dir: Path, jobs: int, multi30k: bool, logs: Path = LOGS
) -> int:
    """Train ``pending`` in one joblib multirun under ``sweep_dir``, each run killed part-way
    before resumed from its newest checkpoint; the multirun's exit code."""
    configs = sweep_dir / "conf" / "experiment"
    configs.mkdir(parents=True, exist_ok=True)
    for run in pending:
        checkpoint = interrupted(run, logs)
        if checkpoint is not None:
            print(f"{run.name}: resumed from {shown(checkpoint)}", flush=True)
        (configs / f"{run.name}.yaml").write_text(run.experiment_config(checkpoint))
    command = [
        sys.executable,
        "src/train.py",
        "-m",
        f"hydra.searchpath=[file://{shown(sweep_dir / 'conf')}]",
        f"experiment={','.join(run.name for run in pending)}",
        "trainer.enable_progress_bar=false",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={jobs}",
        f"hydra.sweep.dir={shown(sweep_dir)}",
    ]
    print(f"$ {' '.join(['python', *command[1:]])}", flush=True)
    env = {**os.environ, **({"SEQ2ATTN_DATA": shown(corpus())} if multi30k else {})}
    return subprocess.run(command, cwd=REPO, env=env).returncode


def refresh_page(study: Study) -> None:
    """Each section's table (from its rows' result files) and bar chart into docs/results.md;
    for the Multi30k study the headline variants (mean ± std of the attention section) into the
    README, for the toy study the AER and entropy curves over training."""
    for section in study.sections:
        files = study.section_files(section)
        if files:
            chart = FIGURES / f"study_{section}.png"
            report(files, chart=chart, into=(PAGE, section))
            print(f"{section}: {len(files)} runs -> {PAGE.name}, {shown(chart)}")
    if study.experiment == "toy_study":
        runs = [run for path in study.section_files("toy_scorers") for run in collect_runs(path)[0]]
        if runs:
            figure = plot_curves(runs, FIGURES / "toy_study_curves.png", CURVES)
            print(f"curves: {len(runs)} runs -> {shown(figure)}")
        return
    headline = [run for path in study.section_files("attention") for run in collect_runs(path)[0]]
    if headline:
        write_section(variants_table(headline) + "\n", README, "headline")
        print(f"headline: {len(headline)} runs -> {README.name}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--study", choices=sorted(STUDIES), default="multi30k", help="which study (multi30k)"
    )
    parser.add_argument("--list", action="store_true", help="show the runs and stop")
    parser.add_argument(
        "--report", action="store_true", help="collect finished runs and refresh the page"
    )
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (default 2)")
    parser.add_argument(
        "--limit", type=int, help="run only the first N missing runs (seed 1 of every row first)"
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="TEXT",
        help="leave out the missing runs whose command contains TEXT (repeatable)",
    )
    args = parser.parse_args()
    study = STUDIES[args.study]
    runs = study.runs
    if args.report:
        collected = export_finished(runs, study.logs, study.results)
        print(f"{collected} finished run(s) collected from {shown(study.logs)}")
        refresh_page(study)
        return
    if args.list:
        pending = missing(runs, study.results)
        for run in runs:
            print(f"{'todo' if run in pending else 'done'}  {run.command}")
        return
    if study.needs_multi30k:
        require("python -m experiments.study", corpus() / "train.de.gz")
    collected = export_finished(runs, study.logs, study.results)
    pending = missing(runs, study.results)
    chosen = selected(pending, args.skip, args.limit)
    print(
        f"{len(runs) - len(pending)} of {len(runs)} runs done ({collected} collected from "
        f"{shown(study.logs)}); running {len(chosen)}"
    )
    pending = chosen
    code = 0
    if pending:
        sweep_dir = study.logs / time.strftime("%Y-%m-%d_%H-%M-%S")
        code = multirun(pending, sweep_dir, args.parallel, study.needs_multi30k, study.logs)
        export_finished(runs, study.logs, study.results)
    refresh_page(study)
    failed = missing(pending, study.results)
    if code or failed:
        sys.exit(
            f"{len(failed)} run(s) failed, e.g. `{failed[0].command}`"
            if failed
            else f"the multirun exited with {code}"
        )


if __name__ == "__main__":
    main()
