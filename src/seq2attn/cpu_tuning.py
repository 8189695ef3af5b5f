"""Process-wide CPU math settings (the ``cpu`` config group), applied before any work by train,
eval and translate."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from seq2attn.allocator import ALLOCATORS, AUTO, SYSTEM, active_allocator, resolved
from seq2attn.schema import ConfigError, check, positive

log = logging.getLogger(__name__)

# glibc mallopt parameters and the size below which freed blocks stay in the process
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MALLOC_CACHE_BYTES = 1 << 30
# how many compiled kernels oneDNN keeps; it reads the variable when it compiles its first one
ONEDNN_CACHE_VARIABLE = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"


@dataclass
class CpuSettings:
    """The ``cpu`` group (``conf/cpu/default.yaml``).

    ``flush_denormal`` treats subnormal floats (|x| < 1.2e-38 in fp32) as zero. Vanishing
    gradients and attention weights produce them, and on x86 every multiply that touches one
    takes a slow microcode path: measured on the speed benchmark's R2 model, training ran at
    2,000 target tokens/s without it and 2,780 with it. ``keep_freed_memory`` (glibc only) serves
    blocks up to 1 GiB from the heap and keeps freed ones there: by default glibc maps every
    block above 32 MiB afresh and returns it on free, so each training step page-faults its large
    activations (the logits) in again; measured 2,790 -> 3,160 tokens/s on the same model.
    ``num_threads`` (null: torch's default, one per core) sets the intra-op threads.
    ``allocator`` is ``system`` (the C library's malloc) or ``tcmalloc`` / ``jemalloc``, which
    the command preloads by starting itself again (:mod:`seq2attn.allocator`), or ``auto``:
    tcmalloc where it is installed, else the system's, whichever a process runs on being
    accepted and logged; with either library, ``keep_freed_memory`` is not applied (it tunes
    glibc's malloc). ``onednn_kernel_cache`` is how many compiled kernels oneDNN keeps (its
    least-recently-used primitive cache; null: ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` if set, else
    oneDNN's 1,024). oneDNN runs the bf16 products and compiles a kernel for each new shape;
    some kernels hold buffers, so a smaller cache holds less memory but compiles again the
    shapes it evicted. It takes effect only before the process's first oneDNN product, which is
    why the commands apply it before any work.
    """

    flush_denormal: bool = False
    keep_freed_memory: bool = False
    num_threads: int | None = None
    allocator: str = SYSTEM
    onednn_kernel_cache: int | None = None

    def __post_init__(self) -> None:
        positive("cpu.num_threads", self.num_threads, allow_none=True)
        if self.onednn_kernel_cache is not None and self.onednn_kernel_cache < 0:
            raise ConfigError(
                f"cpu.onednn_kernel_cache={self.onednn_kernel_cache}: must be 0 (no cache), a "
                "positive number of kernels, or null (oneDNN's default)"
            )
        if self.allocator not in ALLOCATORS:
            raise ConfigError(f"cpu.allocator={self.allocator}: not one of {', '.join(ALLOCATORS)}")


def configure_cpu(cpu: CpuSettings | DictConfig | None) -> None:
    """Apply the ``cpu`` settings (a node is checked against :class:`CpuSettings` first).

    Raises:
        ConfigError: a node with an invalid key or value.
    """
    if cpu is None:
        return
    if isinstance(cpu, DictConfig):
        cpu = check(CpuSettings, cpu, "cpu")
    active = active_allocator()
    if cpu.allocator == AUTO:
        log.info("cpu.allocator=auto: %s", auto_allocator_note(active))
    elif cpu.allocator != SYSTEM and active != cpu.allocator:
        raise ConfigError(
            f"cpu.allocator={cpu.allocator}: this process does not run on it ({active} "
            f"serves malloc); give cpu.allocator={cpu.allocator} on the command line, which the "
            "command reads before Hydra runs, or start Python with its library in LD_PRELOAD"
        )
    if cpu.keep_freed_memory and active == SYSTEM:  # it tunes glibc's malloc
        keep_freed_memory()
    if cpu.flush_denormal and not torch.set_flush_denormal(True):
        log.warning("cpu.flush_denormal=true: this CPU cannot flush denormals (no SSE3)")
    if cpu.num_threads is not None:
        torch.set_num_threads(cpu.num_threads)
    if cpu.onednn_kernel_cache is not None:  # inherited by the processes the run starts
        os.environ[ONEDNN_CACHE_VARIABLE] = str(cpu.onednn_kernel_cache)


def auto_allocator_note(active: str) -> str:
    """What ``cpu.allocator=auto`` gave this process, and why."""
    wanted = resolved(AUTO)
    if active == wanted == SYSTEM:
        return "the system's malloc (tcmalloc cannot be preloaded here; on Debian: make allocators)"
    if active == wanted:
        return f"{active}, preloaded when the command started"
    return (
        f"{active} serves malloc, not {wanted}: only src/train.py, eval.py and translate.py "
        "preload it when they start"
    )


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to MALLOC_CACHE_BYTES; False where not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):  # musl has no mallopt
        return False
    return bool(
        libc.mallopt(M_MMAP_THRESHOLD, MALLOC_CACHE_BYTES)
        and libc.mallopt(M_TRIM_THRESHOLD, MALLOC_CACHE_BYTES)
    )
