"""Equal wall-clock budget: R1 and R2 trained for 20 minutes by seq2attn, OpenNMT-py and JoeyNMT.

    python -m experiments.budget [--minutes 20] [--tools seq2attn,opennmt,joeynmt] [--resume]
    python -m experiments.budget --tools seq2attn --models r2 --name budget_r2_ls03 \
        --status rejected -- label_smoothing=0.3
    python -m experiments.budget --report   # only refresh budget.md and docs/results.md

Multi30k de->en on the shared SentencePiece model, one training process at a time on the whole
machine. seq2attn trains ``experiment=budget_r1`` / ``budget_r2`` (the speed references' shapes
with this platform's recipe) plus any Hydra overrides given after ``--``, stopped by
``trainer.max_time`` if its step budget has not ended it first; the peers train the speed
benchmark's R1/R2 configs (benchmarks.peers) and are stopped after the same minutes of process
wall time, keeping their newest checkpoint. Every model then translates test_2016_flickr with
beam 5, scored by sacreBLEU (detokenised, cased, 13a); seq2attn's length penalty is chosen on val
(experiments.scoring.LENGTH_PENALTIES) before test is decoded with it.

Writes benchmarks/results/<name>.json and .md (``--name``, default ``budget``), with the runs'
``status``: ``kept`` (the default; the ``budget`` result also fills the ``budget`` block of
docs/results.md), or ``rejected`` / ``replaced`` for a tried recipe that val did not choose.
``--resume`` reuses finished runs from the work folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import peers
from benchmarks.common import (
    REPO,
    RESULTS,
    SPM_MODEL,
    command_line,
    commit,
    corpus,
    describe_machine,
    machine,
    require,
    run_measured,
    shown,
    table,
    write_result,
)
from experiments.scoring import LENGTH_PENALTIES, evaluate
from seq2attn.report import write_section

PAGE = REPO / "docs" / "results.md"
TOOLS = ("seq2attn", *peers.PEERS)
STATUSES = ("kept", "rejected", "replaced")
GOALS = {"r1": 38.0, "r2": 40.0}


def seq2attn_run(model: str, minutes: float, ws: Path, overrides: list[str]) -> dict[str, Any]:
    """Train experiment=budget_<model> within ``minutes``; its test BLEU (beam 5) and figures."""
    folder = ws / f"seq2attn_{model}"
    shutil.rmtree(folder, ignore_errors=True)  # an earlier run's checkpoints would mix in
    hours, rest = divmod(int(minutes * 60), 3600)
    command = [
        sys.executable,
        "src/train.py",
        f"experiment=budget_{model}",
        f"trainer.max_time=00:{hours:02d}:{rest // 60:02d}:{rest % 60:02d}",
        f"data.root={shown(corpus())}",
        f"data.spm_model={shown(SPM_MODEL)}",
        f"hydra.run.dir={shown(folder)}",
        "trainer.enable_progress_bar=false",
        *overrides,
    ]
    process = run_measured(command, ws / f"seq2attn_{model}.log", cwd=REPO)
    metrics = json.loads((folder / "metrics.json").read_text())
    return {
        # the test score of training's own decoding (beam 5, length penalty 0.6)
        "train_test_bleu": metrics["test/bleu"],
        "val_bleu": metrics.get("val/bleu"),
        "steps": metrics.get("trainer/global_step"),
        **run_record(folder),
        "wall_s": process.wall_s,
        "peak_rss_mb": process.peak_rss_mb,
        "command": command_line(command),
        "run_dir": shown(folder),
    }


def run_record(folder: Path) -> dict[str, Any]:
    """What the table shows of a run from its own files: mean tokens/s and commit."""
    return {"tok_s": mean_logged_tok_s(folder), "commit": commit(folder)}


def mean_logged_tok_s(folder: Path) -> float:
    """The plain mean of the ``train/tok_s`` rates in the run's CSV log: one step in every
    ``trainer.log_every_n_steps`` across the run rather than its last step; each rate is the
    step's target tokens over its step time (validation and set-up are not in it)."""
    with (folder / "csv" / "metrics.csv").open(newline="") as lines:
        rates = [float(r["train/tok_s"]) for r in csv.DictReader(lines) if r.get("train/tok_s")]
    if not rates:
        raise ValueError(f"{folder / 'csv' / 'metrics.csv'}: no train/tok_s rows")
    return sum(rates) / len(rates)


def choose_length_penalty(run: dict[str, Any]) -> dict[str, Any]:
    """Decode val with beam 5 at each of LENGTH_PENALTIES (src/eval.py on the run's best
    checkpoint), then test once at the val-best one; decodes done before are reused."""
    folder = REPO / run["run_dir"]
    val = {
        alpha: evaluate([folder], "val", folder / "eval" / f"val-lp{alpha}", alpha)
        for alpha in LENGTH_PENALTIES
    }
    chosen = max(LENGTH_PENALTIES, key=lambda alpha: val[alpha]["bleu"])
    test = evaluate([folder], "test", folder / "eval" / f"test-lp{chosen}", chosen)
    return {
        "length_penalty": chosen,
        "val_bleu_by_length_penalty": {str(a): v["bleu"] for a, v in val.items()},
        "test_bleu": test["bleu"],
        "test_chrf": test["chrf"],
        "eval_command": test["command"],
    }


def peer_run(tool: str, model: str, minutes: float, ws: peers.Workspace, bin_dir: Path) -> dict:
    """Train with a peer for ``minutes``, decode the test set with beam 5, score it."""
    trained = peers.train(tool, model, ws, bin_dir, minutes=minutes)
    decoded = peers.decode(tool, trained.checkpoint, 5, ws, bin_dir)
    return {
        "test_bleu": peers.bleu(decoded.hypotheses, ws.text / "test.en"),
        "checkpoint": shown(trained.checkpoint),
        "tok_s": trained.tok_s,
        "wall_s": trained.wall_s,
        "peak_rss_mb": trained.peak_rss_mb,
        "log": shown(trained.log),
    }


def markdown(report: dict[str, Any]) -> str:
    """The BLEU table of every tool, the caption, and the details of seq2attn's runs."""
    scores = [
        [
            model.upper(),
            *(
                f"{report['runs'][f'{model}_{tool}']['test_bleu']:.2f}"
                if f"{model}_{tool}" in report["runs"]
                else "not run"
                for tool in TOOLS
            ),
            f"≥ {report['goals'][model]:.1f}",
        ]
        for model in ("r1", "r2")
    ]
    headers = [f"test_2016_flickr BLEU after {report['minutes']:g} min (beam 5)", *TOOLS]
    caption = (
        f"{describe_machine(report['machine'])}; report written at commit {report['commit']}, "
        f"{report['date']} (each seq2attn run's own commit is in its row); one training at a "
        "time on the whole machine."
    )
    if report.get("overrides"):
        caption += f" seq2attn's overrides: `{' '.join(report['overrides'])}`."
    if report.get("status", "kept") != "kept":
        caption += f" Status: {report['status']}."
    details = []
    for name, result in report["runs"].items():
        if "command" not in result:  # a peer's run
            continue
        by_alpha = ", ".join(
            f"{alpha}: {bleu:.2f}" for alpha, bleu in result["val_bleu_by_length_penalty"].items()
        )
        details.append(
            [
                f"{name} ({result['commit']})",
                f"{result['steps']:.0f}",
                f"{result['tok_s']:,.0f}",
                f"{result['wall_s']:.0f}",
                f"{result['val_bleu']:.2f}",
                f"{result['length_penalty']} (val beam-5 BLEU {by_alpha})",
                f"{result['test_chrf']:.2f}",
                f"`{result['command']}`",
                f"`{result['eval_command']}`",
            ]
        )
    detail_headers = [
        "run (commit)",
        "steps",
        "training tokens/s (mean of logged steps)",
        "wall s",
        "val BLEU (lp 0.6)",
        "length penalty (chosen on val)",
        "test chrF",
        "command",
        "test decoding",
    ]
    return (
        f"{table([*headers, 'goal for seq2attn'], scores)}\n{caption}\n\n"
        f"{table(detail_headers, details)}"
    )


def publish(report: dict[str, Any], name: str) -> None:
    """benchmarks/results/<name>.json and .md; a kept ``budget`` also into docs/results.md."""
    text = markdown(report)
    write_result(name, report, text)
    if name == "budget" and report.get("status", "kept") == "kept":
        write_section(text, PAGE, "budget")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset")
    parser.add_argument("--models", default="r1,r2", help="comma-separated subset")
    parser.add_argument("--name", default="budget", help="result file stem (default budget)")
    parser.add_argument("--status", choices=STATUSES, default="kept")
    parser.add_argument("--work-dir", type=Path, help="default .cache/bench/<name>")
    parser.add_argument("--resume", action="store_true", help="reuse finished runs")
    parser.add_argument("--report", action="store_true", help="only refresh the Markdown")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of seq2attn's training")
    args = parser.parse_args()
    if args.report:
        publish(json.loads((RESULTS / f"{args.name}.json").read_text()), args.name)
        return
    require("python -m experiments.budget", corpus(), SPM_MODEL)
    tools = [t for t in args.tools.split(",") if t]
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown:
        sys.exit(f"--tools: unknown {', '.join(unknown)}; choose from {', '.join(TOOLS)}")
    started = time.perf_counter()
    work_dir = args.work_dir or REPO / ".cache" / "bench" / args.name
    work_dir.mkdir(parents=True, exist_ok=True)
    kept = work_dir / "results.json"
    runs: dict[str, Any] = json.loads(kept.read_text()) if args.resume and kept.exists() else {}
    bins = {t: peers.install(t, REPO / ".cache" / "peers") for t in tools if t != "seq2attn"}
    ws = peers.prepare_data(corpus(), SPM_MODEL, work_dir / "peers")
    for model in args.models.split(","):
        for tool in tools:
            name = f"{model}_{tool}"
            if name in runs:
                print(f"{name}: kept from an earlier call", flush=True)
                if tool == "seq2attn":  # decodes done before are reused
                    runs[name].setdefault("train_test_bleu", runs[name]["test_bleu"])
                    runs[name].update(run_record(REPO / runs[name]["run_dir"]))
                    runs[name].update(choose_length_penalty(runs[name]))
                    kept.write_text(json.dumps(runs, indent=2, default=str) + "\n")
                continue
            print(
                f"[{time.perf_counter() - started:6.0f} s] {name}: {args.minutes:g} min", flush=True
            )
            if tool == "seq2attn":
                runs[name] = seq2attn_run(model, args.minutes, work_dir, args.overrides)
                kept.write_text(json.dumps(runs, indent=2, default=str) + "\n")
                runs[name].update(choose_length_penalty(runs[name]))
            else:
                runs[name] = peer_run(tool, model, args.minutes, ws, bins[tool])
            kept.write_text(json.dumps(runs, indent=2, default=str) + "\n")
            print(f"  test BLEU {runs[name]['test_bleu']:.2f}", flush=True)
    report = {
        "minutes": args.minutes,
        "status": args.status,
        "overrides": args.overrides,
        "runs": runs,
        "goals": GOALS,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": commit(),
        "wall_s": time.perf_counter() - started,
    }
    publish(report, args.name)


if __name__ == "__main__":
    main()
