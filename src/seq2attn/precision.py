"""``precision=auto``: ``bf16-mixed`` where this machine multiplies faster in bf16, else
``32-true``, resolved before the Trainer is built (Lightning knows no ``auto`` precision).

On CUDA the GPU's bf16 support decides. On a CPU, two things do. An x86 or Arm CPU whose
``/proc/cpuinfo`` flags list no bf16 instructions (``avx512_bf16``, ``amx_bf16``, Arm's ``bf16``)
emulates bf16 products, far slower than fp32 (0.01x on a 2-core AMD EPYC without them), so it
gets ``32-true`` without a probe. Otherwise having the instructions is not enough (bf16-mixed
trained at 0.6x the fp32 speed on an Intel Xeon with AVX-512 BF16 but no AMX), so a probe times
products of the models' size in fp32 and under bf16 autocast, and ``bf16-mixed`` is chosen when
bf16 is at least ``MARGIN`` times faster. The probe's result is cached under the cache folder,
keyed by the CPU model, its flags, the torch version and the thread count.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

from seq2attn.data.cache import atomic_write_bytes, cache_key

log = logging.getLogger(__name__)

# Autocast adds casts around every product and leaves the element-wise work in fp32, so a
# training step gains less than its products: bf16 products 3x faster gave 1.3-1.5x faster steps.
MARGIN = 1.2
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")
# (M, K, N) of the timed products: a batch of ~2,000 target tokens through a 512-wide layer
PROBE_SHAPE = (2048, 512, 2048)
# timed first: where bf16 is so slow there that the large products would take longer than
# PROBE_LIMIT_S (emulated bf16: about a minute), the small products' ratio is the answer
SNIFF_SHAPE, PROBE_LIMIT_S = (256, 256, 256), 3.0
REPEATS = 5
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Cpu:
    """A CPU as ``/proc/cpuinfo`` names it; ``flags`` is None where it lists none."""

    model: str
    flags: frozenset[str] | None

    @property
    def has_bf16(self) -> bool | None:
        """Whether the flags list bf16 instructions; None when the flags are unknown."""
        return None if self.flags is None else bool(self.flags & set(BF16_FLAGS))


@dataclass(frozen=True)
class PrecisionChoice:
    """What the config asked for, what the Trainer gets, and why."""

    requested: str
    chosen: str
    reason: str


def read_cpu(cpuinfo: Path = CPUINFO) -> Cpu:
    """The first processor's model name and flags (x86 ``flags``, Arm ``Features``)."""
    fields: dict[str, str] = {}
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    flags = fields.get("flags", fields.get("Features"))
    model = fields.get("model name") or platform.processor() or platform.machine() or "this CPU"
    return Cpu(model, None if flags is None else frozenset(flags.split()))


def probe_speedup() -> float:
    """Throughput of products under bf16 autocast over fp32 ones at ``PROBE_SHAPE`` (about a
    second), or at ``SNIFF_SHAPE`` when bf16 is too slow there for the large products."""
    fp32, bf16 = _seconds(SNIFF_SHAPE)
    scale = math.prod(PROBE_SHAPE) / math.prod(SNIFF_SHAPE)
    if bf16 * scale * (REPEATS + 1) <= PROBE_LIMIT_S:
        fp32, bf16 = _seconds(PROBE_SHAPE)
    return fp32 / bf16


def _seconds(shape: tuple[int, int, int]) -> tuple[float, float]:
    """Seconds per (M, K) @ (K, N) product in fp32 and under bf16 autocast."""
    m, k, n = shape
    a, b = torch.randn(m, k), torch.randn(k, n)
    return _best_seconds(a, b, bf16=False), _best_seconds(a, b, bf16=True)


def _best_seconds(a: torch.Tensor, b: torch.Tensor, bf16: bool) -> float:
    """The fastest of ``REPEATS`` products after a warm-up (oneDNN builds kernels on the first
    call); the fastest, because other processes only ever slow a product down."""
    times = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        torch.mm(a, b)
        for _ in range(REPEATS):
            start = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - start)
    return min(times)


def choose_precision(
    cache_dir: str | Path,
    accelerator: str = "auto",
    cpu: Cpu | None = None,
    probe: Callable[[], float] = probe_speedup,
) -> tuple[str, str]:
    """The precision ``auto`` stands for on this machine, and the reason.

    Args:
        cache_dir: folder of the cached probe results.
        accelerator: ``trainer.accelerator``; CUDA is used for ``auto``, ``gpu`` and ``cuda``
            when a GPU is present.
        cpu: the CPU to decide for (default: :func:`read_cpu`).
        probe: returns bf16's speed over fp32's (default: :func:`probe_speedup`).
    """
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", f"{name} supports bf16"
        return "32-true", (
            f"{name} has no bf16; 16-mixed would need loss scaling and can overflow, so it is "
            "used only when asked for (precision=16-mixed)"
        )
    if accelerator not in ("auto", "cpu"):
        return "32-true", f"precision=auto decides for CPUs and CUDA GPUs, not {accelerator}"
    cpu = cpu or read_cpu()
    if cpu.has_bf16 is False:
        return "32-true", (
            f"{cpu.model} lists no bf16 instructions ({', '.join(BF16_FLAGS)}) in its CPU "
            "flags, so bf16 products are emulated, far slower than fp32"
        )
    speedup, path, fresh = cached_speedup(Path(cache_dir), cpu, probe)
    measured = f"bf16 products {speedup:.2f}x the speed of fp32 on {cpu.model}"
    source = f"probe {'run now' if fresh else 'from an earlier run'}, cached in {path}"
    if speedup >= MARGIN:
        return "bf16-mixed", f"{measured}; {source}"
    return "32-true", f"{measured}, under the {MARGIN}x that pays for autocast's casts; {source}"


def cached_speedup(
    cache_dir: Path, cpu: Cpu, probe: Callable[[], float]
) -> tuple[float, Path, bool]:
    """bf16 products' speed over fp32's on this machine: the value cached under ``cache_dir``, or
    a fresh probe's (then cached); the value, the cache file and whether the probe ran. A missing,
    damaged or foreign file is probed again."""
    key = {
        "cpu": cpu.model,
        "flags": None if cpu.flags is None else sorted(cpu.flags),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    path = cache_dir / f"precision-{cache_key(key)}.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached["key"] == key and float(cached["speedup"]) > 0:
            return float(cached["speedup"]), path, False
    except (OSError, ValueError, TypeError, KeyError):
        pass
    speedup = probe()
    try:
        atomic_write_bytes(path, json.dumps({"key": key, "speedup": speedup}, indent=1).encode())
    except OSError as error:
        log.warning("precision=auto: cannot cache the probe in %s (%s)", path, error)
    return speedup, path, True


def resolve_precision(cfg: DictConfig) -> PrecisionChoice:
    """Replace ``trainer.precision=auto`` by :func:`choose_precision`'s pick (logged); any other
    value stays as given."""
    requested = str(cfg.trainer.get("precision", "32-true"))
    if requested != "auto":
        return PrecisionChoice(requested, requested, "given in the config")
    chosen, reason = choose_precision(
        cfg.paths.cache_dir, str(cfg.trainer.get("accelerator", "auto"))
    )
    with open_dict(cfg.trainer):
        cfg.trainer.precision = chosen
    log.info("precision=auto: chose %s (%s)", chosen, reason)
    return PrecisionChoice(requested, chosen, reason)
