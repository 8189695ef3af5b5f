"""Equal wall-clock budget: R1 and R2 trained for 20 minutes by seq2attn, OpenNMT-py and JoeyNMT.

    python -m experiments.budget --models r2 --tools seq2attn,opennmt   # 3 seeds + 1 peer run
    git add benchmarks/results docs/results.md && git commit -m "..."    # before the next call
    python -m experiments.budget --models r1 --tools seq2attn,opennmt
    python -m experiments.budget --tools seq2attn --models r2 --seeds 1 --status rejected \\
        --reason "label smoothing 0.3: val below 0.2" -- label_smoothing=0.3
    python -m experiments.budget --report   # only refresh budget.md and docs/results.md

Multi30k de->en on the shared SentencePiece model, one training process at a time on the whole
machine. seq2attn trains ``experiment=budget_r1`` / ``budget_r2`` (the speed references' shapes
with this platform's recipe, ``precision=auto``) once per seed (``--seeds``, ``seed=1..N``), plus
any Hydra overrides given after ``--``, stopped by ``trainer.max_time`` if its step budget has not
ended it first; each peer trains the speed benchmark's R1/R2 config once (benchmarks.peers, seed
1234, fp32: the only precision either peer trains in on a CPU) and is stopped after the same
minutes of process wall time, keeping its newest checkpoint.

Every model is then decoded the same way: beam 5 on val at every setting of
experiments.decoding_grid that the tool supports, the simplest setting within 0.2 BLEU of val's
best chosen, and test_2016_flickr decoded once with it, scored by sacreBLEU (detokenised, cased,
13a) with the repetition rate and output/reference length ratio. For seq2attn the harness scores
the written test hypotheses itself, and ``src/eval.py`` decodes test again in a fresh process:
both must land within 0.1 BLEU of the reported score.

Results are reproducible by construction: the harness refuses to start from a working tree with
uncommitted changes (commit one invocation's result files before the next), every run records its
commit, commands (relative paths), machine, precision, seed, minutes and overrides, and a table
only ever holds runs of one machine fingerprint (CPU model, matrix-product flags, cores);
``--resume`` reuses only the runs of this machine's fingerprint, minutes and overrides. Writes
benchmarks/results/<name>.json and .md (``--name``, default ``budget``; ``budget`` also fills the
``budget`` block of docs/results.md), its ``runs`` keyed ``<model>_<tool>[_seed<n>]``. A run that
fails a check, a kept run that a new run of its key displaces, and every run that an invocation
given ``--status rejected|replaced`` and a ``--reason`` trains (in a work folder of its own) go
to <name>-rejected.json instead, in the same entry schema with their status and reason.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
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
    mean_std,
    relative,
    run_measured,
    shown,
    table,
    write_result,
)
from experiments.decoding_grid import DecodingSetting, choose, grid_for
from experiments.scoring import HarnessError, check_clean_tree, evaluate_with
from seq2attn.metrics import corpus_scores, output_scores
from seq2attn.report import write_section

PAGE = REPO / "docs" / "results.md"
TOOLS = ("seq2attn", *peers.PEERS)
MODELS = ("r1", "r2")
REJECTED_STATUSES = ("rejected", "replaced")
GOALS = {"r1": 39.5, "r2": 41.0}  # test BLEU, mean of the seeds
SEEDS = 3
PEER_SEED = 1234  # benchmarks.peers trains each peer with this seed
REPRODUCE_BLEU = 0.1  # how far a fresh src/eval.py may land from the recorded test BLEU


def run_key(model: str, tool: str, seed: int | None = None) -> str:
    """``r2_seq2attn_seed2``; a peer's single run ``r2_opennmt``."""
    return f"{model}_{tool}" + (f"_seed{seed}" if seed is not None else "")


def fingerprint(described: Mapping[str, Any]) -> str:
    """What decides the speed of a run: ``AMD EPYC 7B13 (avx2, fma), 2 cores``."""
    return describe_machine(described)


def check_inputs(*needed: Path) -> None:
    """Refuse to start without Multi30k or the shared SentencePiece model."""
    for path in needed:
        if not path.exists():
            raise HarnessError(
                f"{shown(path)} is missing (Multi30k: set SEQ2ATTN_DATA; the SentencePiece model "
                "comes with ../shared/bench)"
            )


def reusable(
    runs: Mapping[str, dict[str, Any]], here: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """The finished runs that ``--resume`` may reuse: those whose fingerprint, minutes and
    overrides are this invocation's (``here``)."""
    kept = {}
    for name, run in runs.items():
        differs = [key for key, value in here.items() if run.get(key) != value]
        if differs:
            print(f"{name}: not reused, its {', '.join(differs)} differ", flush=True)
        else:
            kept[name] = run
    return kept


def seq2attn_run(
    model: str, minutes: float, ws: Path, overrides: Sequence[str], seed: int
) -> dict[str, Any]:
    """Train experiment=budget_<model> with ``seed`` within ``minutes``; what the run recorded."""
    folder = ws / f"seq2attn_{model}_seed{seed}"
    shutil.rmtree(folder, ignore_errors=True)  # an earlier run's checkpoints would mix in
    hours, rest = divmod(int(minutes * 60), 3600)
    command = [
        sys.executable,
        "src/train.py",
        f"experiment=budget_{model}",
        f"seed={seed}",
        f"trainer.max_time=00:{hours:02d}:{rest // 60:02d}:{rest % 60:02d}",
        f"data.root={shown(corpus())}",
        f"data.spm_model={shown(SPM_MODEL)}",
        f"hydra.run.dir={shown(folder)}",
        "trainer.enable_progress_bar=false",
        *overrides,
    ]
    process = run_measured(command, ws / f"seq2attn_{model}_seed{seed}.log", cwd=REPO)
    metrics = json.loads((folder / "metrics.json").read_text())
    record = json.loads((folder / "run.json").read_text())
    git = record.get("git") or {}
    return {
        "model": model,
        "tool": "seq2attn",
        "seed": seed,
        "steps": metrics.get("trainer/global_step"),
        "train_test_bleu": metrics.get("test/bleu"),  # training's own decode: beam 5, gnmt 0.6
        "precision": (record.get("precision") or {}).get("chosen"),
        "allocator": record.get("allocator"),  # that served malloc (cpu.allocator)
        "commit": commit(folder),
        "dirty": bool(git.get("dirty")),
        "tok_s": mean_logged_tok_s(folder),
        "wall_s": process.wall_s,
        "peak_rss_mb": process.peak_rss_mb,
        "command": command_line(command),
        "run_dir": shown(folder),
    }


def mean_logged_tok_s(folder: Path) -> float:
    """The plain mean of the ``train/tok_s`` rates in the run's CSV log: one step in every
    ``trainer.log_every_n_steps`` across the run rather than its last step; each rate is the
    step's target tokens over its step time (validation and set-up are not in it)."""
    with (folder / "csv" / "metrics.csv").open(newline="") as lines:
        rates = [float(r["train/tok_s"]) for r in csv.DictReader(lines) if r.get("train/tok_s")]
    if not rates:
        raise ValueError(f"{folder / 'csv' / 'metrics.csv'}: no train/tok_s rows")
    return sum(rates) / len(rates)


def seq2attn_decoding(run: Mapping[str, Any]) -> dict[str, Any]:
    """The val grid, the chosen setting and test decoded once with it (each decode read back
    when done before); then the test hypotheses scored here, and test decoded again by a fresh
    ``src/eval.py`` process (its folder emptied first)."""
    folder = REPO / run["run_dir"]

    def scores(split: str, setting: DecodingSetting, suffix: str = "") -> dict[str, Any]:
        out = folder / "eval" / f"{split}-{setting.name}{suffix}"
        return evaluate_with([folder], split, out, setting.seq2attn())

    val = {setting.name: scores("val", setting) for setting in grid_for("seq2attn")}
    chosen = choose({name: result["bleu"] for name, result in val.items()})
    test = scores("test", chosen)
    shutil.rmtree(folder / "eval" / f"test-{chosen.name}-again", ignore_errors=True)
    again = scores("test", chosen, "-again")
    hypotheses = folder / "eval" / f"test-{chosen.name}" / "test.hyp.txt"
    return {
        **chosen_record(chosen, val),
        "test_bleu": test["bleu"],
        "test_chrf": test["chrf"],
        "repetition_rate": test["repetition_rate"],
        "length_ratio": test["length_ratio"],
        "eval_command": test["command"],
        "rescored_bleu": peer_scores(hypotheses, test_references())["bleu"],
        "reproduced_bleu": again["bleu"],
    }


def test_references() -> Path:
    """test_2016_flickr's English side as plain text (read from Multi30k's gzip once)."""
    plain = REPO / ".cache" / "bench" / "test_2016_flickr.en"
    if not plain.is_file():
        plain.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(corpus() / "test_2016_flickr.en.gz", "rt", encoding="utf-8") as lines:
            plain.write_text("".join(f"{line.strip()}\n" for line in lines), encoding="utf-8")
    return plain


def chosen_record(chosen: DecodingSetting, val: Mapping[str, Mapping[str, Any]]) -> dict:
    """The setting chosen on val and what every setting scored there (BLEU, repetition rate)."""
    return {
        "decoding": chosen.name,
        "val_bleu": val[chosen.name]["bleu"],
        "val_bleu_by_decoding": {name: result["bleu"] for name, result in val.items()},
        "val_repetition_by_decoding": {
            name: result["repetition_rate"] for name, result in val.items()
        },
    }


def peer_train(tool: str, model: str, minutes: float, ws: peers.Workspace, bin_dir: Path) -> dict:
    """Train with a peer for ``minutes``; what the run recorded (saved before any decode)."""
    trained = peers.train(tool, model, ws, bin_dir, minutes=minutes, seed=PEER_SEED)
    current = commit()
    return {
        "model": model,
        "tool": tool,
        "seed": PEER_SEED,
        "steps": trained.steps,
        "precision": "32-true",
        "allocator": "system",  # the harness preloads nothing for the peers
        "commit": current,
        "dirty": current.endswith("+"),
        "tok_s": trained.tok_s,
        "wall_s": trained.wall_s,
        "peak_rss_mb": trained.peak_rss_mb,
        "checkpoint": shown(trained.checkpoint),
        "log": shown(trained.log),
        "command": f"python -m experiments.budget --models {model} --tools {tool}",
    }


def peer_decoding(
    tool: str, run: Mapping[str, Any], ws: peers.Workspace, bin_dir: Path
) -> dict[str, Any]:
    """The peer's val grid, the chosen setting, and test decoded once with it."""
    checkpoint = REPO / run["checkpoint"]

    def scores(split: str, setting: DecodingSetting) -> dict[str, Any]:
        options = setting.options(tool)
        decoded = peers.decode(tool, checkpoint, 5, ws, bin_dir, split=split, options=options)
        return peer_scores(decoded.hypotheses, ws.text / f"{split}.{peers.TGT}")

    val = {setting.name: scores("val", setting) for setting in grid_for(tool)}
    chosen = choose({name: result["bleu"] for name, result in val.items()})
    test = scores("test", chosen)
    return {
        **chosen_record(chosen, val),
        "test_bleu": test["bleu"],
        "test_chrf": test["chrf"],
        "repetition_rate": test["repetition_rate"],
        "length_ratio": test["length_ratio"],
    }


def peer_scores(hypotheses: Path, references: Path) -> dict[str, float]:
    """What src/eval.py reports of seq2attn's decodes, computed the same way (seq2attn.metrics):
    BLEU, chrF and TER (sacreBLEU's defaults), repetition rate and length ratio."""
    hyps = hypotheses.read_text(encoding="utf-8").splitlines()
    refs = references.read_text(encoding="utf-8").splitlines()
    if len(hyps) != len(refs):
        raise ValueError(f"{hypotheses} has {len(hyps)} lines, {references} has {len(refs)}")
    return {**corpus_scores(hyps, refs)[0], **output_scores(hyps, refs)}


def check_run(run: Mapping[str, Any]) -> str | None:
    """Why a finished run cannot be reported, None when it can: trained from a tree with
    uncommitted changes, or a test BLEU that the harness's own scoring of the hypotheses or a
    fresh src/eval.py does not reproduce."""
    if run.get("dirty"):
        return f"trained from a working tree with uncommitted changes ({run['commit']})"
    for key, by in (
        ("rescored_bleu", "scoring the hypotheses"),
        ("reproduced_bleu", "src/eval.py"),
    ):
        if key in run and abs(run[key] - run["test_bleu"]) > REPRODUCE_BLEU:
            return (
                f"{by} gave test BLEU {run[key]:.2f}, not {run['test_bleu']:.2f} "
                f"(more than {REPRODUCE_BLEU} apart)"
            )
    return None


def by_machine(runs: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The runs grouped by machine fingerprint: no table ever holds rows of two machines."""
    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for name, run in runs.items():
        groups.setdefault(run["fingerprint"], {})[name] = run
    return groups


def markdown(report: Mapping[str, Any]) -> str:
    """Per machine: one row per model and tool (mean ± std over its seeds), the caption, and
    every run with its commit, command and reproduction."""
    parts = [
        machine_tables(machine_, runs, report["goals"])
        for machine_, runs in by_machine(report["runs"]).items()
    ]
    return "\n".join(parts)


def machine_tables(
    machine_: str, runs: Mapping[str, dict[str, Any]], goals: Mapping[str, float]
) -> str:
    """The summary and the run table of the runs of one machine."""
    rows = []
    for model in MODELS:
        for tool in TOOLS:
            group = [r for r in runs.values() if (r["model"], r["tool"]) == (model, tool)]
            if not group:
                continue

            def column(key: str, group: list[dict[str, Any]] = group) -> list[float]:
                return [float(run[key]) for run in group]

            rows.append(
                [
                    model.upper(),
                    tool,
                    len(group),
                    ", ".join(sorted({f"{run['minutes']:g}" for run in group})),
                    mean_std(column("test_bleu")),
                    mean_std(column("test_chrf")),
                    mean_std(column("repetition_rate"), ".1f"),
                    mean_std(column("length_ratio"), ".3f"),
                    mean_std(column("steps"), ".0f"),
                    mean_std(column("val_bleu")),
                    ", ".join(sorted({run["decoding"] for run in group})),
                    f"≥ {goals[model]:.1f}" if tool == "seq2attn" else "",
                ]
            )
    headers = [
        "model",
        "tool",
        "runs",
        "minutes",
        "test_2016_flickr BLEU",
        "chrF",
        "repetition %",
        "length ratio",
        "steps",
        "val BLEU",
        "decoding (chosen on val)",
        "goal (mean)",
    ]
    dates = sorted({run["date"] for run in runs.values()})
    caption = (
        f"{machine_}; trained {dates[0]}"
        + (f" to {dates[-1]}" if len(dates) > 1 else "")
        + "; one training at a time on the whole machine; beam 5, each tool's decoding chosen "
        "on val by experiments.decoding_grid; mean ± sample std over the runs."
    )
    details = [
        [
            f"{name} ({run['commit']})",
            run["precision"],
            f"{run['steps']:.0f}",
            f"{run['tok_s']:,.0f}",
            f"{run['wall_s']:.0f}",
            f"{run['peak_rss_mb']:,.0f}" if run.get("peak_rss_mb") else "",
            run.get("allocator") or "",
            f"{run['test_bleu']:.2f}",
            f"{run['reproduced_bleu']:.2f}" if "reproduced_bleu" in run else "",
            f"`{run['command']}`",
        ]
        for name, run in runs.items()
    ]
    detail_headers = [
        "run (commit)",
        "precision",
        "steps",
        "training tokens/s",
        "wall s",
        "peak RSS, MB",
        "allocator",
        "test BLEU",
        "again by src/eval.py",
        "command",
    ]
    return f"{table(headers, rows)}\n{caption}\n\n{table(detail_headers, details)}"


def publish(report: dict[str, Any], name: str) -> None:
    """benchmarks/results/<name>.json and .md; ``budget`` also into docs/results.md."""
    unplaced = sorted(name for name, run in report["runs"].items() if "fingerprint" not in run)
    if unplaced:
        raise HarnessError(
            f"{name}.json: runs without a machine fingerprint ({', '.join(unplaced)}) were "
            "written by the harness before it kept one; train them again to tabulate them"
        )
    text = markdown(report)
    write_result(name, report, text, RESULTS)
    if name == "budget":
        write_section(text, PAGE, "budget")
    print(text)


def record_rejected(
    runs: Mapping[str, dict[str, Any]], name: str, status: str, reason: str
) -> Path:
    """Add ``runs`` with their status and reason (a run's own ``reason`` first) to
    benchmarks/results/<name>-rejected.json, keyed by run and date so that no earlier attempt is
    overwritten."""
    path = RESULTS / f"{name}-rejected.json"
    kept = json.loads(path.read_text()) if path.is_file() else {"runs": {}}
    date = time.strftime("%Y-%m-%d_%H-%M")
    for key, run in runs.items():
        entry = {**run, "status": status, "reason": run.get("reason") or reason}
        stamp, attempt = f"{key}@{date}", 1
        while stamp in kept["runs"]:
            attempt += 1
            stamp = f"{key}@{date}#{attempt}"
        kept["runs"][stamp] = relative(entry)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(kept, indent=2, default=str) + "\n")
    return path


def main() -> None:
    try:
        drive(parse_arguments())
    except HarnessError as refusal:
        print(f"{Path(sys.argv[0]).name}: error: {refusal}", file=sys.stderr)
        sys.exit(2)


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated subset")
    parser.add_argument("--seeds", type=int, default=SEEDS, help=f"seq2attn runs ({SEEDS})")
    parser.add_argument("--name", default="budget", help="result file stem (default budget)")
    parser.add_argument(
        "--status",
        choices=("kept", *REJECTED_STATUSES),
        default="kept",
        help="rejected/replaced: record this invocation's runs as a tried recipe (--reason)",
    )
    parser.add_argument("--reason", default="", help="why the runs are rejected or replaced")
    parser.add_argument("--work-dir", type=Path, help="default .cache/bench/<name>[-<status>]")
    parser.add_argument("--resume", action="store_true", help="reuse this machine's finished runs")
    parser.add_argument("--report", action="store_true", help="only refresh the Markdown")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of seq2attn's training")
    args = parser.parse_args(argv)
    args.tools = [t for t in args.tools.split(",") if t]
    unknown = sorted(set(args.tools) - set(TOOLS))
    if unknown or not args.tools:
        parser.error(f"--tools: choose from {', '.join(TOOLS)}, got {','.join(args.tools)!r}")
    args.models = [m for m in args.models.split(",") if m]
    if set(args.models) - set(MODELS) or not args.models:
        parser.error(f"--models: choose from {', '.join(MODELS)}, got {','.join(args.models)!r}")
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: at least 1")
    if args.minutes <= 0:
        parser.error(f"--minutes {args.minutes:g}: must be above 0")
    if args.status != "kept" and not args.reason:
        parser.error(f"--status {args.status} needs --reason: what val said about the recipe")
    if args.work_dir is None:
        suffix = "" if args.status == "kept" else f"-{args.status}"
        args.work_dir = REPO / ".cache" / "bench" / f"{args.name}{suffix}"
    return args


def drive(args: argparse.Namespace) -> None:
    if args.report:
        result = RESULTS / f"{args.name}.json"
        if not result.is_file():
            raise HarnessError(f"--report: {shown(result)} does not exist yet; run the budget")
        publish(json.loads(result.read_text()), args.name)
        return
    check_inputs(corpus(), SPM_MODEL)
    check_clean_tree(commit())
    started = time.perf_counter()
    here = {
        "fingerprint": fingerprint(machine()),
        "minutes": args.minutes,
        "overrides": list(args.overrides),
    }
    args.work_dir.mkdir(parents=True, exist_ok=True)
    finished = args.work_dir / "results.json"
    earlier = json.loads(finished.read_text()) if args.resume and finished.exists() else {}
    runs = reusable(earlier, here)
    trained_now: set[str] = set()
    bins = {t: peers.install(t, REPO / ".cache" / "peers") for t in args.tools if t != "seq2attn"}
    ws = peers.prepare_data(corpus(), SPM_MODEL, args.work_dir / "peers")
    for model in args.models:
        for tool in args.tools:
            for seed in range(1, args.seeds + 1) if tool == "seq2attn" else [None]:
                name = run_key(model, tool, seed)
                if name in runs and "test_bleu" in runs[name]:
                    print(f"{name}: kept from an earlier call", flush=True)
                    continue
                elapsed = time.perf_counter() - started
                print(f"[{elapsed:6.0f} s] {name}: {args.minutes:g} min", flush=True)
                if name not in runs:  # one trained before but not decoded is decoded now
                    if tool == "seq2attn":
                        trained = seq2attn_run(
                            model, args.minutes, args.work_dir, args.overrides, seed
                        )
                    else:
                        trained = peer_train(tool, model, args.minutes, ws, bins[tool])
                    runs[name] = {**trained, **here, "date": time.strftime("%Y-%m-%d")}
                    runs[name]["machine"] = machine()
                    trained_now.add(name)
                    save(finished, runs)
                if tool == "seq2attn":
                    runs[name].update(seq2attn_decoding(runs[name]))
                else:
                    runs[name].update(peer_decoding(tool, runs[name], ws, bins[tool]))
                save(finished, runs)
                print(f"  test BLEU {runs[name]['test_bleu']:.2f}", flush=True)
    settle(runs, trained_now, args, started)
    save(finished, runs)  # without the failed runs: a --resume trains them again


def save(path: Path, runs: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(runs, indent=2, default=str) + "\n")


def settle(
    runs: dict[str, dict[str, Any]], trained_now: set[str], args: argparse.Namespace, started: float
) -> None:
    """Runs that fail a check leave ``runs`` for the rejected file. Of an invocation given
    ``--status rejected|replaced``, the runs it trained go there too and nothing is published.
    Otherwise the passed runs go to the result file, each displacing the run of its key there
    (recorded as replaced); runs of other keys stay, each machine's in its own table."""
    failed = {name: {**run, "reason": why} for name, run in runs.items() if (why := check_run(run))}
    for name in failed:
        del runs[name]
    if failed:
        record_rejected(failed, args.name, "rejected", "")
        print(f"{len(failed)} run(s) failed a check: {', '.join(failed)}", flush=True)
    if args.status != "kept":
        tried = {name: runs[name] for name in trained_now if name in runs}
        path = record_rejected(tried, args.name, args.status, args.reason)
        print(f"{len(tried)} run(s) recorded as {args.status} in {shown(path)}", flush=True)
        return
    if not runs:
        return
    previous = RESULTS / f"{args.name}.json"
    earlier = json.loads(previous.read_text()).get("runs", {}) if previous.is_file() else {}
    displaced = {  # a run that --resume reused is the same run, not displaced
        name: {**run, "reason": "displaced by a new run of the same key"}
        for name, run in earlier.items()
        if name in trained_now and name in runs and "fingerprint" in run
    }
    displaced |= {name: run for name, run in earlier.items() if "fingerprint" not in run}
    if displaced:
        record_rejected(displaced, args.name, "replaced", "written before machine fingerprints")
    report = {
        "runs": {**{n: r for n, r in earlier.items() if n not in displaced}, **runs},
        "goals": GOALS,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": commit(),
        "command": " ".join(["python -m experiments.budget", *sys.argv[1:]]),
        "wall_s": time.perf_counter() - started,
    }
    publish(report, args.name)


if __name__ == "__main__":
    main()
