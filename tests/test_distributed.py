"""Multi-process training on CPU (gloo): both DDP launchers finish, ranks split the data, and the
logged val BLEU is the corpus BLEU of the whole split (equal to a single-process evaluation)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from seq2attn.data.datamodule import build_datamodule
from seq2attn.inference.commands import evaluate
from tests.conftest import TINY, Compose, compose_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_get_disjoint_equal_shares(compose_train: Compose, world_size: int) -> None:
    datamodule = build_datamodule(compose_train().data)
    datamodule.setup("fit")
    seen: list[set[int]] = []
    counts = set()
    for rank in range(world_size):
        datamodule.trainer = SimpleNamespace(world_size=world_size, global_rank=rank)
        batches = list(datamodule.train_dataloader())
        counts.add(len(batches))
        seen.append({i for batch in batches for i in batch.indices.tolist()})
    assert len(counts) == 1
    assert sum(len(s) for s in seen) == len(set().union(*seen)) == 600


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
@pytest.mark.parametrize("ema", [None, 0.9], ids=["weights", "ema"])
def test_two_process_training_reduces_bleu_over_the_whole_split(
    tmp_path: Path, strategy: str, ema: float | None
) -> None:
    """The BLEU validation logged is what eval gets from the run's last checkpoint, also when
    both are the moving average of the weights (ema.decay)."""
    run_dir = tmp_path / "run"
    subprocess.run(
        [
            sys.executable,
            "src/train.py",
            *TINY,
            f"strategy={strategy}",
            f"ema.decay={'null' if ema is None else ema}",
            "trainer.devices=2",
            "trainer.max_epochs=2",
            f"paths.root_dir={tmp_path}",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    logged = json.loads((run_dir / "metrics.json").read_text())
    cfg = compose_config(
        "eval",
        [
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
            "split=val",
            "decoding=greedy",
            f"paths.output_dir={tmp_path / 'eval'}",
        ],
    )
    assert evaluate(cfg)["bleu"] == pytest.approx(logged["val/bleu"], abs=0.01)
    assert logged["trainer/global_step"] > 0
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ("ema" in last) == (ema is not None)
