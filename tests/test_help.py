"""``--help`` answers without importing the training or model stack (torch, Lightning): those are
imported once a command runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


FIRST_LINES = {
    "train": "seq2attn: train attention-based RNN encoder-decoder translation models.",
    "eval": "seq2attn eval: score a trained checkpoint on a split",
    "translate": "seq2attn translate: translate lines (a file or stdin) with a trained checkpoint",
}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("script", ["train", "eval", "translate"])
def test_help_imports_neither_torch_nor_lightning(script: str) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", f"src/{script}.py", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "== Config ==" in result.stdout  # Hydra's help, with the composed config
    assert result.stdout.startswith(FIRST_LINES[script])  # each command says what it does
    assert f"task_name: {script}" in result.stdout
    assert script == "train" or "src/train.py" not in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "hydra" in imported  # the import log was read
    assert not {"torch", "lightning", "seq2attn.tasks"} & imported
