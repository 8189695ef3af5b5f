"""Speed against OpenNMT-py and JoeyNMT on this machine, in one run (`make bench`).

    python -m benchmarks.speed [--quick] [--peers opennmt,joeynmt] [--resume]

Every tool trains the reference models R1 and R2 (conf/experiment/bench_r1.yaml, bench_r2.yaml)
on Multi30k de->en with the shared SentencePiece model, one process at a time, alternating
tools: steady-state target tokens per second after ``--warmup`` steps over ``--steps`` steps.
seq2attn trains in 32-true and bf16-mixed; the peers in fp32, their fastest CPU mode. Each R1
model then decodes test_2016_flickr greedy and with beam 5 (batches of 64 sentences). The
fraction of the machine's peak is the model's FLOPs (seq2attn.flops, from the shapes) per
second over a square-GEMM peak measured at the start of the run. Writes
benchmarks/results/latest.json and latest.md (quick mode: quick.json and quick.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks import peers
from benchmarks.common import (
    REPO,
    SPM_MODEL,
    corpus,
    describe_machine,
    machine,
    require,
    run_measured,
    shown,
    table,
    write_result,
)
from benchmarks.common import commit as current_commit

TOOLS = ("seq2attn", *peers.PEERS)


def gemm_peak_gflops(
    dtype: torch.dtype, sizes: tuple[int, ...] = (1024, 2048), seconds: float = 2.0
) -> float:
    """Best sustained square-matrix product rate, GFLOP/s, over ``sizes``."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        for _ in range(3):
            a @ b
        runs, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            a @ b
            runs += 1
        best = max(best, 2 * n**3 * runs / (time.perf_counter() - began) / 1e9)
    return best


def seq2attn_train(model: str, precision: str, ws: Path, warmup: int, steps: int) -> dict:
    name = f"seq2attn_{model}_{precision}"
    out, ckpt = ws / f"{name}.json", ws / f"{name}.ckpt"
    command = [
        sys.executable,
        "-m",
        "benchmarks.seq2attn_speed",
        "train",
        f"--warmup={warmup}",
        f"--steps={steps}",
        f"--out={shown(out)}",
        f"--save={shown(ckpt)}",
        f"experiment=bench_{model}",
        f"precision={precision}",
        f"data.root={shown(corpus())}",
        f"data.spm_model={shown(SPM_MODEL)}",
        f"paths.cache_dir={shown(ws / 'cache')}",
    ]
    process = run_measured(command, ws / f"{name}.log", cwd=REPO)
    return {
        **json.loads(out.read_text()),
        "wall_s": process.wall_s,
        "peak_rss_mb": process.peak_rss_mb,
        "checkpoint": shown(ckpt),
    }


def seq2attn_decode(checkpoint: str, ws: Path, name: str, greedy_only: bool = False) -> dict:
    out = ws / f"{name}.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.seq2attn_speed",
        "decode",
        f"--ckpt={checkpoint}",
        f"--out={shown(out)}",
        "--batch-sentences=64",
        f"--data-root={shown(corpus())}",
    ]
    if greedy_only:
        command.append("--greedy-only")
    process = run_measured(command, ws / f"{name}.log", cwd=REPO)
    return {
        **json.loads(out.read_text()),
        "wall_s": process.wall_s,
        "peak_rss_mb": process.peak_rss_mb,
    }


def ratio(results: dict[str, float | None]) -> str:
    """seq2attn over the faster peer, e.g. "1.52x"."""
    others = [v for k, v in results.items() if k != "seq2attn" and v]
    ours = results.get("seq2attn")
    if not others or not ours:
        return "n/a"
    return f"{ours / max(others):.2f}x"


ROWS = (  # label, report key, format
    ("R1 training, target tokens/s, fp32", "train_r1_tok_s", "{:,.0f}"),
    ("R1 training, target tokens/s, bf16-mixed (peers: fp32)", "train_r1_bf16_tok_s", "{:,.0f}"),
    ("R2 training, target tokens/s, fp32", "train_r2_tok_s", "{:,.0f}"),
    ("R2 training, target tokens/s, bf16-mixed (peers: fp32)", "train_r2_bf16_tok_s", "{:,.0f}"),
    ("R1 greedy decoding, sentences/s", "greedy_sent_s", "{:,.1f}"),
    ("R1 beam-5 decoding, sentences/s", "beam5_sent_s", "{:,.1f}"),
    ("R1 training peak RSS, MB", "peak_rss_mb", "{:,.0f}"),
    ("R1 fraction of fp32 GEMM peak", "mfu_r1", "{:.1%}"),
    ("R2 fraction of fp32 GEMM peak", "mfu_r2", "{:.1%}"),
)


def markdown(report: dict[str, Any]) -> str:
    rows = []
    for label, key, fmt in ROWS:
        values = report[key]
        cells = [fmt.format(values[t]) if values.get(t) is not None else "n/a" for t in TOOLS]
        better = ratio(values)
        if key == "peak_rss_mb" and better != "n/a":  # lower is better: show the peer's share
            better = f"{1 / float(better[:-1]):.2f}x less"
        rows.append([label, *cells, better])
    peak, bleu, host = report["gemm_peak_gflops"], report["bleu_same_steps"], report["machine"]
    caption = (
        f"GEMM peak measured in this run: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 "
        f"{peak['bf16']:.0f} GFLOP/s. {describe_machine(host)}, {host['threads']} threads, torch "
        f"{host['torch']}, {report['date']}, commit {report['commit']}; {report['timed_steps']} "
        f"timed steps after {report['warmup_steps']} warm-up steps; bf16-mixed vs 32-true greedy "
        f"BLEU after the same steps: {bleu['bf16-mixed']:.2f} vs {bleu['32-true']:.2f}.\n"
    )
    return table(["", *TOOLS, "seq2attn vs faster peer"], rows) + "\n" + caption


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few steps, OpenNMT-py only")
    parser.add_argument("--peers", default=None, help="comma-separated subset of the peers")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench")
    parser.add_argument(
        "--resume", action="store_true", help="reuse the results of runs an earlier call finished"
    )
    args = parser.parse_args()
    require("python -m benchmarks.speed", corpus(), SPM_MODEL)
    warmup = args.warmup or (10 if args.quick else 50)
    steps = args.steps or (30 if args.quick else 200)
    tools = args.peers.split(",") if args.peers else (["opennmt"] if args.quick else peers.PEERS)
    started = time.perf_counter()
    ws_root = args.work_dir / ("quick" if args.quick else "full")
    ws_root.mkdir(parents=True, exist_ok=True)

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

    def once(name: str, measure: Callable[[], dict]) -> dict:
        """The result of ``measure``, kept in the work folder; --resume reuses a kept one."""
        kept = ws_root / "results" / f"{name}.json"
        if args.resume and kept.exists():
            say(f"{name}: reusing {kept}")
            return json.loads(kept.read_text())
        result = measure()
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps(result, indent=2, default=str) + "\n")
        return result

    peak = {"fp32": gemm_peak_gflops(torch.float32), "bf16": gemm_peak_gflops(torch.bfloat16)}
    say(f"GEMM peak fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.0f} GFLOP/s")
    bins = {tool: peers.install(tool, REPO / ".cache" / "peers") for tool in tools}
    ws = peers.prepare_data(corpus(), SPM_MODEL, ws_root / "peers")
    runs: dict[str, Any] = {}
    for model in ("r1", "r2"):  # alternate the tools within each model
        for tool in ("seq2attn", *tools, "seq2attn_bf16"):
            say(f"training {model} with {tool} ({warmup} + {steps} steps)")

            def measure(model: str = model, tool: str = tool) -> dict:
                if tool.startswith("seq2attn"):
                    precision = "bf16-mixed" if tool.endswith("bf16") else "32-true"
                    return seq2attn_train(model, precision, ws_root, warmup, steps)
                trained = peers.train(tool, model, ws, bins[tool], warmup=warmup, steps=steps)
                return {
                    "tok_s": trained.tok_s,
                    "peak_rss_mb": trained.peak_rss_mb,
                    "wall_s": trained.wall_s,
                    "checkpoint": str(trained.checkpoint),
                }

            result = once(f"train_{model}_{tool}", measure)
            runs[f"train_{model}_{tool}"] = result
            say(
                f"  {result['tok_s']:,.0f} target tokens/s, peak RSS "
                f"{result['peak_rss_mb']:,.0f} MB"
            )
    decodes: dict[str, Any] = {}
    say("decoding test_2016_flickr with each R1 model")
    decodes["seq2attn"] = once(
        "decode_seq2attn",
        lambda: seq2attn_decode(runs["train_r1_seq2attn"]["checkpoint"], ws_root, "decode"),
    )
    decodes["seq2attn_bf16"] = once(
        "decode_seq2attn_bf16",
        lambda: seq2attn_decode(
            runs["train_r1_seq2attn_bf16"]["checkpoint"], ws_root, "decode_bf16", True
        ),
    )
    for tool in tools:

        def measure_decoding(tool: str = tool) -> dict:
            checkpoint, result = Path(runs[f"train_r1_{tool}"]["checkpoint"]), {}
            for beam, name in ((1, "greedy"), (5, "beam5")):
                decoded = peers.decode(tool, checkpoint, beam, ws, bins[tool])
                result[f"{name}_sent_s"] = decoded.sent_s
                result[f"{name}_wall_s"] = decoded.wall_s
                result[f"{name}_peak_rss_mb"] = decoded.peak_rss_mb
                result[f"{name}_bleu"] = peers.bleu(decoded.hypotheses, ws.text / "test.en")
            return result

        decodes[tool] = once(f"decode_{tool}", measure_decoding)
    say("done decoding")

    def per_tool(key: str, suffix: str = "", source: dict | None = None) -> dict[str, float | None]:
        source = runs if source is None else source
        values = {}
        for tool in TOOLS:
            entry = source.get(key.format(tool=tool + (suffix if tool == "seq2attn" else "")))
            values[tool] = None if entry is None else entry["tok_s"]
        return values

    flops = {m: runs[f"train_{m}_seq2attn"]["train_flops_per_target_token"] for m in ("r1", "r2")}

    def mfu(model: str) -> dict[str, float | None]:
        rates = per_tool(f"train_{model}_{{tool}}")
        return {
            t: None if r is None else r * flops[model] / (peak["fp32"] * 1e9)
            for t, r in rates.items()
        }

    report: dict[str, Any] = {
        "train_r1_tok_s": per_tool("train_r1_{tool}"),
        "train_r1_bf16_tok_s": per_tool("train_r1_{tool}", "_bf16"),
        "train_r2_tok_s": per_tool("train_r2_{tool}"),
        "train_r2_bf16_tok_s": per_tool("train_r2_{tool}", "_bf16"),
        "greedy_sent_s": {t: decodes.get(t, {}).get("greedy_sent_s") for t in TOOLS},
        "beam5_sent_s": {t: decodes.get(t, {}).get("beam5_sent_s") for t in TOOLS},
        "mfu_r1": mfu("r1"),
        "mfu_r2": mfu("r2"),
        "mfu_bf16": {
            m: runs[f"train_{m}_seq2attn_bf16"]["tok_s"] * flops[m] / (peak["bf16"] * 1e9)
            for m in ("r1", "r2")
        },
        "train_flops_per_target_token": flops,
        "gemm_peak_gflops": peak,
        "peak_rss_mb": {t: (runs.get(f"train_r1_{t}") or {}).get("peak_rss_mb") for t in TOOLS},
        "bleu_same_steps": {
            "32-true": decodes["seq2attn"]["greedy_bleu"],
            "bf16-mixed": decodes["seq2attn_bf16"]["greedy_bleu"],
        },
        "decoding": decodes,
        "runs": runs,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "commit": current_commit(),
        "wall_s": time.perf_counter() - started,
    }
    stem = "quick" if args.quick else "latest"
    table_text = markdown(report)
    written, _ = write_result(stem, report, table_text)
    print(table_text)
    say(f"wrote {shown(written)} and {stem}.md")


if __name__ == "__main__":
    main()
