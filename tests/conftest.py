"""Shared fixtures: compose the real Hydra config, then shrink it for tests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from seq2attn.checkpoints.loading import LoadedCheckpoint, load_checkpoints
from seq2attn.tasks import train

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
# what a user reads and a harness writes; a test writes into its tmp_path, never here
# (tracked files only: an editor's swap file there is not a test's doing)
WATCHED = ("README.md", "docs", "benchmarks/results")

# A small corpus and a tiny network: every fast dev run finishes in seconds on 2 cores.
TINY = [
    "data.corpus.num_train=600",
    "data.corpus.num_val=40",
    "data.corpus.num_test=40",
    "data.vocab_size=200",
    "data.max_tokens=600",
    "model.embedding_size=16",
    "model.hidden_size=32",
    "logger=csv",
    "trainer.accelerator=cpu",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
]

Compose = Callable[..., DictConfig]


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """Compose ``conf/<name>.yaml`` with overrides and make it the current HydraConfig."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def _tracked(paths: tuple[str, ...]) -> list[str]:
    """The files under ``paths`` that git tracks (all of them outside a git checkout)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--", *paths],
            cwd=REPO,
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout.decode()
        return sorted(name for name in listed.split("\0") if name)
    except (OSError, subprocess.SubprocessError):
        found = [REPO / name for name in paths]
        files = [p for path in found for p in ([path] if path.is_file() else path.rglob("*"))]
        return sorted(str(p.relative_to(REPO)) for p in files if p.is_file())


WATCHED_FILES = _tracked(WATCHED)


def _digests() -> dict[str, str | None]:
    """SHA-256 of each watched file (None once it is gone)."""
    digests: dict[str, str | None] = {}
    for name in WATCHED_FILES:
        try:
            digests[name] = hashlib.sha256((REPO / name).read_bytes()).hexdigest()
        except FileNotFoundError:
            digests[name] = None
    return digests


@pytest.fixture(scope="module", autouse=True)
def _repository_left_alone() -> Iterator[None]:
    """Fail the module whose tests changed a committed doc or result (as a harness's report
    would, pointed at the repository instead of tmp_path)."""
    before = _digests()
    yield
    after = _digests()
    changed = [name for name in WATCHED_FILES if before[name] != after[name]]
    if changed:
        pytest.fail(f"this module's tests changed {', '.join(changed)}; write into tmp_path", False)


@pytest.fixture(autouse=True)
def _restore_environment() -> Iterator[None]:
    """In-process DDP runs leave LOCAL_RANK, MASTER_PORT, ... in os.environ (a later subprocess
    would take itself for an already-launched rank and wait for its peers), and Lightning's
    process-wide rank: both are put back after each test."""
    saved, rank = dict(os.environ), getattr(rank_zero_only, "rank", 0)
    yield
    os.environ.clear()
    os.environ.update(saved)
    rank_zero_only.rank = rank  # a Trainer built under a cluster environment sets it


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tokenizer/corpus cache for the whole session, as on a user's machine."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def compose_train(tmp_path: Path, cache_dir: Path) -> Compose:
    """``compose_train(*overrides, tiny=True)`` -> the composed training config, HydraConfig set."""

    def _compose(*overrides: str, tiny: bool = True) -> DictConfig:
        base = [f"paths.output_dir={tmp_path / 'run'}", f"paths.cache_dir={cache_dir}"]
        return compose_config("train", [*base, *(TINY if tiny else []), *overrides])

    return _compose


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """Run folder of a small Luong model trained for 4 epochs on 3,000 toy pairs: enough for
    every test that uses it (scores above zero, distinct n-best hypotheses), the suite's
    slowest fixture."""
    output_dir = tmp_path_factory.mktemp("trained")
    cfg = compose_config(
        "train",
        [
            f"paths.output_dir={output_dir}",
            f"paths.cache_dir={cache_dir}",
            *TINY,
            "data.corpus.num_train=3000",
            "data.corpus.num_val=100",
            "data.corpus.num_test=100",
            "model.hidden_size=64",
            "model.embedding_size=32",
            "trainer.max_epochs=4",
        ],
    )
    train(cfg)
    return output_dir


def run_refused(script: str, *overrides: str, run_dir: Path) -> subprocess.CompletedProcess:
    """``src/<script>`` with ``overrides`` and its run folder at ``run_dir``, stdin closed."""
    return subprocess.run(
        [sys.executable, f"src/{script}", *overrides, f"hydra.run.dir={run_dir}"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def refusal_line(result: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a command refused as bad input: exit code 2, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def loaded_as_english_to_german(files: list[Path]) -> LoadedCheckpoint:
    """``load_checkpoints(files)`` with the stored data config naming en->de: a checkpoint of the
    other direction than the toy corpus's de->en."""
    loaded = load_checkpoints(files)
    loaded.config["data"] |= {"src_lang": "en", "tgt_lang": "de"}
    return loaded
