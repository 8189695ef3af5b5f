"""Equal wall-clock budget: R1 and R2 trained for 20 minutes by seq2attn, OpenNMT-py and JoeyNMT.

    python benchmarks/budget.py [--minutes 20] [--tools seq2attn,opennmt,joeynmt] [--resume]

Multi30k de->en on the shared SentencePiece model, one training process at a time on the whole
machine. seq2attn trains ``experiment=budget_r1`` / ``budget_r2`` (the speed references' shapes
with this platform's recipe), stopped by ``trainer.max_time`` if its step budget has not ended
it first; the peers train the speed benchmark's R1/R2 configs (benchmarks/peers.py) and are
stopped after the same minutes of process wall time, keeping their newest checkpoint. Every model
then translates test_2016_flickr with beam 5, scored by sacreBLEU (detokenised, cased, 13a);
seq2attn's length penalty is chosen on val (the GNMT alphas of benchmarks/best.py) before test
is decoded with it.
Writes benchmarks/results/budget.json and budget.md (also into the ``budget`` block of
docs/results.md); ``--resume`` reuses finished runs.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
import speed  # noqa: E402
from best import LENGTH_PENALTIES  # noqa: E402
from scoring import evaluate  # noqa: E402

from seq2attn.report import write_section  # noqa: E402

REPO, SHARED, RESULTS = speed.REPO, speed.SHARED, speed.RESULTS
SPM_MODEL = SHARED / "bench" / "spm_multi30k_deen_unigram8k.model"
PAGE = REPO / "docs" / "results.md"
TOOLS = ("seq2attn", *peers.PEERS)


def seq2attn_run(model: str, minutes: float, ws: Path) -> dict[str, Any]:
    """Train experiment=budget_<model> within ``minutes``; its test BLEU (beam 5) and figures."""
    folder = ws / f"seq2attn_{model}"
    shutil.rmtree(folder, ignore_errors=True)  # an earlier run's checkpoints would mix in
    hours, rest = divmod(int(minutes * 60), 3600)
    command = [
        sys.executable,
        str(REPO / "src" / "train.py"),
        f"experiment=budget_{model}",
        f"trainer.max_time=00:{hours:02d}:{rest // 60:02d}:{rest % 60:02d}",
        f"paths.root_dir={REPO}",
        f"data.root={SHARED / 'data' / 'multi30k'}",
        f"data.spm_model={SPM_MODEL}",
        f"hydra.run.dir={folder}",
        "trainer.enable_progress_bar=false",
    ]
    process = speed.run_measured(command, ws / f"seq2attn_{model}.log")
    metrics = json.loads((folder / "metrics.json").read_text())
    return {
        # the test score of training's own decoding (beam 5, length penalty 0.6)
        "train_test_bleu": metrics["test/bleu"],
        "val_bleu": metrics.get("val/bleu"),
        "steps": metrics.get("trainer/global_step"),
        **run_record(folder),
        **process,
        "command": " ".join(["python src/train.py", *command[2:]]),
        "run_dir": str(folder),
    }


def run_record(folder: Path) -> dict[str, Any]:
    """What the table shows of a run from its own files: mean tokens/s and commit."""
    return {"tok_s": mean_logged_tok_s(folder), "commit": trained_commit(folder)}


def mean_logged_tok_s(folder: Path) -> float:
    """The plain mean of the ``train/tok_s`` rates in the run's CSV log: one step in every
    ``trainer.log_every_n_steps`` across the run rather than its last step; each rate is the
    step's target tokens over its step time (validation and set-up are not in it)."""
    with (folder / "csv" / "metrics.csv").open(newline="") as lines:
        rates = [float(r["train/tok_s"]) for r in csv.DictReader(lines) if r.get("train/tok_s")]
    if not rates:
        raise ValueError(f"{folder / 'csv' / 'metrics.csv'}: no train/tok_s rows")
    return sum(rates) / len(rates)


def trained_commit(folder: Path) -> str:
    """The commit the run trained from, as its run.json recorded it ("+" if the tree was dirty)."""
    git = json.loads((folder / "run.json").read_text())["git"]
    return git["commit"][:7] + ("+" if git["dirty"] else "")


def choose_length_penalty(run: dict[str, Any]) -> dict[str, Any]:
    """Decode val with beam 5 at each of LENGTH_PENALTIES (src/eval.py on the run's best
    checkpoint), then test once at the val-best one; decodes done before are reused."""
    folder = Path(run["run_dir"])
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
        "checkpoint": str(trained.checkpoint),
        "tok_s": trained.tok_s,
        "wall_s": trained.wall_s,
        "peak_rss_mb": trained.peak_rss_mb,
        "log": str(trained.log),
    }


def markdown(report: dict[str, Any]) -> str:
    minutes = report["minutes"]
    lines = [
        f"| test_2016_flickr BLEU after {minutes:g} min (beam 5) | "
        + " | ".join(TOOLS)
        + " | goal for seq2attn |\n",
        "|---" * (len(TOOLS) + 2) + "|\n",
    ]
    for model in ("r1", "r2"):
        cells = []
        for tool in TOOLS:
            result = report["runs"].get(f"{model}_{tool}")
            cells.append("not run" if result is None else f"{result['test_bleu']:.2f}")
        lines.append(
            f"| {model.upper()} | " + " | ".join(cells) + f" | ≥ {report['goals'][model]:.1f} |\n"
        )
    lines.append(
        f"\n{report['machine']}; report written at commit {report['commit']}, {report['date']} "
        "(each seq2attn run's own commit is in its row); one training at a time on the whole "
        "machine.\n\n"
    )
    lines += [
        "| run (commit) | steps | training tokens/s (mean of logged steps) | wall s "
        "| val BLEU (lp 0.6) | length penalty (chosen on val) | test chrF | command "
        "| test decoding |\n",
        "|---|---|---|---|---|---|---|---|---|\n",
    ]
    for name, result in report["runs"].items():
        if "command" not in result:  # a peer's run
            continue
        by_alpha = ", ".join(
            f"{alpha}: {bleu:.2f}" for alpha, bleu in result["val_bleu_by_length_penalty"].items()
        )
        lines.append(
            f"| {name} ({result['commit']}) | {result['steps']:.0f} | {result['tok_s']:,.0f} "
            f"| {result['wall_s']:.0f} "
            f"| {result['val_bleu']:.2f} | {result['length_penalty']} (val beam-5 BLEU "
            f"{by_alpha}) | {result['test_chrf']:.2f} | `{result['command']}` | "
            f"`{result['eval_command']}` |\n"
        )
    return "".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset")
    parser.add_argument("--models", default="r1,r2", help="comma-separated subset")
    parser.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench" / "budget")
    parser.add_argument("--resume", action="store_true", help="reuse finished runs")
    args = parser.parse_args()
    for needed in (SHARED / "data" / "multi30k", SPM_MODEL):
        if not needed.exists():
            sys.exit(f"benchmarks/budget.py needs {needed} beside the repository; it is not there")
    tools = [t for t in args.tools.split(",") if t]
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown:
        sys.exit(f"--tools: unknown {', '.join(unknown)}; choose from {', '.join(TOOLS)}")
    started = time.perf_counter()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    kept = args.work_dir / "results.json"
    runs: dict[str, Any] = json.loads(kept.read_text()) if args.resume and kept.exists() else {}
    bins = {t: peers.install(t, REPO / ".cache" / "peers") for t in tools if t != "seq2attn"}
    ws = peers.prepare_data(SHARED / "data" / "multi30k", SPM_MODEL, args.work_dir / "peers")
    for model in args.models.split(","):
        for tool in tools:
            name = f"{model}_{tool}"
            if name in runs:
                print(f"{name}: kept from an earlier call", flush=True)
                if tool == "seq2attn":  # decodes done before are reused
                    runs[name].setdefault("train_test_bleu", runs[name]["test_bleu"])
                    runs[name].update(run_record(Path(runs[name]["run_dir"])))
                    runs[name].update(choose_length_penalty(runs[name]))
                    kept.write_text(json.dumps(runs, indent=2, default=str) + "\n")
                continue
            print(
                f"[{time.perf_counter() - started:6.0f} s] {name}: {args.minutes:g} min", flush=True
            )
            if tool == "seq2attn":
                runs[name] = seq2attn_run(model, args.minutes, args.work_dir)
                kept.write_text(json.dumps(runs, indent=2, default=str) + "\n")
                runs[name].update(choose_length_penalty(runs[name]))
            else:
                runs[name] = peer_run(tool, model, args.minutes, ws, bins[tool])
            kept.write_text(json.dumps(runs, indent=2, default=str) + "\n")
            print(f"  test BLEU {runs[name]['test_bleu']:.2f}", flush=True)
    report = {
        "minutes": args.minutes,
        "runs": runs,
        "goals": {"r1": 38.0, "r2": 40.0},
        "machine": f"{speed._cpu_name()}, {speed.os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": speed._commit(),
        "wall_s": time.perf_counter() - started,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "budget.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    table = markdown(report)
    (RESULTS / "budget.md").write_text(table)
    write_section(table, PAGE, "budget")
    print(table)


if __name__ == "__main__":
    main()
