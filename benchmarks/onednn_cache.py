"""oneDNN's primitive cache against the matrix products of a training run.

    python -m benchmarks.onednn_cache                    # budget_r2, 100 steps, capacities 256-2048
    python -m benchmarks.onednn_cache --steps 300 --capacities 512,1024 experiment=budget_r1

On CPUs with bf16 instructions, bf16 products under autocast run through oneDNN, which compiles
one kernel (a "primitive") per distinct product shape and keeps the most recently used
``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` of them (1,024 by default). A training run's shapes follow its
batches' lengths, so the cache's size trades memory (every kept primitive) against compiling
again (every miss). This benchmark:

1. records the products (operator, operand shapes and strides) of the first ``--steps``
   training steps of an experiment, in this process;
2. gives each capacity the hit rate that sequence has in a least-recently-used cache of that
   size, and replays the sequence in a fresh process started with the capacity set, reporting
   the time per step and the growth of resident memory.

The replay multiplies bf16 operands on a CPU with bf16 instructions (oneDNN's path, as under
autocast). Elsewhere, where torch multiplies fp32 with its BLAS, the replay goes through oneDNN's
fp32 kernels instead (2-D products; a batched product as one of its batch x rows): a proxy for the
memory per primitive and the cost of a miss, which the Markdown says.
Writes benchmarks/results/onednn_cache.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.errors import HydraException

from benchmarks.common import (
    CONF,
    REPO,
    commit,
    corpus,
    machine,
    require,
    shown,
    table,
    training_only_trainer,
    write_result,
)

CAPACITY_VARIABLE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
PRODUCTS = ("mm", "addmm", "bmm", "baddbmm")
# an operand: its shape and strides; a product: its operator and operands
Operand = tuple[tuple[int, ...], tuple[int, ...]]
Product = tuple[str, tuple[Operand, ...]]


def lru_misses(sequence: Sequence[int], capacity: int) -> int:
    """How many of ``sequence``'s items a least-recently-used cache of ``capacity`` items misses
    (each miss is inserted, evicting the least recently used)."""
    cache: OrderedDict[int, None] = OrderedDict()
    misses = 0
    for item in sequence:
        if item in cache:
            cache.move_to_end(item)
            continue
        misses += 1
        if capacity > 0:
            cache[item] = None
            if len(cache) > capacity:
                cache.popitem(last=False)
    return misses


class ProductRecorder:
    """Numbers every distinct matrix product dispatched while active; ``steps`` holds each
    step's product numbers in order. With ``low_precision_only`` only products of bf16 or fp16
    operands count: under bf16-mixed autocast the fp32 ones go to the BLAS, not to oneDNN."""

    def __init__(self, low_precision_only: bool = False) -> None:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode

        self.counted = (torch.bfloat16, torch.float16) if low_precision_only else None

        self.products: dict[Product, int] = {}
        self.steps: list[list[int]] = []
        recorder = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func.overloadpacket.__name__ in PRODUCTS:
                    recorder.note(func.overloadpacket.__name__, args)
                return func(*args, **(kwargs or {}))

        self.mode = Mode()

    def note(self, name: str, args: Sequence[Any]) -> None:
        import torch

        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if self.counted and not any(t.dtype in self.counted for t in tensors):
            return
        operands = tuple((tuple(t.shape), tuple(t.stride())) for t in tensors)
        number = self.products.setdefault((name, operands), len(self.products))
        self.steps[-1].append(number)

    def __enter__(self) -> ProductRecorder:
        self.steps.append([])
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.mode.__exit__(*exc)


def record(overrides: Sequence[str], steps: int, output_dir: Path) -> dict[str, Any]:
    """The products of the first ``steps`` training steps of the composed experiment (its run
    folder: ``output_dir``)."""
    import lightning as L
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from seq2attn.config import validate
    from seq2attn.cpu_tuning import configure_cpu
    from seq2attn.data.datamodule import build_datamodule
    from seq2attn.module import build_module
    from seq2attn.precision import resolve_precision
    from seq2attn.quiet import silence_dependency_noise

    silence_dependency_noise()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.hydra.runtime.output_dir = cfg.paths.output_dir
    run = validate(cfg)
    configure_cpu(run.cpu)
    resolve_precision(cfg)
    L.seed_everything(cfg.seed)
    datamodule = build_datamodule(run.data)
    datamodule.setup("fit")
    module = build_module(cfg, run, datamodule)
    recorder = ProductRecorder(low_precision_only=low_precision(str(cfg.trainer.precision)))

    class RecordSteps(L.Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            recorder.__enter__()

        def on_train_batch_end(self, *args: Any) -> None:
            recorder.__exit__(None, None, None)

    trainer = training_only_trainer(cfg.trainer, steps, [RecordSteps()])
    trainer.fit(module, datamodule=datamodule)
    return {
        "products": [[name, [list(map(list, o)) for o in ops]] for name, ops in recorder.products],
        "steps": recorder.steps,
        "precision": str(cfg.trainer.precision),
    }


def low_precision(precision: str) -> bool:
    """Whether a Lightning precision multiplies in bf16 or fp16 ("bf16-mixed", "16-true", ...)."""
    return precision.split("-")[0] in ("bf16", "16")


def _rss_mb() -> float:
    """This process's resident memory (Linux's /proc), MiB."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def replay(recorded: dict[str, Any], bf16: bool) -> dict[str, Any]:
    """Run the recorded products in order on zero operands (bf16 through torch's ops, else fp32
    through oneDNN's linear); the time per step and this process's memory growth."""
    import torch

    products: list[Product] = [
        (name, tuple((tuple(s), tuple(t)) for s, t in ops)) for name, ops in recorded["products"]
    ]
    dtype = torch.bfloat16 if bf16 else torch.float32
    largest = max(
        1 + sum((size - 1) * stride for size, stride in zip(shape, strides, strict=True))
        for _, operands in products
        for shape, strides in operands
    )
    buffer = torch.zeros(largest, dtype=dtype)
    weights: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def run(product: Product) -> None:
        """One product: torch's operator on bf16 views, or oneDNN's fp32 linear layer for the
        product's rows x inner x columns (a batched product's batch counts as rows)."""
        name, operands = product
        views = [buffer.as_strided(shape, strides) for shape, strides in operands]
        if bf16:
            getattr(torch, name)(*views)
            return
        left, right = views[-2], views[-1]
        rows, inner, columns = left.numel() // left.shape[-1], left.shape[-1], right.shape[-1]
        if (columns, inner) not in weights:
            weights[columns, inner] = (
                torch.zeros(columns, inner).to_mkldnn(),
                torch.zeros(columns),
            )
        weight, bias = weights[columns, inner]
        torch._C._nn.mkldnn_linear(torch.zeros(rows, inner).to_mkldnn(), weight, bias)

    start, began = _rss_mb(), time.perf_counter()
    for step in recorded["steps"]:
        for number in step:
            run(products[number])
    seconds = time.perf_counter() - began
    return {
        "ms_per_step": 1e3 * seconds / len(recorded["steps"]),
        "rss_growth_mb": _rss_mb() - start,
        "operands": "bf16 (torch ops)" if bf16 else "fp32 (oneDNN linear, a proxy)",
    }


def replay_with_capacity(sequence_file: Path, capacity: int, bf16: bool) -> dict[str, Any]:
    """:func:`replay` in a fresh process whose oneDNN cache holds ``capacity`` primitives."""
    print(f"replaying the products with a cache of {capacity} kernels", file=sys.stderr, flush=True)
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, "-m", "benchmarks.onednn_cache", "--replay"]
        command += [str(sequence_file), "--out", out.name] + (["--bf16"] if bf16 else [])
        env = {**os.environ, CAPACITY_VARIABLE: str(capacity)}
        done = subprocess.run(command, env=env, cwd=REPO, timeout=4 * 3600)
        if done.returncode != 0:
            sys.exit(f"error: the replay with {capacity} kernels exited with {done.returncode}")
        return json.loads(Path(out.name).read_text())


def summary(recorded: dict[str, Any], capacities: Sequence[int], bf16: bool) -> dict[str, Any]:
    """Products per step, distinct products, and per capacity the simulated misses and the
    replay's time and memory."""
    sequence = [number for step in recorded["steps"] for number in step]
    steps = len(recorded["steps"])
    with tempfile.NamedTemporaryFile("w", suffix=".json") as sequence_file:
        json.dump(recorded, sequence_file)
        sequence_file.flush()
        rows = {}
        for capacity in capacities:
            misses = lru_misses(sequence, capacity)
            rows[capacity] = {
                "misses": misses,
                "hit_rate": round(1 - misses / len(sequence), 4),
                **replay_with_capacity(Path(sequence_file.name), capacity, bf16),
            }
    return {
        "steps": steps,
        "products": len(sequence),
        "distinct_products": len(recorded["products"]),
        "capacities": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    """The result as a page: what was recorded and replayed, one row per capacity."""
    steps = result["steps"]
    rows = [
        [
            f"{capacity:,}",
            f"{row['hit_rate']:.1%}",
            f"{row['misses'] / steps:.1f}",
            f"{row['ms_per_step']:.1f}",
            f"{row['rss_growth_mb']:,.0f}",
        ]
        for capacity, row in result["capacities"].items()
    ]
    headers = ["capacity", "hit rate", "misses / step", "replay ms / step", "memory growth, MB"]
    bf16 = next(iter(result["capacities"].values()))["operands"].startswith("bf16")
    cpu = result["machine"]
    caveat = (
        "The replay multiplies bf16 operands through torch's operators, as autocast does."
        if bf16
        else "This CPU has no bf16 kernels: the replay multiplies in fp32 through oneDNN's linear"
        " layer, which adds kernels of its own (layout conversions) and merges products that"
        " differ only in strides, so its time and memory are a proxy, not the bf16 cache's."
    )
    kind = "bf16 or fp16 " if low_precision(result["precision"]) else ""
    return (
        f"# oneDNN's primitive cache: `{' '.join(result['overrides'])}`\n\n"
        f"{steps} training steps ({result['precision']}; validation not recorded) made "
        f"{result['products'] / steps:.0f} {kind}matrix products each, "
        f"{result['distinct_products']:,} distinct (operator, shapes, strides) in all. Misses are"
        " those of a least-recently-used cache of each capacity, first sightings included. "
        f"{caveat} {cpu['cpu']} ({', '.join(cpu['flags'])}), torch {cpu.get('torch', '?')}, "
        f"commit {result['commit']}, {result['date']}.\n\n" + table(headers, rows)
    )


def one_line(error: HydraException) -> str:
    """Hydra's complaint about an override and its cause, on one line."""
    said = str(error).splitlines()[0]
    cause = str(error.__cause__).splitlines()[0] if error.__cause__ else ""
    return f"{said} {cause}".strip()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.onednn_cache",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--steps", type=int, default=100, help="training steps recorded (100)")
    parser.add_argument(
        "--capacities", default="256,512,1024,2048", help="cache sizes compared (256,512,1024,2048)"
    )
    parser.add_argument("--replay", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (experiment=budget_r2)")
    args = parser.parse_args(argv)
    if args.replay:  # the child process of replay_with_capacity
        if args.out is None:
            parser.error("--replay needs --out")
        args.out.write_text(json.dumps(replay(json.loads(args.replay.read_text()), args.bf16)))
        return
    try:
        capacities = [int(c) for c in args.capacities.split(",")]
    except ValueError:
        parser.error(f"--capacities {args.capacities}: expected whole numbers joined by commas")
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: must be >= 1")
    if min(capacities) < 0:
        parser.error(f"--capacities {args.capacities}: every capacity must be >= 0")
    overrides = list(args.overrides)
    if not any(o.startswith("experiment=") for o in overrides):
        overrides.insert(0, "experiment=budget_r2")
    require("python -m benchmarks.onednn_cache", corpus())
    if not any(o.startswith("data.root=") for o in overrides):
        overrides = [*overrides, f"data.root={shown(corpus())}"]
    print(f"recording the products of {args.steps} training steps", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as output_dir:
        try:
            recorded = record(overrides, args.steps, Path(output_dir))
        except HydraException as error:
            parser.error(one_line(error))
    described = machine()  # after torch loaded: its version and threads
    bf16 = bool({"avx512_bf16", "amx_bf16"} & set(described["flags"]))
    result = {
        "overrides": overrides,
        "precision": recorded["precision"],
        "machine": described,
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        **summary(recorded, capacities, bf16),
    }
    _, md_path = write_result("onednn_cache", result, markdown(result))
    print(md_path.read_text())


if __name__ == "__main__":
    main()
