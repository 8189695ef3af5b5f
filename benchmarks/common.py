"""What every benchmark and experiment driver needs: where things are, a measured child process,
the machine and the commit, a step timer, and writing a result as JSON + Markdown.

Paths recorded in results are relative to the repository (``logs/...``, ``../shared/...``), so a
result file names no folder of the machine that made it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seq2attn.report.tables import markdown_table

if TYPE_CHECKING:
    import lightning as L

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
RESULTS = REPO / "benchmarks" / "results"
SHARED = REPO.parent / "shared"
# the speed references' SentencePiece model, shared with the peers' runs
SPM_MODEL = SHARED / "bench" / "spm_multi30k_deen_unigram8k.model"
# /proc/cpuinfo flags that decide matrix-product speed
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
POLL_S = 1.0


def corpus() -> Path:
    """Multi30k's folder: ``$SEQ2ATTN_DATA``, else ``../shared/data/multi30k`` beside the
    repository."""
    return Path(os.environ.get("SEQ2ATTN_DATA") or SHARED / "data" / "multi30k")


def require(script: str, *needed: Path) -> None:
    """Stop ``script`` with a message naming the first of ``needed`` that is missing."""
    for path in needed:
        if not path.exists():
            print(
                f"{script} needs {path}; it is not there (Multi30k: set SEQ2ATTN_DATA or put it in "
                f"{shown(SHARED / 'data' / 'multi30k')})",
                file=sys.stderr,
            )
            sys.exit(2)


def shown(path: Path | str) -> str:
    """``path`` as results record it: relative to the repository when it lies inside the
    repository or beside it (``logs/x``, ``../shared/data/multi30k``)."""
    return relative_text(str(Path(path).resolve()))


def relative_text(text: str, repo: Path = REPO) -> str:
    """``text`` with every absolute path into ``repo`` or its parent folder made relative to
    ``repo`` (``<repo>/logs`` -> ``logs``, ``<repo>`` -> ``.``, ``<repo>/../shared`` ->
    ``../shared``); nothing else in it changes."""
    for base, inside, itself in ((repo, "", "."), (repo.parent, "../", "..")):
        if base == Path(base.anchor):  # a repository at the top of the file system
            continue
        prefix = re.escape(str(base))
        text = re.sub(rf"(?<![\w.~/-]){prefix}/(?=[\w.~-])", inside, text)
        text = re.sub(rf"(?<![\w.~/-]){prefix}(?![\w.~/-])", itself, text)
    return text


def relative(record: Any, repo: Path = REPO) -> Any:
    """A JSON-like record with :func:`relative_text` applied to every string in it."""
    if isinstance(record, str):
        return relative_text(record, repo)
    if isinstance(record, Mapping):
        return {key: relative(value, repo) for key, value in record.items()}
    if isinstance(record, list | tuple):
        return [relative(value, repo) for value in record]
    return record


def command_line(command: Sequence[str]) -> str:
    """A child's command as results show it: ``python`` for this interpreter, paths relative."""
    shown_args = ["python" if arg == sys.executable else arg for arg in command]
    return relative_text(shlex.join(shown_args))


class CommandFailed(RuntimeError):
    """A child process ended with an exit code it was not expected to."""


@dataclass(frozen=True)
class Measured:
    """How a child process ended: its exit code (negative: killed by that signal), its wall
    time and its peak resident memory."""

    returncode: int
    wall_s: float
    peak_rss_mb: float


# Runs the measured command as its own child and reports that child's peak resident memory on a
# pipe. The command is not started straight from this process because exec records the peak of the
# memory image it replaces: a child forked from a process holding torch would count that too.
# The reaper ignores the stop signals (they reach the command through its process group) and
# gives the command the default SIGINT and SIGTERM: a shell without job control starts background
# commands with SIGINT ignored, a disposition exec keeps, and a tool that saves its checkpoint on
# KeyboardInterrupt (JoeyNMT) would then run on until SIGKILL.
_REAPER = """
import os, signal, sys
report = int(sys.argv[1])
os.set_inheritable(report, False)
for number in (signal.SIGINT, signal.SIGTERM):
    signal.signal(number, signal.SIG_IGN)
pid = os.fork()
if pid == 0:
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_DFL)
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as error:
        print(f"{sys.argv[2]}: {error}", file=sys.stderr, flush=True)
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
os.write(report, str(usage.ru_maxrss).encode())
code = os.waitstatus_to_exitcode(status)
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def run_measured(
    command: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stop_after_s: float | None = None,
    stop_signal: signal.Signals = signal.SIGTERM,
    grace_s: float = 300.0,
    expected: Sequence[int] | None = (0,),
) -> Measured:
    """Run ``command`` with stdout and stderr in ``log``; after ``stop_after_s`` send it (and
    its process group) ``stop_signal``, and SIGKILL ``grace_s`` later. Raise
    :class:`CommandFailed` (with the log's last lines) unless its exit code is in ``expected``
    (``None``: any code).

    The peak memory is the command's own ``ru_maxrss`` (NaN if it was killed with SIGKILL).
    """
    started = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    report, report_to = os.pipe()
    os.set_blocking(report, False)
    try:
        with log.open("w") as out:
            child = subprocess.Popen(
                [sys.executable, "-S", "-c", _REAPER, str(report_to), *command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=None if env is None else dict(env),
                cwd=cwd,
                pass_fds=(report_to,),
                preexec_fn=os.setpgrp,  # its own process group, which the stop signals reach
            )
        os.close(report_to)
        try:
            status = _wait(child.pid, stop_after_s, stop_signal, grace_s)
        except BaseException:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise
        child.returncode = os.waitstatus_to_exitcode(status)  # reaped by os.wait4, not by Popen
        peak_kib = _read_report(report)
    finally:
        os.close(report)
    wall = time.perf_counter() - started
    done = Measured(child.returncode, wall, peak_kib / 1024)
    if expected is not None and done.returncode not in expected:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise CommandFailed(
            f"`{shlex.join(command)}` exited with {done.returncode}; last lines of {log}:\n{tail}"
        )
    return done


def _read_report(report: int) -> float:
    """The reaper's figure (KiB), NaN when it was killed before writing it."""
    try:
        return float(os.read(report, 64) or "nan")
    except BlockingIOError:
        return math.nan


def _wait(pid: int, stop_after_s: float | None, stop_signal: signal.Signals, grace_s: float) -> int:
    """os.wait4's status of ``pid``, stopping its process group first if it outlives
    stop_after_s."""
    if stop_after_s is not None:
        for signal_to_send, within in ((stop_signal, stop_after_s), (signal.SIGKILL, grace_s)):
            ended = _poll(pid, time.monotonic() + within)
            if ended is not None:
                return ended
            os.killpg(pid, signal_to_send)
    _, status, _ = os.wait4(pid, 0)
    return status


def _poll(pid: int, deadline: float) -> int | None:
    """os.wait4's status if ``pid`` ends before ``deadline``, else None."""
    while time.monotonic() < deadline:
        reaped, status, _ = os.wait4(pid, os.WNOHANG)
        if reaped:
            return status
        time.sleep(min(POLL_S, max(deadline - time.monotonic(), 0.01)))
    return None


def machine() -> dict[str, Any]:
    """The CPU model and its matrix-product flags, cores, torch threads and versions."""
    cpu, flags = platform.processor() or platform.machine(), set()
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.is_file() else []:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            cpu = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    described: dict[str, Any] = {
        "cpu": cpu,
        "flags": [flag for flag in CPU_FLAGS if flag in flags],
        "cores": os.cpu_count(),
        "python": platform.python_version(),
    }
    if "torch" in sys.modules:  # only a process that uses torch knows its thread count
        torch = sys.modules["torch"]
        described.update(threads=torch.get_num_threads(), torch=torch.__version__)
    return described


def describe_machine(described: Mapping[str, Any] | str) -> str:
    """One line for a table's caption: ``AMD EPYC 7B13 (avx2, avx512_bf16), 2 cores``."""
    if isinstance(described, str):  # results written before machine() recorded a dict
        return described
    flags = f" ({', '.join(described['flags'])})" if described.get("flags") else ""
    return f"{described['cpu']}{flags}, {described['cores']} cores"


def commit(run_dir: Path | None = None) -> str:
    """The short commit, with ``+`` when the tree had uncommitted changes: the one a training run
    recorded in its ``run.json`` when ``run_dir`` is given, else the repository's now."""
    if run_dir is not None:
        git = json.loads((run_dir / "run.json").read_text()).get("git") or {}
        if not git.get("commit"):
            return "unknown"
        return git["commit"][:7] + ("+" if git.get("dirty") else "")
    try:
        head = git_output("rev-parse", "--short=7", "HEAD")
        changes = git_output("status", "--porcelain")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+" if changes else "")


def git_output(*args: str, repo: Path = REPO) -> str:
    """What ``git <args>`` prints in ``repo``, stripped (CalledProcessError if it fails)."""
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout.strip()


class StepTimer:
    """Wall time of each step, split into the wait before it (from the end of the previous step,
    or from :meth:`mark`) and the step itself, with per-step counts (e.g. target tokens)."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self.durations: list[float] = []
        self.ends: list[float] = []
        self.counts: list[dict[str, float]] = []
        self._mark: float | None = None
        self._start = 0.0

    def mark(self) -> None:
        """Start the next wait now (e.g. at the start of an epoch)."""
        self._mark = time.perf_counter()

    def start(self) -> None:
        now = time.perf_counter()
        self.waits.append(0.0 if self._mark is None else now - self._mark)
        self._start = now

    def stop(self, **counts: float) -> None:
        now = time.perf_counter()
        self.durations.append(now - self._start)
        self.ends.append(now)
        self.counts.append(counts)
        self._mark = now

    def steady(self, warmup: int) -> dict[str, Any]:
        """The steps after the first ``warmup``: how many, their wall time (end of step
        ``warmup`` to end of the last), the sum of each count and of waits and step times."""
        if not 0 < warmup < len(self.ends):
            raise ValueError(f"warmup must leave timed steps: {warmup} of {len(self.ends)} steps")
        timed = self.counts[warmup:]
        return {
            "steps": len(timed),
            "seconds": self.ends[-1] - self.ends[warmup - 1],
            "totals": {key: sum(step[key] for step in timed) for key in timed[0]},
            "wait_s": sum(self.waits[warmup:]),
            "step_s": sum(self.durations[warmup:]),
        }


def lightning_hooks(timer: StepTimer, count: Callable[[Any], dict[str, float]]) -> L.Callback:
    """A Lightning callback that times every training step on ``timer``; ``count(batch)`` gives
    the step's counts. (Lightning is imported here, not by the benchmarks that only need the
    rest of this module.)"""
    import lightning as L

    class TimeSteps(L.Callback):
        def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            timer.mark()

        def on_train_batch_start(
            self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int
        ) -> None:
            timer.start()

        def on_train_batch_end(
            self,
            trainer: L.Trainer,
            module: L.LightningModule,
            outputs: Any,
            batch: Any,
            batch_idx: int,
        ) -> None:
            timer.stop(**count(batch))

    return TimeSteps()


def training_only_trainer(
    trainer_node: Any, steps: int, callbacks: Sequence[L.Callback]
) -> L.Trainer:
    """A Lightning Trainer from a config's ``trainer`` node that trains ``steps`` steps and does
    nothing else: no validation, checkpoints, progress bar, model summary or logger."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    settings = OmegaConf.to_container(trainer_node, resolve=True)
    assert isinstance(settings, dict)
    settings.update(
        max_steps=steps,
        max_epochs=-1,
        limit_val_batches=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
    )
    return instantiate(settings, callbacks=list(callbacks))


def mean_std(values: Sequence[float], spec: str = ".2f") -> str:
    """``40.11 ± 0.26`` (sample standard deviation) over several values, the value alone for one."""
    if len(values) == 1:
        return format(values[0], spec)
    return f"{format(statistics.mean(values), spec)} ± {format(statistics.stdev(values), spec)}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (the report command's writer), cells as given, one line a row."""
    return markdown_table(list(headers), [[str(cell) for cell in row] for row in rows]) + "\n"


def write_result(
    stem: str, record: Mapping[str, Any], markdown: str, folder: Path = RESULTS
) -> tuple[Path, Path]:
    """``<folder>/<stem>.json`` and ``<stem>.md``, machine paths made relative; both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = folder / f"{stem}.json", folder / f"{stem}.md"
    json_path.write_text(json.dumps(relative(record), indent=2, default=str) + "\n")
    markdown_path.write_text(relative_text(markdown))
    return json_path, markdown_path
