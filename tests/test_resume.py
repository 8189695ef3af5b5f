"""Fault tolerance: a run killed with SIGKILL resumes from its last checkpoint and ends with the
same number of optimizer steps; SIGTERM writes a checkpoint and stops cleanly."""

from __future__ import annotations

import csv
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
STEPS = 60


def _command(run_dir: Path | None, *overrides: str, root: Path | None = None) -> list[str]:
    """Training for STEPS steps in ``run_dir``; None lets the run pick its folder (a resumed
    run continues in the folder of its checkpoint)."""
    root = root if root is not None else run_dir.parent if run_dir is not None else None
    assert root is not None
    return [
        sys.executable,
        "src/train.py",
        *TINY,
        f"trainer.max_steps={STEPS}",
        "trainer.max_epochs=-1",
        "callbacks.early_stopping=null",
        "callbacks.resume_checkpoint.every_n_train_steps=5",
        f"paths.root_dir={root}",
        *([f"hydra.run.dir={run_dir}"] if run_dir is not None else []),
        *overrides,
    ]


def _environment(**faults: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(INJECTION), **faults}


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
def test_sigkill_then_resume_ends_with_the_uninterrupted_weights(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    subprocess.run(_command(reference), cwd=ROOT, check=True, capture_output=True, timeout=600)

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(
        _command(interrupted), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for_step(process, interrupted / "checkpoints" / "last.ckpt", 25)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    killed_at = _checkpoint_step(interrupted / "checkpoints" / "last.ckpt")
    assert 25 <= killed_at < STEPS

    counts = tmp_path / "steps"
    subprocess.run(  # no run folder given: it continues in the interrupted one
        _command(None, f"ckpt_path={interrupted}", root=tmp_path),
        cwd=ROOT,
        env=_environment(FAULT_COUNT_STEPS=str(counts)),
        check=True,
        capture_output=True,
        timeout=600,
    )
    # the resumed process ran exactly the missing steps, in the same folder
    assert int((tmp_path / "steps.rank0").read_text()) == STEPS - killed_at
    assert _final(interrupted)["trainer/global_step"] == STEPS
    expected = _weights(reference / "checkpoints" / "last.ckpt")
    got = _weights(interrupted / "checkpoints" / "last.ckpt")
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():  # same data order and random streams: same training
        assert torch.equal(got[name], tensor), name
    record = json.loads((interrupted / "run.json").read_text())
    assert record["resumes"][0]["resumed_from"].endswith("last.ckpt")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True, map_location="cpu")["state_dict"]


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
    console = subprocess.run(
        _command(resumed, f"ckpt_path={run_dir}"),
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert _final(resumed)["trainer/global_step"] == STEPS
    # seq2attn's line names the checkpoint; Lightning's own "Restoring states ..." is dropped
    logged = console.stdout + console.stderr
    assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in logged
    assert "Restoring states" not in logged


@pytest.mark.slow
def test_a_resumed_run_keeps_the_best_checkpoint_and_score_of_the_whole_run(
    tmp_path: Path,
) -> None:
    learns = [  # enough to score above zero in three epochs
        "data.corpus.num_train=3000",
        "model.hidden_size=64",
        "model.embedding_size=32",
        "trainer.max_steps=-1",
        "callbacks.resume_checkpoint.every_n_train_steps=null",
    ]
    subprocess.run(
        _command(None, *learns, "trainer.max_epochs=3", root=tmp_path),
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    before = _final(run_dir)
    assert before["val/bleu_best"] > 0
    best_file = run_dir / before["best_checkpoint"]

    # one more epoch, validated with one-token outputs: its BLEU cannot beat the first three
    subprocess.run(
        _command(
            None,
            *learns,
            "trainer.max_epochs=4",
            "ckpt_path=last",
            "decoding.max_length_a=0",
            "decoding.max_length_b=1",
            root=tmp_path,
        ),
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    assert [p.name for p in (tmp_path / "logs" / "train" / "runs").iterdir()] == [run_dir.name]
    after = _final(run_dir)
    validations = _logged(run_dir, "val/bleu")
    assert len(validations) == 4  # the log continued: both invocations' validations
    assert validations[-1] < max(validations) == pytest.approx(after["val/bleu_best"])
    assert after["val/bleu_best"] == before["val/bleu_best"]
    assert after["best_checkpoint"] == before["best_checkpoint"] and best_file.is_file()
    # the test phase ran on that checkpoint: the same teacher-forced test loss
    assert after["test/loss"] == pytest.approx(before["test/loss"], abs=1e-6)
    # the folder's config stays the first command's; the resume records what it changed
    assert "max_epochs: 3" in (run_dir / "config.yaml").read_text()
    (resume,) = json.loads((run_dir / "run.json").read_text())["resumes"]
    assert resume["config_changes"]["trainer.max_epochs"] == 4
    assert resume["config_changes"]["decoding.max_length_b"] == 1


def _logged(run_dir: Path, column: str) -> list[float]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        return [float(row[column]) for row in csv.DictReader(handle) if row.get(column)]
