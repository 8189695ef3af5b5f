"""Decoding speed of trained models: seq2attn against OpenNMT-py with the R1 models of the
20-minute budget runs (benchmarks/results/budget.json), on this machine.

    python -m benchmarks.trained_decoding [--seed 1] [--repeats 3]

`make bench` decodes with models trained for 150 steps; models that weak differ in how long they
write, and that sets how many steps a decoding takes, so its decoding ratios move with the
models as much as with the code. The budget runs' models write about as long as the references.
The settings are `make bench`'s: test_2016_flickr in batches of 64 sentences, every hypothesis up
to 100 pieces, greedy and beam 5 with OpenNMT-py's default stop and avg normalisation, the tools
alternating, the median (min-max) of ``--repeats`` runs. seq2attn decodes its run's best
checkpoint (what the budget harness scored), OpenNMT-py its last. Writes
benchmarks/results/trained_decoding.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import peers
from benchmarks.common import (
    REPO,
    RESULTS,
    SPM_MODEL,
    corpus,
    describe_machine,
    machine,
    require,
    shown,
    table,
    write_result,
)
from benchmarks.common import commit as current_commit
from benchmarks.speed import (
    BEAMS,
    MAX_OUTPUT_PIECES,
    PARALLEL_NOTE,
    PEER_SEARCH,
    median_cell,
    peer_translate,
    ratio,
    seq2attn_translate,
    summary,
)

BUDGET = RESULTS / "budget.json"
TOOLS = ("seq2attn", "opennmt")
# seq2attn again with one default changed, to show what that default gives: its column's header
# and the override
VARIANTS = {
    "seq2attn_fp32": ("seq2attn, fp32 output layer", "decoding.output_precision=fp32"),
    "seq2attn_one_batch": ("seq2attn, one batch at a time", "parallel_batches=1"),
}
SEQ2ATTN_RUNS = ("seq2attn", *VARIANTS)


def budget_models(seed: int, budget: Path = BUDGET) -> dict[str, Path]:
    """The R1 checkpoint of each tool's budget run (seq2attn: seed ``seed``'s run folder, whose
    best checkpoint is decoded; OpenNMT-py: its one run's last checkpoint). Stops with one line
    and exit code 2 where budget.json, the run or its model is missing."""
    if not budget.is_file():
        refuse(f"no {shown(budget)}: run python -m experiments.budget --models r1 first")
    runs = json.loads(budget.read_text())["runs"]
    wanted = {"seq2attn": f"r1_seq2attn_seed{seed}", "opennmt": "r1_opennmt"}
    models = {}
    for tool, key in wanted.items():
        if key not in runs:
            refuse(f"{shown(budget)} has no run {key}")
        found = runs[key].get("run_dir") or runs[key].get("checkpoint")
        if not found or not (REPO / found).exists():
            refuse(
                f"{key}'s model ({found}) is not on this machine: python -m experiments.budget "
                "--models r1 trains it again"
            )
        models[tool] = REPO / found
    return models


def refuse(message: str) -> None:
    print(f"benchmarks.trained_decoding: {message}", file=sys.stderr)
    sys.exit(2)


def words_per_second(result: dict[str, Any]) -> float:
    """Output words per second of search: sentences/s times words per hypothesis."""
    return result["sent_s"] * result["words"]


ROWS = (  # label, key, format, lower is better
    ("R1 greedy decoding, sentences/s", "greedy_sent_s", "{:,.1f}", False),
    ("R1 beam-5 decoding, sentences/s", "beam5_sent_s", "{:,.1f}", False),
    ("R1 greedy decoding, output words/s", "greedy_words_s", "{:,.0f}", False),
    ("R1 beam-5 decoding, output words/s", "beam5_words_s", "{:,.0f}", False),
    ("R1 greedy, whole process, s", "greedy_process_s", "{:,.2f}", True),
    ("R1 beam-5, whole process, s", "beam5_process_s", "{:,.2f}", True),
)


def markdown(report: dict[str, Any]) -> str:
    rows = []
    for label, key, fmt, lower in ROWS:
        spread = report["spread"][key]
        cells = [median_cell(fmt, spread[tool]["median"], spread[tool]) for tool in TOOLS]
        medians = {tool: spread[tool]["median"] for tool in TOOLS}
        variants = [
            "n/a" if spread.get(v) is None else median_cell(fmt, spread[v]["median"], spread[v])
            for v in VARIANTS
        ]
        rows.append([label, *cells, ratio(medians, lower), *variants])
    host = report["machine"]
    quality = ", ".join(
        f"{tool} {q['greedy']['bleu']:.2f} / {q['beam5']['bleu']:.2f} BLEU, "
        f"{q['greedy']['words']:.1f} / {q['beam5']['words']:.1f} words per hypothesis"
        for tool, q in report["quality"].items()
    )
    notes = [
        f"Median of {report['repeats']} runs per tool (min–max), alternating tools. "
        f"{describe_machine(host)}, {host['threads']} threads, torch {host['torch']}, "
        f"{report['date']}, commit {report['commit']}.",
        "Models: the R1 runs of the 20-minute budget (benchmarks/results/budget.json): "
        + ", ".join(f"{tool} `{path}`" for tool, path in report["models"].items())
        + ".",
        f"test_2016_flickr, batches of 64 sentences, every hypothesis up to "
        f"{report['max_output_pieces']} pieces; seq2attn's beam 5 stops as OpenNMT-py's default "
        "does (avg length normalisation, a sentence ends when its best beam ends). Greedy / "
        f"beam 5: {quality}.",
    ]
    if report.get("output_precision"):
        notes.append(
            f"seq2attn decoded with its output layer in {report['output_precision']} "
            "(`decoding.output_precision=auto`; bf16 ranks a shortlist that fp32 scores, with "
            "the tokens of fp32)."
        )
    if report.get("parallel_batches"):
        notes.append(PARALLEL_NOTE.format(report["parallel_batches"]))
    notes.append(
        "The last columns are seq2attn again in the same run with one default changed: "
        + "; ".join(f"{header} `{override}`" for header, override in VARIANTS.values())
        + "."
    )
    header = ["", *TOOLS, "seq2attn vs OpenNMT-py", *(h for h, _ in VARIANTS.values())]
    return table(header, rows) + "\n" + "\n".join(notes) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1, help="seq2attn's budget seed (1)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per tool (3)")
    parser.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench")
    args = parser.parse_args()
    require("python -m benchmarks.trained_decoding", corpus(), SPM_MODEL)
    models = budget_models(args.seed)
    started = time.perf_counter()
    bin_dir = peers.install("opennmt", REPO / ".cache" / "peers")
    ws = peers.prepare_data(corpus(), SPM_MODEL, args.work_dir / "trained_decoding" / "peers")
    decodes: dict[str, dict[str, Any]] = {}
    for rep in range(1, args.repeats + 1):
        for name, beam in BEAMS:
            for tool in (*TOOLS, *VARIANTS):
                print(f"[{time.perf_counter() - started:5.0f} s] round {rep}: {name}, {tool}")
                if tool in SEQ2ATTN_RUNS:
                    options = (
                        *(PEER_SEARCH if beam > 1 else ()),
                        *((VARIANTS[tool][1],) if tool in VARIANTS else ()),
                    )
                    result = seq2attn_translate(
                        shown(models["seq2attn"]), ws, f"{tool}-{name}", beam, options
                    )
                else:
                    result = peer_translate(tool, str(models[tool]), ws, bin_dir, beam)
                decodes[f"{tool}_{name}_{rep}"] = result
                print(f"  {result['sent_s']:,.1f} sentences/s, {result['process_s']:.1f} s process")

    def values(tool: str, name: str, measure: str) -> list[float]:
        runs = [decodes[f"{tool}_{name}_{rep}"] for rep in range(1, args.repeats + 1)]
        if measure == "words_s":
            return [words_per_second(run) for run in runs]
        return [run[measure] for run in runs]

    spread = {
        f"{name}_{measure}": {
            tool: summary(values(tool, name, measure)) for tool in (*TOOLS, *VARIANTS)
        }
        for name, _ in BEAMS
        for measure in ("sent_s", "words_s", "process_s")
    }
    report = {
        "spread": spread,
        **{key: {t: s["median"] for t, s in by_tool.items()} for key, by_tool in spread.items()},
        "quality": {
            tool: {
                name: {k: decodes[f"{tool}_{name}_1"][k] for k in ("bleu", "words")}
                for name, _ in BEAMS
            }
            for tool in (*TOOLS, *VARIANTS)
        },
        "output_precision": decodes["seq2attn_greedy_1"].get("output_precision"),
        "parallel_batches": decodes["seq2attn_greedy_1"].get("parallel_batches"),
        "models": {tool: shown(path) for tool, path in models.items()},
        "max_output_pieces": MAX_OUTPUT_PIECES,
        "decoding": decodes,
        "repeats": args.repeats,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": current_commit(),
        "wall_s": time.perf_counter() - started,
    }
    text = markdown(report)
    written, _ = write_result("trained_decoding", report, text)
    print(text)
    print(f"wrote {shown(written)} and trained_decoding.md")


if __name__ == "__main__":
    main()
