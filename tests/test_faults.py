"""Faults that every rank agrees on (two gloo processes): a NaN loss on one rank stops or skips
on both, SIGTERM sent to one rank stops both after one checkpoint, and a signal during a
validation is honoured after the batch in progress; a rank of such a run that ends on a fault
leaves without the interpreter's shutdown. Faults are injected through
``tests/fault_injection/sitecustomize.py``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
INJECTION = ROOT / "tests" / "fault_injection"
TIMEOUT = 300  # seconds: a run that hangs in a collective fails the test instead of CI


def _command(run_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "src/train.py",
        *TINY,
        "trainer.max_epochs=-1",
        "callbacks.early_stopping=null",
        f"paths.root_dir={run_dir.parent}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]


def _environment(**faults: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(INJECTION), **faults}


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """``command`` in its own process group (see ``_kill_group``), its output captured."""
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``command`` to completion in its own process group, which a timeout kills whole (the
    rank Lightning starts included)."""
    process = _start(command, env)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        _kill_group(process)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def _checkpoint(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def _adam_steps(path: Path) -> int:
    """The optimizer updates a checkpoint's Adam state has seen."""
    states = _checkpoint(path)["optimizer_states"][0]["state"].values()
    return int(next(iter(states))["step"])


@pytest.mark.slow
def test_nan_on_one_rank_stops_both_with_the_step(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    done = _run(
        _command(run_dir, "strategy=ddp", "trainer.devices=2", "trainer.max_steps=12"),
        _environment(FAULT_NAN_RANK="1", FAULT_NAN_STEPS="3"),
    )
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    # both ranks stopped (rank 1 silently: it agreed), and the run says why in one line
    assert errors == [
        "error: non-finite training loss at step 3; nonfinite_loss=skip skips such batches"
    ]
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_nan_on_one_rank_is_skipped_on_both(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    counts = tmp_path / "steps"
    done = _run(
        _command(
            run_dir,
            "strategy=ddp",
            "trainer.devices=2",
            "trainer.max_steps=12",
            "nonfinite_loss=skip",
        ),
        _environment(FAULT_NAN_RANK="1", FAULT_NAN_STEPS="3,4", FAULT_COUNT_STEPS=str(counts)),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run_dir / "metrics.json").is_file()  # training and the test phase completed
    logged = _checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert logged["global_step"] == 12  # a skipped batch counts as a step
    # rank 0's loss was finite, yet no rank updated on the two batches: Adam saw 10 updates
    assert _adam_steps(run_dir / "checkpoints" / "last.ckpt") == 10
    assert [int((tmp_path / f"steps.rank{r}").read_text()) for r in (0, 1)] == [12, 12]
    assert "non-finite training loss at step 3: no update" in done.stderr + done.stdout


def _children(pid: int) -> list[int]:
    """The training processes that ``pid`` started (Lightning starts rank 1 itself)."""
    found = Path(f"/proc/{pid}/task/{pid}/children")
    pids = [int(p) for p in found.read_text().split()] if found.exists() else []
    return [p for p in pids if b"train.py" in _cmdline(p)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to find rank 1")
def test_sigterm_to_one_rank_stops_both_after_one_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    steps = 400
    process = subprocess.Popen(
        _command(
            run_dir,
            "strategy=ddp",
            "trainer.devices=2",
            f"trainer.max_steps={steps}",
            "callbacks.resume_checkpoint.every_n_train_steps=20",
            "trainer.check_val_every_n_epoch=1000",
        ),
        cwd=ROOT,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    try:
        deadline = time.monotonic() + TIMEOUT
        while not last.exists():  # both ranks are in the training steps
            assert process.poll() is None and time.monotonic() < deadline, "training never started"
            time.sleep(0.2)
        (rank1,) = _children(process.pid)
        os.kill(rank1, signal.SIGTERM)
        output, _ = process.communicate(timeout=TIMEOUT)
    finally:
        _kill_group(process)
    assert process.returncode == 0, output[-2000:]
    assert output.count("received SIGTERM after the step") == 2  # both ranks agreed
    assert [c.name for c in (run_dir / "checkpoints").glob("*.ckpt")] == ["last.ckpt"]
    stopped_at = _checkpoint(last)["global_step"]
    assert 20 <= stopped_at < steps
    assert not (run_dir / "metrics.json").exists()

    resumed = tmp_path / "resumed"
    counts = tmp_path / "steps"
    resumed_run = _run(
        _command(resumed, f"trainer.max_steps={stopped_at + 10}", f"ckpt_path={run_dir}"),
        _environment(FAULT_COUNT_STEPS=str(counts)),
    )
    assert resumed_run.returncode == 0, resumed_run.stderr[-2000:]
    assert int((tmp_path / "steps.rank0").read_text()) == 10


@pytest.mark.slow
def test_sigterm_during_validation_stops_after_the_batch(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    after = tmp_path / "after"
    settings = (
        "data.corpus.num_val=400",
        "data.max_tokens=200",
        "trainer.val_check_interval=5",
        "trainer.num_sanity_val_steps=0",
        "callbacks.resume_checkpoint.every_n_train_steps=null",
    )
    done = _run(
        _command(run_dir, "trainer.max_steps=200", *settings),
        _environment(FAULT_SIGTERM_AT_VAL_BATCH="2", FAULT_SIGTERM_AT_VAL_BATCH_LOG=str(after)),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(after.read_text()) == 0  # no validation batch started after the signal
    assert "received SIGTERM during the validation at step 5" in done.stderr + done.stdout
    # the training state of step 5 was written: resuming needs no validation
    assert _checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 5
    assert not (run_dir / "metrics.json").exists()

    counts = tmp_path / "steps"
    resumed = _run(
        _command(run_dir, "trainer.max_steps=12", *settings, f"ckpt_path={run_dir}"),
        _environment(FAULT_COUNT_STEPS=str(counts)),
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert int((tmp_path / "steps.rank0").read_text()) == 7
    assert json.loads((run_dir / "metrics.json").read_text())["trainer/global_step"] == 12


# Each rank of a real gloo group (size 0: none) leaves it as a training run does, then ends
# through the commands' fault exit with a log record and stdout still buffered. An atexit handler
# tells whether the interpreter's shutdown ran. (No DDP reducer here: the deadlock that the
# immediate exit avoids is not reproduced, only the exit itself.)
RANK_ENDING_ON_A_FAULT = """
import atexit, logging, logging.handlers, sys
from pathlib import Path
import torch.distributed as dist
from omegaconf import OmegaConf
from seq2attn.cli import run_cli
from seq2attn.config import ConfigError
from seq2attn.faults import NonFiniteLoss
from seq2attn.ranks import leave_process_group

rank, size, folder, crash = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
root = logging.getLogger()
root.addHandler(logging.FileHandler(folder / f"rank{rank}.log"))
buffered = logging.FileHandler(folder / f"rank{rank}.buffered.log")
root.addHandler(logging.handlers.MemoryHandler(100, logging.CRITICAL, buffered))
atexit.register((folder / f"rank{rank}.shutdown").touch)

def task(cfg):
    if size:  # as training does: join, work, leave, then the error reaches run_cli
        store = f"file://{folder / 'store'}"
        dist.init_process_group("gloo", init_method=store, rank=rank, world_size=size)
        dist.barrier()
        leave_process_group()
    logging.getLogger("train").warning("rank %d at step 3", rank)
    print("written, not flushed", end="")
    if crash == "crash":
        raise RuntimeError("a crash at step 3")
    if crash == "input":
        raise ConfigError("data.max_tokens=0: must be positive")
    if crash == "exit":
        sys.exit("stopped at step 3")
    raise NonFiniteLoss("non-finite training loss at step 3")

run_cli(task, OmegaConf.create({}))
"""
RANK_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_PROCID", "MASTER_PORT")


def _end_ranks_on_a_fault(
    folder: Path, size: int, kind: str = "fault"
) -> list[tuple[int | None, str, str]]:
    """Exit code, stdout and stderr of each rank running ``RANK_ENDING_ON_A_FAULT``, whose task
    ends with a non-finite loss (``fault``), a RuntimeError (``crash``), bad input (``input``)
    or ``sys.exit`` with a message (``exit``)."""
    env = {k: v for k, v in os.environ.items() if k not in RANK_VARIABLES}  # every rank speaks
    processes = [
        _start(
            [sys.executable, "-c", RANK_ENDING_ON_A_FAULT, str(r), str(size), str(folder), kind],
            env,
        )
        for r in range(max(size, 1))
    ]
    try:
        outputs = [p.communicate(timeout=120) for p in processes]
    finally:
        for process in processes:
            _kill_group(process)
    return [(p.returncode, *o) for p, o in zip(processes, outputs, strict=True)]


def test_a_rank_of_a_multi_process_run_ends_on_a_fault_without_the_shutdown(
    tmp_path: Path,
) -> None:
    ended = _end_ranks_on_a_fault(tmp_path, 2)
    assert ended == [(1, "written, not flushed", "error: non-finite training loss at step 3\n")] * 2
    for rank in (0, 1):
        assert not (tmp_path / f"rank{rank}.shutdown").exists()  # left at once
        logged = (tmp_path / f"rank{rank}.log").read_text()
        assert logged == f"rank {rank} at step 3\nnon-finite training loss at step 3\n"
        assert (tmp_path / f"rank{rank}.buffered.log").read_text() == f"rank {rank} at step 3\n"


def test_a_rank_of_a_multi_process_run_ends_on_a_crash_without_the_shutdown(
    tmp_path: Path,
) -> None:
    for code, stdout, stderr in _end_ranks_on_a_fault(tmp_path, 2, "crash"):
        assert (code, stdout) == (1, "written, not flushed")
        assert stderr.startswith("Traceback") and stderr.endswith(
            "RuntimeError: a crash at step 3\n"
        )
    for rank in (0, 1):
        assert not (tmp_path / f"rank{rank}.shutdown").exists()
        assert (tmp_path / f"rank{rank}.buffered.log").read_text() == f"rank {rank} at step 3\n"


@pytest.mark.parametrize(
    ("kind", "ended"),
    [
        ("input", (2, "written, not flushed", "error: data.max_tokens=0: must be positive\n")),
        ("exit", (1, "written, not flushed", "stopped at step 3\n")),
    ],
)
def test_a_rank_of_a_multi_process_run_ends_on_bad_input_or_an_exit_without_the_shutdown(
    tmp_path: Path, kind: str, ended: tuple[int, str, str]
) -> None:
    assert _end_ranks_on_a_fault(tmp_path, 2, kind) == [ended] * 2
    for rank in (0, 1):
        assert not (tmp_path / f"rank{rank}.shutdown").exists()
        assert (tmp_path / f"rank{rank}.buffered.log").read_text() == f"rank {rank} at step 3\n"


@pytest.mark.parametrize("size", [0, 1], ids=["no-group", "group-of-one"])
def test_a_single_process_ends_on_a_fault_through_the_shutdown(tmp_path: Path, size: int) -> None:
    ended = _end_ranks_on_a_fault(tmp_path, size)
    assert ended == [(1, "written, not flushed", "error: non-finite training loss at step 3\n")]
    assert (tmp_path / "rank0.shutdown").exists()
    assert (tmp_path / "rank0.buffered.log").read_text() == "rank 0 at step 3\n"
