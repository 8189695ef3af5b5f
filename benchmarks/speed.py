"""Speed against OpenNMT-py and JoeyNMT on this machine, in one run (`make bench`).

    python -m benchmarks.speed [--quick] [--peers opennmt,joeynmt] [--repeats N] [--resume]

Every tool trains the reference models R1 and R2 (conf/experiment/bench_r1.yaml, bench_r2.yaml)
on Multi30k de->en with the shared SentencePiece model, one process at a time, alternating
tools, ``--repeats`` times: steady-state target tokens per second after ``--warmup`` steps over
``--steps`` steps. seq2attn trains in 32-true and bf16-mixed (bf16-mixed is skipped, and said
so, where this machine's bf16 products run at under a tenth of fp32's, as on CPUs without bf16
instructions); ``auto`` is the precision ``precision=auto`` picks here. The peers train in fp32,
their fastest CPU mode. Each tool's last R1 model then decodes test_2016_flickr greedy and with
beam 5, ``--repeats`` times alternating tools, in batches of 64 sentences under one maximum-length
rule (100 pieces, no length ratio): decoding time with the model loaded, and the whole process
from start to the last line written (seq2attn: ``src/translate.py``). seq2attn's beam search
stops as OpenNMT-py's default does, with the same ``avg`` length normalisation (a sentence ends
when its best beam ends: ``decoding.early_stop=true``; OpenNMT-py's ``avg`` also counts BOS in the
length), and once more with its own exact stop (``beam5_exact``); JoeyNMT keeps its own search.
Each figure is the median of its repetitions, with their min and max. The fraction of the
machine's peak is the model's FLOPs (seq2attn.flops, from the shapes) per second over a
square-GEMM peak measured at the start. The fp32 rate of one product size is probed at the
start, after each round of training and after decoding (with ``--resume``, after those that
measured something, added to the kept probes of earlier calls); where the fastest probe beat the
slowest by more than a sixth, the table warns that the machine's speed moved (other load on the
host may move the tools' figures).
Writes benchmarks/results/latest.json and latest.md (quick mode: quick.json and quick.md).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from benchmarks import peers
from benchmarks.common import (
    REPO,
    RESULTS,
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
from seq2attn.precision import choose_precision

TOOLS = ("seq2attn", *peers.PEERS)
# every hypothesis may run to this many pieces, in every tool (no ratio to the source length)
MAX_OUTPUT_PIECES = 100
# bf16-mixed training is timed only where bf16 products reach this share of fp32's speed
BF16_TIMED_FROM = 0.1
# the table warns that the machine's speed moved where the fastest fp32 probe of a run exceeds
# the slowest by more than this factor
UNSTEADY_FROM = 7 / 6
BEAMS = (("greedy", 1), ("beam5", 5))
# seq2attn's overrides for OpenNMT-py's default beam search (its stop and avg normalisation), and
# for the same ranking with seq2attn's default (exact) stop
PEER_SEARCH = ("decoding.length_penalty_type=avg", "decoding.early_stop=true")
EXACT_SEARCH = ("decoding.length_penalty_type=avg",)


def gemm_peak_gflops(
    dtype: torch.dtype, sizes: tuple[int, ...] = (1024, 2048), seconds: float = 2.0
) -> float:
    """Best sustained square-matrix product rate, GFLOP/s, over ``sizes``. Where one product
    takes longer than ``seconds`` (bf16 emulated in software), its rate is the answer."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        began = time.perf_counter()
        a @ b
        first = time.perf_counter() - began
        if first > seconds:
            return max(best, 2 * n**3 / first / 1e9)
        for _ in range(2):
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


def parallel_batches(options: tuple[str, ...]) -> int:
    """Batches src/translate.py searched at a time under the overrides ``options``: the one
    given there, else its default."""
    for option in options:
        if option.startswith("parallel_batches="):
            return int(option.split("=", 1)[1])
    return int(OmegaConf.load(REPO / "conf" / "translate.yaml").parallel_batches)


def seq2attn_translate(
    checkpoint: str, ws: peers.Workspace, name: str, beam: int, options: tuple[str, ...] = ()
) -> dict:
    """test_2016_flickr through ``src/translate.py`` in batches of 64 sentences, with the
    ``decoding`` overrides ``options``: sentences per second of search (its log line), the whole
    process's wall time, and BLEU."""
    out_dir = ws.root / "decode" / name
    output = out_dir / "hypotheses.en"
    decoding = ["decoding=greedy"] if beam == 1 else ["decoding=beam", f"decoding.beam_size={beam}"]
    command = [
        sys.executable,
        "src/translate.py",
        f"ckpt_path={checkpoint}",
        f"input={shown(ws.text / f'test.{peers.SRC}')}",
        f"output={shown(output)}",
        *decoding,
        *options,
        "decoding.max_length_a=0",
        f"decoding.max_length_b={MAX_OUTPUT_PIECES}",
        "max_tokens=null",
        "max_sentences=64",
        f"hydra.run.dir={shown(out_dir)}",
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "translate.log"
    process = run_measured(command, log, cwd=REPO)
    text = log.read_text()
    found = re.search(r"translated (\d+) sentences in ([\d.]+) s of search", text)
    if found is None:
        raise RuntimeError(f"{shown(log)} has no 'translated N sentences in S s' line")
    sentences, seconds = int(found[1]), float(found[2])
    return {
        "output_precision": output_precision(text, options),
        "parallel_batches": parallel_batches(options),
        "sent_s": sentences / seconds,
        "decode_s": seconds,
        "process_s": process.wall_s,
        "peak_rss_mb": process.peak_rss_mb,
        "bleu": peers.bleu(output, ws.text / f"test.{peers.TGT}"),
        "words": mean_words(output),
    }


def output_precision(log: str, options: tuple[str, ...]) -> str:
    """The output layer's precision a ``src/translate.py`` run used: what its log says ``auto``
    chose, else the one given in ``options``."""
    chosen = re.search(r"decoding\.output_precision=auto: chose (\w+)", log)
    if chosen:
        return chosen[1]
    given = [o.split("=", 1)[1] for o in options if o.startswith("decoding.output_precision=")]
    return given[-1] if given else "auto"


def peer_translate(tool: str, checkpoint: str, ws: peers.Workspace, bin_dir: Path, beam: int):
    decoded = peers.decode(tool, Path(checkpoint), beam, ws, bin_dir, max_length=MAX_OUTPUT_PIECES)
    return {
        "sent_s": decoded.sent_s,
        "decode_s": decoded.decode_s,
        "process_s": decoded.wall_s,
        "peak_rss_mb": decoded.peak_rss_mb,
        "bleu": peers.bleu(decoded.hypotheses, ws.text / f"test.{peers.TGT}"),
        "words": mean_words(decoded.hypotheses),
    }


def mean_words(hypotheses: Path) -> float:
    """Whitespace-separated words per line of a hypotheses file: how long each model's outputs
    run, which sets how many steps its decoding takes."""
    lines = hypotheses.read_text(encoding="utf-8").splitlines()
    return sum(len(line.split()) for line in lines) / max(1, len(lines))


def summary(values: list[float]) -> dict[str, Any]:
    """The median of repeated measurements, with min, max and every value."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "values": values,
    }


def ratio(results: dict[str, float | None], lower_is_better: bool = False) -> str:
    """seq2attn against the best peer, e.g. "1.52x" (for times and memory: the peer's over
    seq2attn's, so above 1 is better for seq2attn too)."""
    others = [v for k, v in results.items() if k != "seq2attn" and v]
    ours = results.get("seq2attn")
    if not others or not ours:
        return "n/a"
    if lower_is_better:
        return f"{min(others) / ours:.2f}x"
    return f"{ours / max(others):.2f}x"


ROWS = (  # label, report key, format, lower is better
    ("R1 training, target tokens/s, fp32", "train_r1_tok_s", "{:,.0f}", False),
    ("R1 training, bf16-mixed (peers: fp32)", "train_r1_bf16_tok_s", "{:,.0f}", False),
    ("R1 training, precision=auto (peers: fp32)", "train_r1_auto_tok_s", "{:,.0f}", False),
    ("R2 training, target tokens/s, fp32", "train_r2_tok_s", "{:,.0f}", False),
    ("R2 training, bf16-mixed (peers: fp32)", "train_r2_bf16_tok_s", "{:,.0f}", False),
    ("R2 training, precision=auto (peers: fp32)", "train_r2_auto_tok_s", "{:,.0f}", False),
    ("R1 greedy decoding, sentences/s", "greedy_sent_s", "{:,.1f}", False),
    ("R1 beam-5 decoding, sentences/s", "beam5_sent_s", "{:,.1f}", False),
    ("R1 beam-5, seq2attn's exact stop, sentences/s", "beam5_exact_sent_s", "{:,.1f}", False),
    ("R1 greedy, whole process, s", "greedy_process_s", "{:,.2f}", True),
    ("R1 beam-5, whole process, s", "beam5_process_s", "{:,.2f}", True),
    ("R1 training peak RSS, MB", "peak_rss_mb", "{:,.0f}", True),
    ("R1 fraction of fp32 GEMM peak", "mfu_r1", "{:.1%}", False),
    ("R2 fraction of fp32 GEMM peak", "mfu_r2", "{:.1%}", False),
)


def median_cell(fmt: str, median: float, spread: dict[str, Any] | None) -> str:
    """A median in ``fmt``, with the min–max of its measurements where there were several."""
    cell = fmt.format(median)
    if spread and len(spread["values"]) > 1:
        cell += f" ({fmt.format(spread['min'])}–{fmt.format(spread['max'])})"
    return cell


def _words(value: float | None) -> str:
    """Words per hypothesis, or n/a for a decode kept from before they were counted."""
    return "n/a" if value is None else f"{value:.1f}"


PARALLEL_NOTE = (
    "seq2attn searched {} batches at a time (`parallel_batches`: each batch in its own thread on "
    "its share of the cores)."
)
OUTPUT_LAYER_NOTE = (
    "seq2attn decoded with its output layer in {} (`decoding.output_precision=auto`; bf16 "
    "ranks a shortlist that fp32 scores, with the tokens of fp32)."
)


def steadiness(probes: list[float]) -> str:
    """What the fp32 product rates probed during a run say about the machine's steadiness."""
    low, high = min(probes), max(probes)
    measured = (
        f"fp32 products probed {len(probes)} times during the measurements ran at "
        f"{low:.0f}–{high:.0f} GFLOP/s"
    )
    if high <= UNSTEADY_FROM * low:
        return f"{measured}: the probes agreed within a sixth."
    return (
        f"**{measured}: the fastest probe ran {high / low:.2f}x the slowest**, so other load on "
        "the host may have moved the tools' figures; the tools alternate, but ratios from this "
        "run are less certain than their ranges show."
    )


def markdown(report: dict[str, Any]) -> str:
    rows = []
    for label, key, fmt, lower in ROWS:
        values, spread = report[key], report["spread"].get(key, {})
        cells = []
        for tool in TOOLS:
            value = values.get(tool)
            cells.append("n/a" if value is None else median_cell(fmt, value, spread.get(tool)))
        rows.append([label, *cells, ratio(values, lower)])
    peak, host = report["gemm_peak_gflops"], report["machine"]
    bleu = report["bleu"]
    # one probe (a resumed call that measured nothing) says nothing about steadiness
    probes = report.get("gemm_fp32_probes") or []
    steady = [steadiness(probes)] if len(probes) > 1 else []
    lines = [
        f"Median of {report['repeats']} runs per tool (min–max), alternating tools. GEMM peak "
        f"measured in this run: fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s. "
        f"{describe_machine(host)}, {host['threads']} threads, torch {host['torch']}, "
        f"{report['date']}, commit {report['commit']}; {report['timed_steps']} timed steps after "
        f"{report['warmup_steps']} warm-up steps.",
        *steady,
        f"precision=auto chose {report['precision_auto']['chosen']}: "
        f"{report['precision_auto']['reason']}.",
        f"Decoding: test_2016_flickr, batches of 64 sentences, every hypothesis up to "
        f"{report['max_output_pieces']} pieces in every tool (no length ratio); BLEU greedy / "
        "beam 5: "
        + ", ".join(f"{tool} {b['greedy']:.2f} / {b['beam5']:.2f}" for tool, b in bleu.items())
        + f" (seq2attn's exact stop: {report['bleu_exact_stop']:.2f}); words per hypothesis "
        "greedy / beam 5: "
        + ", ".join(
            f"{tool} {_words(w['greedy'])} / {_words(w['beam5'])}"
            for tool, w in report["words"].items()
        )
        + ". seq2attn's beam search stops as OpenNMT-py's default does (avg length "
        "normalisation, a sentence ends when its best beam ends); its exact stop ends a sentence "
        "when no live beam can beat its finished ones.",
    ]
    if report.get("output_precision"):
        lines.append(OUTPUT_LAYER_NOTE.format(report["output_precision"]))
    if report.get("parallel_batches"):
        lines.append(PARALLEL_NOTE.format(report["parallel_batches"]))
    if report["bf16_skipped"]:
        lines.append(f"bf16-mixed training not timed: {report['bf16_skipped']}.")
    budget = report.get("budget_peak_rss_mb")
    if budget:
        lines.append(
            "Peak RSS of the 20-minute budget runs (benchmarks/results/budget.json, "
            f"{describe_machine(budget['machine'])}): "
            + "; ".join(
                f"{model.upper()} " + ", ".join(f"{tool} {mb:,.0f} MB" for tool, mb in row.items())
                for model, row in budget["runs"].items()
            )
            + "."
        )
    return table(["", *TOOLS, "seq2attn vs best peer"], rows) + "\n" + "\n".join(lines) + "\n"


def budget_memory() -> dict[str, Any] | None:
    """Peak RSS per model and tool (the largest over a tool's seeds) of the budget runs in
    benchmarks/results/budget.json made on one machine: the machine of the newest run."""
    path = RESULTS / "budget.json"
    if not path.is_file():
        return None
    budget = json.loads(path.read_text())
    found = budget.get("runs", {})
    placed = [run for run in found.values() if "fingerprint" in run]
    if not placed:  # written before the harness kept fingerprints: one machine per file
        machine = budget.get("machine", "unknown")
        chosen = {name: {**run, "model": name.partition("_")[0]} for name, run in found.items()}
        for name, run in chosen.items():
            run.setdefault("tool", name.partition("_")[2])
    else:
        machine = max(placed, key=lambda run: run.get("date", ""))["fingerprint"]
        chosen = {n: r for n, r in found.items() if r.get("fingerprint") == machine}
    runs: dict[str, dict[str, float]] = {}
    for run in chosen.values():
        if run.get("peak_rss_mb"):
            tools = runs.setdefault(run["model"], {})
            tools[run["tool"]] = max(tools.get(run["tool"], 0.0), run["peak_rss_mb"])
    return {"runs": runs, "machine": machine}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few steps, OpenNMT-py only")
    parser.add_argument("--peers", default=None, help="comma-separated subset of the peers")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None, help="runs per tool (3; quick: 1)")
    parser.add_argument("--work-dir", type=Path, default=REPO / ".cache" / "bench")
    parser.add_argument(
        "--resume", action="store_true", help="reuse the results of runs an earlier call finished"
    )
    args = parser.parse_args()
    require("python -m benchmarks.speed", corpus(), SPM_MODEL)
    warmup = args.warmup or (10 if args.quick else 30)
    steps = args.steps or (30 if args.quick else 120)
    repeats = args.repeats or (1 if args.quick else 3)
    tools = args.peers.split(",") if args.peers else (["opennmt"] if args.quick else peers.PEERS)
    started = time.perf_counter()
    ws_root = args.work_dir / ("quick" if args.quick else "full")
    ws_root.mkdir(parents=True, exist_ok=True)

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

    measured: list[str] = []  # what this call measured (not reused) since the last probe

    def once(name: str, measure: Callable[[], dict]) -> dict:
        """The result of ``measure``, kept in the work folder; --resume reuses a kept one."""
        kept = ws_root / "results" / f"{name}.json"
        if args.resume and kept.exists():
            say(f"{name}: reusing {shown(kept)}")
            return json.loads(kept.read_text())
        measured.append(name)
        result = measure()
        kept.parent.mkdir(parents=True, exist_ok=True)
        kept.write_text(json.dumps(result, indent=2, default=str) + "\n")
        return result

    peak = {"fp32": gemm_peak_gflops(torch.float32), "bf16": gemm_peak_gflops(torch.bfloat16)}
    say(f"GEMM peak fp32 {peak['fp32']:.0f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s")
    # one product size, so that the probes compare with each other; kept in the work folder with
    # the runs, so that --resume keeps the probes of the calls that measured the reused runs
    kept_probes = ws_root / "results" / "gemm_fp32_probes.json"
    probes: list[float] = []
    if args.resume and kept_probes.exists():
        probes = json.loads(kept_probes.read_text())

    def probe() -> None:
        """Probe after this call measured something since the last probe."""
        if probes and not measured:
            return
        measured.clear()
        probes.append(gemm_peak_gflops(torch.float32, sizes=(1024,), seconds=1.0))
        kept_probes.parent.mkdir(parents=True, exist_ok=True)
        kept_probes.write_text(json.dumps(probes) + "\n")
        say(f"fp32 products of 1,024 x 1,024 run at {probes[-1]:.0f} GFLOP/s")

    probe()
    auto, auto_reason = choose_precision(ws_root / "cache", "cpu")
    say(f"precision=auto picks {auto} here: {auto_reason}")
    bf16_skipped = ""
    if peak["bf16"] < BF16_TIMED_FROM * peak["fp32"]:
        bf16_skipped = (
            f"bf16 products ran at {peak['bf16'] / peak['fp32']:.1%} of fp32's speed on this CPU, "
            f"so {warmup + steps} steps would take hours"
        )
        say(f"bf16-mixed training not timed: {bf16_skipped}")
    variants = ["seq2attn", *tools] + ([] if bf16_skipped else ["seq2attn_bf16"])
    bins = {tool: peers.install(tool, REPO / ".cache" / "peers") for tool in tools}
    ws = peers.prepare_data(corpus(), SPM_MODEL, ws_root / "peers")
    runs: dict[str, Any] = {}
    for rep in range(1, repeats + 1):
        for model in ("r1", "r2"):  # alternate the tools within each model
            for tool in variants:
                say(f"round {rep}/{repeats}: {model} with {tool}, {warmup} + {steps} steps")

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

                result = once(f"train_{model}_{tool}_{rep}", measure)
                runs[f"train_{model}_{tool}_{rep}"] = result
                say(
                    f"  {result['tok_s']:,.0f} target tokens/s, peak RSS "
                    f"{result['peak_rss_mb']:,.0f} MB"
                )
        probe()
    decodes: dict[str, Any] = {}
    # each tool's R1 model of the last round (a tool's next R1 run replaces its checkpoint)
    checkpoints = {tool: runs[f"train_r1_{tool}_{repeats}"]["checkpoint"] for tool in variants}
    for rep in range(1, repeats + 1):
        for name, beam in BEAMS:
            for tool in ("seq2attn", *tools):
                say(f"round {rep}/{repeats}: {name} decoding with {tool}'s R1 model")

                def measure_decoding(tool: str = tool, name: str = name, beam: int = beam) -> dict:
                    if tool == "seq2attn":
                        options = PEER_SEARCH if beam > 1 else ()
                        return seq2attn_translate(
                            checkpoints[tool], ws, f"seq2attn-{name}", beam, options
                        )
                    return peer_translate(tool, checkpoints[tool], ws, bins[tool], beam)

                # seq2attn decoded otherwise before (another beam stop; the output layer in
                # fp32 only): such decodes are not reused by --resume
                kept = name
                if tool == "seq2attn":
                    kept = f"{name}_onmt_stop_auto" if beam > 1 else f"{name}_auto"
                result = once(f"decode_{tool}_{kept}_{rep}", measure_decoding)
                decodes[f"{tool}_{name}_{rep}"] = result
                say(f"  {result['sent_s']:,.1f} sentences/s, {result['process_s']:.1f} s process")
        say(f"round {rep}/{repeats}: beam5 decoding with seq2attn's exact stop")
        result = once(
            f"decode_seq2attn_beam5_exact_auto_{rep}",
            lambda: seq2attn_translate(
                checkpoints["seq2attn"], ws, "seq2attn-beam5-exact", 5, EXACT_SEARCH
            ),
        )
        decodes[f"seq2attn_beam5_exact_{rep}"] = result
        say(f"  {result['sent_s']:,.1f} sentences/s, {result['process_s']:.1f} s process")
    if not bf16_skipped:
        decodes["seq2attn_bf16_greedy_1"] = once(
            "decode_seq2attn_bf16_greedy_1",
            lambda: seq2attn_translate(checkpoints["seq2attn_bf16"], ws, "seq2attn-bf16-greedy", 1),
        )
    say("done decoding")
    probe()

    spread: dict[str, dict[str, Any]] = {}

    def per_tool(key: str, pick: Callable[[str], list[float]]) -> dict[str, float | None]:
        """The median per tool of the values ``pick(tool)`` returns; their spread in ``spread``."""
        medians: dict[str, float | None] = {}
        for tool in TOOLS:
            values = pick(tool)
            if not values:
                medians[tool] = None
                continue
            spread.setdefault(key, {})[tool] = summary(values)
            medians[tool] = statistics.median(values)
        return medians

    def train_rates(model: str, seq2attn_variant: str = "seq2attn") -> Callable[[str], list]:
        def pick(tool: str) -> list[float]:
            name = seq2attn_variant if tool == "seq2attn" else tool
            return [
                runs[key]["tok_s"]
                for rep in range(1, repeats + 1)
                if (key := f"train_{model}_{name}_{rep}") in runs
            ]

        return pick

    def decode_values(name: str, field: str) -> Callable[[str], list]:
        def pick(tool: str) -> list[float]:
            return [
                decodes[key][field]
                for rep in range(1, repeats + 1)
                if (key := f"{tool}_{name}_{rep}") in decodes
            ]

        return pick

    auto_variant = "seq2attn_bf16" if auto == "bf16-mixed" else "seq2attn"
    flops = {m: runs[f"train_{m}_seq2attn_1"]["train_flops_per_target_token"] for m in ("r1", "r2")}
    report: dict[str, Any] = {}
    for model in ("r1", "r2"):
        report[f"train_{model}_tok_s"] = per_tool(f"train_{model}_tok_s", train_rates(model))
        report[f"train_{model}_bf16_tok_s"] = per_tool(
            f"train_{model}_bf16_tok_s", train_rates(model, "seq2attn_bf16")
        )
        report[f"train_{model}_auto_tok_s"] = per_tool(
            f"train_{model}_auto_tok_s", train_rates(model, auto_variant)
        )
    for name in (*(name for name, _ in BEAMS), "beam5_exact"):
        report[f"{name}_sent_s"] = per_tool(f"{name}_sent_s", decode_values(name, "sent_s"))
        report[f"{name}_process_s"] = per_tool(
            f"{name}_process_s", decode_values(name, "process_s")
        )
    report["peak_rss_mb"] = per_tool(
        "peak_rss_mb",
        lambda tool: [
            runs[key]["peak_rss_mb"]
            for rep in range(1, repeats + 1)
            if (key := f"train_r1_{tool}_{rep}") in runs
        ],
    )
    for model in ("r1", "r2"):
        report[f"mfu_{model}"] = {
            tool: None if rate is None else rate * flops[model] / (peak["fp32"] * 1e9)
            for tool, rate in report[f"train_{model}_tok_s"].items()
        }
    report.update(
        {
            "mfu_bf16": {
                m: None
                if report[f"train_{m}_bf16_tok_s"]["seq2attn"] is None
                else report[f"train_{m}_bf16_tok_s"]["seq2attn"] * flops[m] / (peak["bf16"] * 1e9)
                for m in ("r1", "r2")
            },
            "train_flops_per_target_token": flops,
            "gemm_peak_gflops": peak,
            "gemm_fp32_probes": probes,
            "precision_auto": {"chosen": auto, "reason": auto_reason},
            "bf16_skipped": bf16_skipped,
            "bleu": {
                tool: {name: decodes[f"{tool}_{name}_1"]["bleu"] for name, _ in BEAMS}
                for tool in ("seq2attn", *tools)
            },
            "bleu_exact_stop": decodes["seq2attn_beam5_exact_1"]["bleu"],
            "output_precision": decodes["seq2attn_greedy_1"].get("output_precision"),
            "parallel_batches": decodes["seq2attn_greedy_1"].get("parallel_batches"),
            "words": {
                tool: {name: decodes[f"{tool}_{name}_1"].get("words") for name, _ in BEAMS}
                for tool in ("seq2attn", *tools)
            },
            "bleu_same_steps": {
                "32-true": decodes["seq2attn_greedy_1"]["bleu"],
                "bf16-mixed": (decodes.get("seq2attn_bf16_greedy_1") or {}).get("bleu"),
            },
            "budget_peak_rss_mb": budget_memory(),
            "max_output_pieces": MAX_OUTPUT_PIECES,
            "spread": spread,
            "decoding": decodes,
            "runs": runs,
            "repeats": repeats,
            "warmup_steps": warmup,
            "timed_steps": steps,
            "machine": machine(),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "commit": current_commit(),
            "wall_s": time.perf_counter() - started,
        }
    )
    stem = "quick" if args.quick else "latest"
    table_text = markdown(report)
    written, _ = write_result(stem, report, table_text)
    print(table_text)
    say(f"wrote {shown(written)} and {stem}.md")


if __name__ == "__main__":
    main()
