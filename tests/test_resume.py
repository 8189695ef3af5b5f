"""Fault tolerance: a run killed with SIGKILL resumes from its last checkpoint and ends with the
same number of optimizer steps; SIGTERM writes a checkpoint and stops cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
STEPS = 60


def _command(run_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "src/train.py",
        *TINY,
        f"trainer.max_steps={STEPS}",
        "trainer.max_epochs=-1",
        "callbacks.early_stopping=null",
        "callbacks.resume_checkpoint.every_n_train_steps=5",
        f"paths.root_dir={run_dir.parent}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]


def _checkpoint_step(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True, map_location="cpu")["global_step"])
    except (FileNotFoundError, RuntimeError, EOFError):
        return -1


def _wait_for_step(process: subprocess.Popen, checkpoint: Path, step: int) -> None:
    deadline = time.monotonic() + 300
    while _checkpoint_step(checkpoint) < step:
        assert process.poll() is None, "training ended before it could be interrupted"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)


def _final(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_sigkill_then_resume_completes_the_same_steps(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    subprocess.run(_command(reference), cwd=ROOT, check=True, capture_output=True)

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        _command(interrupted), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _wait_for_step(process, interrupted / "checkpoints" / "last.ckpt", 25)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = _checkpoint_step(interrupted / "checkpoints" / "last.ckpt")
    assert 25 <= killed_at < STEPS

    resumed = tmp_path / "resumed"
    subprocess.run(
        _command(resumed, f"ckpt_path={interrupted}"), cwd=ROOT, check=True, capture_output=True
    )
    expected, got = _final(reference), _final(resumed)
    assert got["trainer/global_step"] == expected["trainer/global_step"] == STEPS
    # same data order and random streams after the resume: the same training, up to float noise
    assert got["val/loss"] == pytest.approx(expected["val/loss"], rel=0.02)
    assert json.loads((resumed / "run.json").read_text())["resumed_from"].endswith("last.ckpt")


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_that_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        _command(run_dir, "callbacks.resume_checkpoint.every_n_train_steps=null"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not (run_dir / "csv" / "metrics.csv").exists():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0
    assert "received SIGTERM" in output
    stopped_at = _checkpoint_step(run_dir / "checkpoints" / "last.ckpt")
    assert 0 < stopped_at < STEPS
    assert not (run_dir / "metrics.json").exists()  # no test phase after a pre-emption

    resumed = tmp_path / "resumed"
    subprocess.run(
        _command(resumed, f"ckpt_path={run_dir}"), cwd=ROOT, check=True, capture_output=True
    )
    assert _final(resumed)["trainer/global_step"] == STEPS
