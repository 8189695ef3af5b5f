"""The memory allocator of a command (``cpu.allocator``): glibc's, or tcmalloc or jemalloc
preloaded, as PyTorch's CPU tuning guide recommends.

An allocator replaces ``malloc`` only if the dynamic linker loads it before the C library's
is used, so it cannot be switched inside a running Python: :func:`preload_allocator` starts the
command again (``os.execve``, the same process id and arguments) with the library first in
``LD_PRELOAD``, which every process the run starts (data workers, DDP ranks) inherits. Which
value to preload is read from the command line before Hydra runs
(:func:`seq2attn.overrides.exit_unless_allocator`).
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

SYSTEM = "system"
# tcmalloc where it is installed, else the system's: in 4-minute budget_r2 runs on a Xeon with
# AMX it kept about 400 MB less than glibc in as many steps, while jemalloc made 18 % fewer
AUTO = "auto"
AUTO_PREFERS = "tcmalloc"
# allocator -> (its library's name for ctypes.util.find_library, its Debian package); tcmalloc
# is gperftools' minimal build (no heap profiler), jemalloc runs with its default options
LIBRARIES = {
    "tcmalloc": ("tcmalloc_minimal", "libtcmalloc-minimal4"),
    "jemalloc": ("jemalloc", "libjemalloc2"),
}
ALLOCATORS = (SYSTEM, AUTO, *LIBRARIES)
# set on the restarted process only: if the library is still not in use then, preloading failed
RESTARTED = "SEQ2ATTN_ALLOCATOR_RESTARTED"


class AllocatorError(RuntimeError):
    """The configured allocator cannot be preloaded (no library, not Linux, a sweep)."""


def library(allocator: str) -> str:
    """The shared library to preload for ``allocator`` (its file name, as the linker finds it).

    Raises:
        AllocatorError: not Linux, or the library is not installed.
    """
    name, package = LIBRARIES[allocator]
    if not sys.platform.startswith("linux"):
        raise AllocatorError(
            f"cpu.allocator={allocator}: preloading an allocator needs Linux; use "
            f"cpu.allocator={SYSTEM}"
        )
    found = ctypes.util.find_library(name)
    if found is None:
        raise AllocatorError(
            f"cpu.allocator={allocator}: lib{name} is not installed (Debian: apt-get install "
            f"{package}, or `make allocators`); or use cpu.allocator={SYSTEM}"
        )
    return found


def resolved(allocator: str) -> str:
    """The allocator that ``allocator`` names: for ``auto``, tcmalloc where its library can be
    preloaded, else ``system``; any other value as it is."""
    if allocator != AUTO:
        return allocator
    try:
        library(AUTO_PREFERS)
    except AllocatorError:
        return SYSTEM
    return AUTO_PREFERS


def _preloaded() -> list[str]:
    """The libraries ``LD_PRELOAD`` names, in order (the linker takes colons or spaces)."""
    return [
        entry for entry in os.environ.get("LD_PRELOAD", "").replace(" ", ":").split(":") if entry
    ]


def _allocator_of(path: str) -> str | None:
    name = Path(path).name
    return next((a for a, (lib, _) in LIBRARIES.items() if name.startswith(f"lib{lib}.")), None)


def active_allocator() -> str:
    """The allocator serving this process's ``malloc``: the first of :data:`LIBRARIES` that
    ``LD_PRELOAD`` names and ``/proc/self/maps`` shows loaded (the linker binds ``malloc`` to
    the first preloaded library that defines it), else ``system``."""
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return SYSTEM
    loaded = {_allocator_of(line.split()[-1]) for line in maps if line.split()} - {None}
    for entry in _preloaded():
        allocator = _allocator_of(entry)
        if allocator is not None and allocator in loaded:
            return allocator
    return SYSTEM


def preload_allocator(allocator: str) -> None:
    """Start this command again with ``allocator``'s library first in ``LD_PRELOAD`` (any other
    allocator of :data:`LIBRARIES` taken out) unless it is already the one in use; nothing for
    ``system``, for ``auto`` where tcmalloc is not installed, or for a value the config's schema
    will reject.

    Raises:
        AllocatorError: the library cannot be found, or the restarted command still runs
            without it.
    """
    restarted = os.environ.pop(RESTARTED, None)
    allocator = resolved(allocator)
    if allocator not in LIBRARIES or active_allocator() == allocator:
        return
    preload = library(allocator)
    if restarted == allocator:
        raise AllocatorError(
            f"cpu.allocator={allocator}: {preload} was preloaded but does not serve malloc "
            f"(LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r})"
        )
    others = [entry for entry in _preloaded() if _allocator_of(entry) is None]
    env = {**os.environ, RESTARTED: allocator, "LD_PRELOAD": ":".join([preload, *others])}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
