"""``--help`` answers without importing the training or model stack (torch, Lightning): those are
imported once a command runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()}
    assert "hydra" in imported  # the import log was read
    assert not {"torch", "lightning", "seq2attn.tasks"} & imported
