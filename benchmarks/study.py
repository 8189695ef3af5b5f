"""The attention study of docs/results.md: run its rows, keep their result files, refresh the page.

    python benchmarks/study.py             # run every missing run, two at a time, then report
    python benchmarks/study.py --list      # the rows, their commands, and which runs are done
    python benchmarks/study.py --report    # only refresh the tables and figures of the page

Every run is ``python src/train.py experiment=study cpu.num_threads=1 <row overrides> seed=<s>``
(one thread each, two side by side on a 2-core machine) with its outputs and log under
logs/study/. A finished run's result file (config, metrics, commit, command) goes to docs/results/;
a run whose result file exists is not run again, so the study resumes across sessions. The tables
between the ``<!-- report:<section> -->`` markers of docs/results.md, the bar charts in
docs/figures/ and the README's headline table (``<!-- report:headline -->``) are generated from
the result files by the report command's library.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from seq2attn.report import collect_runs, export, report, variants_table, write_section

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
PAGE = ROOT / "docs" / "results.md"
README = ROOT / "README.md"
FIGURES = ROOT / "docs" / "figures"
LOGS = ROOT / "logs" / "study"
BASE = ("experiment=study", "cpu.num_threads=1")
HEADLINE_SEEDS = (1, 2, 3)
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

    @property
    def slug(self) -> str:
        """A folder name from the overrides: ``attention-none``, ``base`` for no change."""
        parts = [o.replace("=", "-").replace(".", "_") for o in self.overrides]
        return "_".join(parts) or "base"


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
            overrides = (f"scorer={scorer}",) if scorer != "general" else ()
            if feeding == "true":
                overrides += ("attention.input_feeding=true",)
            rows.append(Row("scorers", overrides))
    rows += [
        Row("cells", (f"cell={cell}",) if cell != "gru" else ()) for cell in ("rnn", "gru", "lstm")
    ]
    rows += [
        Row("reversal", ("attention=none",)),
        Row("reversal", ("attention=none", "model.reverse_source=true")),
        Row("teacher_forcing", ()),
        Row("teacher_forcing", ("teacher_forcing=constant", "teacher_forcing.p=0.75")),
        # 1.0 -> 0.5 over the 1,000 steps of a run
        Row("teacher_forcing", ("teacher_forcing=linear", "teacher_forcing.decay_steps=1000")),
        # k / (k + exp(i / k)) with k = 150: 0.99 at the start, 0.5 (its floor) from step ~750
        Row("teacher_forcing", ("teacher_forcing=inverse_sigmoid", "teacher_forcing.k=150")),
    ]
    return rows


ROWS = _rows()
SECTIONS = list(dict.fromkeys(row.section for row in ROWS))


@dataclass(frozen=True)
class Job:
    """One training run of a row."""

    overrides: tuple[str, ...]
    slug: str
    seed: int

    @property
    def args(self) -> list[str]:
        return [*BASE, *self.overrides, f"seed={self.seed}"]

    @property
    def folder(self) -> Path:
        return LOGS / f"{self.slug}-seed{self.seed}"

    @property
    def command(self) -> str:
        return "python src/train.py " + " ".join(self.args)

    def result_file(self) -> Path:
        """docs/results/<run_name>-seed<s>.json, ``run_name`` as the composed config has it."""
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
            cfg = compose("train", overrides=self.args, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        return RESULTS / f"{cfg.run_name}-seed{self.seed}.json"


def jobs() -> list[Job]:
    """Every run of the study once (rows shared by sections run once), seed 1 of all rows first."""
    unique: dict[tuple[tuple[str, ...], int], Job] = {}
    for seed in sorted({s for row in ROWS for s in row.seeds}):
        for row in ROWS:
            if seed in row.seeds:
                unique.setdefault((row.overrides, seed), Job(row.overrides, row.slug, seed))
    return list(unique.values())


def run_all(pending: list[Job], parallel: int) -> list[Job]:
    """Run the jobs ``parallel`` at a time; export each finished run; return the failed ones."""
    LOGS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SEQ2ATTN_DATA": os.environ.get("SEQ2ATTN_DATA", str(_corpus()))}
    queue, running, failed = list(pending), {}, []
    while queue or running:
        while queue and len(running) < parallel:
            job = queue.pop(0)
            log = (LOGS / f"{job.folder.name}.log").open("w")
            command = [sys.executable, "src/train.py", *job.args, f"hydra.run.dir={job.folder}"]
            command.append("trainer.enable_progress_bar=false")
            running[job] = (
                subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log),
                time.time(),
            )
            print(f"started  {job.folder.name}: {job.command}", flush=True)
        time.sleep(5)
        for job, (process, started) in list(running.items()):
            if process.poll() is None:
                continue
            del running[job]
            minutes = (time.time() - started) / 60
            if process.returncode != 0:
                failed.append(job)
                print(
                    f"FAILED   {job.folder.name} (exit {process.returncode}, log "
                    f"{LOGS / job.folder.name}.log)",
                    flush=True,
                )
                continue
            (run,), _ = collect_runs(job.folder)
            (path,) = export([run], RESULTS)
            bleu = run.metrics.get("test/bleu", float("nan"))
            print(
                f"finished {job.folder.name}: test BLEU {bleu:.2f} in {minutes:.1f} min -> "
                f"{path.relative_to(ROOT)} ({len(queue)} queued)",
                flush=True,
            )
    return failed


def section_files(section: str) -> list[Path]:
    """The result files of a section's rows that exist."""
    files = []
    for row in (r for r in ROWS if r.section == section):
        for seed in row.seeds:
            path = Job(row.overrides, row.slug, seed).result_file()
            if path.is_file():
                files.append(path)
    return files


def refresh_page() -> None:
    """Each section's table (from its rows' result files) and bar chart into docs/results.md;
    the headline variants (mean ± std of the attention section) into the README."""
    for section in SECTIONS:
        files = section_files(section)
        if files:
            chart = FIGURES / f"study_{section}.png"
            report(files, chart=chart, into=(PAGE, section))
            print(f"{section}: {len(files)} runs -> {PAGE.name}, {chart.relative_to(ROOT)}")
    headline = [run for path in section_files("attention") for run in collect_runs(path)[0]]
    if headline:
        write_section(variants_table(headline) + "\n", README, "headline")
        print(f"headline: {len(headline)} runs -> {README.name}")


def _corpus() -> Path:
    return ROOT.parent / "shared" / "data" / "multi30k"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--list", action="store_true", help="show the runs and stop")
    parser.add_argument("--report", action="store_true", help="only refresh the page")
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (default 2)")
    args = parser.parse_args()
    if args.report:
        refresh_page()
        return
    all_jobs = jobs()
    pending = [job for job in all_jobs if not job.result_file().is_file()]
    if args.list:
        for job in all_jobs:
            print(f"{'todo' if job in pending else 'done'}  {job.command}")
        return
    for job in [job for job in pending if (job.folder / "metrics.json").is_file()]:
        # finished earlier but not exported (the study was stopped in between)
        export(collect_runs(job.folder)[0], RESULTS)
        pending.remove(job)
    print(f"{len(all_jobs) - len(pending)} of {len(all_jobs)} runs done; running {len(pending)}")
    failed = run_all(pending, args.parallel)
    refresh_page()
    if failed:
        sys.exit(f"{len(failed)} run(s) failed: " + ", ".join(job.folder.name for job in failed))


if __name__ == "__main__":
    main()
