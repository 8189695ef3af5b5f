"""The memory allocator of a command (``cpu.allocator``): glibc's, or tcmalloc or jemalloc
preloaded, as PyTorch's CPU tuning guide and its ``torch.backends.xeon.run_cpu`` launcher do.

An allocator replaces ``malloc`` only if the dynamic linker loads it before the C library's
is used, so it cannot be switched inside a running Python. ``src/train.py``, ``src/eval.py``
and ``src/translate.py`` therefore read ``cpu.allocator`` from the composed config before
Hydra runs and, when it names a library that this process has not mapped, start themselves
again (``os.execve``, same arguments) with the library in ``LD_PRELOAD``. Every process the
run starts (data workers, DDP ranks) inherits it.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf"
SYSTEM = "system"
# allocator -> (the library's name for ctypes.util.find_library, its Debian package)
LIBRARIES = {
    "tcmalloc": ("tcmalloc_minimal", "libtcmalloc-minimal4"),
    "jemalloc": ("jemalloc", "libjemalloc2"),
}
ALLOCATORS = (SYSTEM, *LIBRARIES)
# set on the restarted process: if the library is still not mapped then, preloading failed
RESTARTED = "SEQ2ATTN_ALLOCATOR_RESTARTED"


class AllocatorError(RuntimeError):
    """The configured allocator cannot be preloaded (no library, not Linux, a sweep)."""


def configured_allocator(config_name: str, argv: Sequence[str], conf: Path = CONF) -> str:
    """``cpu.allocator`` of the config that ``argv``'s group choices and plain overrides compose
    (sweeps take their first option, which every job of a sweep over other keys shares).

    Raises:
        AllocatorError: ``argv`` sweeps ``cpu.allocator`` (one process has one allocator).
    """
    overrides = []
    for arg in argv:
        if arg.startswith(("-", "hydra.")) or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        if key.lstrip("+~") in ("cpu.allocator", "cpu") and "," in value:
            raise AllocatorError(
                f"{arg}: one process has one allocator; sweep it with one command per value"
            )
        if "(" not in value:  # sweep functions (range, choice): Hydra's to expand
            overrides.append(f"{key}={value.split(',')[0]}" if "," in value else arg)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
            cfg = compose(config_name, overrides=overrides)
    except Exception:  # noqa: BLE001 - a composition error is Hydra's to report, when it runs
        return SYSTEM
    finally:
        GlobalHydra.instance().clear()
    return str(OmegaConf.select(cfg, "cpu.allocator", default=SYSTEM))


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


def mapped_allocator() -> str | None:
    """Which of :data:`LIBRARIES` this process has mapped (by ``/proc/self/maps``), if any."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    return next((a for a, (name, _) in LIBRARIES.items() if f"lib{name}." in maps), None)


def preload_allocator(config_name: str, argv: Sequence[str] | None = None) -> None:
    """Before Hydra: restart this command with ``cpu.allocator``'s library preloaded unless it
    is ``system``, unknown (the config's schema rejects it later) or already mapped.

    Raises:
        AllocatorError: the library cannot be found, or preloading it did not map it.
    """
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help", "--hydra-help", "--info") for arg in argv):
        return
    allocator = configured_allocator(config_name, argv)
    if allocator not in LIBRARIES or mapped_allocator() == allocator:
        return
    preload = library(allocator)
    if os.environ.get(RESTARTED) == allocator:
        raise AllocatorError(
            f"cpu.allocator={allocator}: {preload} was preloaded but is not mapped "
            f"(LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r})"
        )
    others = [p for p in os.environ.get("LD_PRELOAD", "").split(":") if p]
    env = {**os.environ, RESTARTED: allocator, "LD_PRELOAD": ":".join([preload, *others])}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def exit_unless_allocator(config_name: str) -> None:
    """:func:`preload_allocator` for a command line: an allocator that cannot be preloaded ends
    the command with one line, exit code 2."""
    try:
        preload_allocator(config_name)
    except AllocatorError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
