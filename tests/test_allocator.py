"""``cpu.allocator``: tcmalloc or jemalloc preloaded by the commands that start, glibc's malloc by
default, and one line with exit code 2 when the allocator cannot be had."""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from seq2attn import allocator
from seq2attn.allocator import AllocatorError, configured_allocator, library, mapped_allocator
from seq2attn.config import ConfigError
from seq2attn.cpu_tuning import CpuSettings, configure_cpu
from seq2attn.data.toy import ToyCorpus
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


def installed(name: str) -> bool:
    return (
        sys.platform.startswith("linux")
        and ctypes.util.find_library(allocator.LIBRARIES[name][0]) is not None
    )


def needs(name: str) -> pytest.MarkDecorator:
    package = allocator.LIBRARIES[name][1]
    return pytest.mark.skipif(
        not installed(name), reason=f"Debian's {package} is not installed (make allocators)"
    )


def test_the_allocator_is_read_from_the_composed_config() -> None:
    assert configured_allocator("train", []) == "system"
    assert configured_allocator("train", ["cpu.allocator=jemalloc"]) == "jemalloc"
    # a sweep over other keys composes with its first option; flags are not overrides
    assert configured_allocator(
        "train", ["-m", "scorer=dot,general", "cpu.allocator=tcmalloc"]
    ) == ("tcmalloc")
    assert configured_allocator("eval", ["ckpt_path=x", "cpu.allocator=tcmalloc"]) == "tcmalloc"


def test_an_allocator_sweep_is_refused() -> None:
    with pytest.raises(AllocatorError, match="cpu.allocator=tcmalloc,jemalloc: one process has"):
        configured_allocator("train", ["-m", "cpu.allocator=tcmalloc,jemalloc"])


def test_a_missing_library_names_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(allocator.LIBRARIES, "tcmalloc", ("no_such_malloc_xyz", "libxyz9"))
    with pytest.raises(
        AllocatorError,
        match=r"libno_such_malloc_xyz is not installed \(Debian: "
        r"apt-get install libxyz9",
    ):
        library("tcmalloc")


def test_an_unknown_allocator_lists_the_allowed_ones() -> None:
    with pytest.raises(
        ConfigError, match="cpu.allocator=tcmallc: not one of system, tcmalloc, jemalloc"
    ):
        configure_cpu(OmegaConf.create({"allocator": "tcmallc"}))


def test_an_allocator_this_process_did_not_preload_is_refused() -> None:
    # pytest runs on glibc's malloc, so a task asked for another one must not go on without it
    assert mapped_allocator() is None
    with pytest.raises(ConfigError, match="cpu.allocator=jemalloc: this process runs without it"):
        configure_cpu(CpuSettings(allocator="jemalloc"))


def test_a_sweep_of_allocators_ends_train_py_with_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "src/train.py",
            "-m",
            "cpu.allocator=tcmalloc,jemalloc",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: cpu.allocator=tcmalloc,jemalloc: one process has one allocator; sweep it with "
        "one command per value"
    ]
    assert not (tmp_path / "sweep").exists()


def run(script: str, *args: str) -> str:
    """``python src/<script>.py args`` in the repository; its stdout, after it succeeded."""
    result = subprocess.run(
        [sys.executable, f"src/{script}.py", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def train(tmp_path: Path, *overrides: str) -> dict:
    run_dir = tmp_path / "run"
    run("train", *TINY, "trainer.max_epochs=1", f"paths.root_dir={tmp_path}",
        f"hydra.run.dir={run_dir}", *overrides)  # fmt: skip
    return json.loads((run_dir / "run.json").read_text())


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=needs(n)) for n in ("tcmalloc", "jemalloc")]
)
def test_training_runs_on_the_preloaded_allocator(tmp_path: Path, name: str) -> None:
    record = train(tmp_path, f"cpu.allocator={name}")
    assert record["allocator"] == name
    assert record["argv"][1:].count(f"cpu.allocator={name}") == 1  # restarted with the same argv


def test_training_runs_on_glibc_by_default(tmp_path: Path) -> None:
    assert train(tmp_path)["allocator"] == "system"


@pytest.mark.slow
@needs("tcmalloc")
def test_both_ranks_of_a_ddp_run_inherit_the_allocator(tmp_path: Path) -> None:
    # a rank without it would refuse to start (configure_cpu), so the run would not finish
    record = train(tmp_path, "cpu.allocator=tcmalloc", "strategy=ddp", "trainer.devices=2")
    assert record["allocator"] == "tcmalloc"
    assert (tmp_path / "run" / "metrics.json").is_file()


@needs("jemalloc")
def test_translate_gives_the_same_lines_on_another_allocator(
    trained_run: Path, tmp_path: Path
) -> None:
    source = tmp_path / "source.txt"
    source.write_text("\n".join(ToyCorpus(num_train=3000, num_val=100).splits()["test"].src[:8]))

    def translate(*overrides: str) -> str:
        return run("translate", f"ckpt_path={trained_run}", f"input={source}",
                   f"hydra.run.dir={tmp_path / 'out'}", *overrides)  # fmt: skip

    glibc = translate()
    assert glibc.count("\n") == 8
    assert translate("cpu.allocator=jemalloc") == glibc


@needs("tcmalloc")
def test_eval_scores_the_same_on_another_allocator(trained_run: Path, tmp_path: Path) -> None:
    def bleu(name: str, *overrides: str) -> float:
        run("eval", f"ckpt_path={trained_run}", "split=val", "decoding=greedy",
            f"hydra.run.dir={tmp_path / name}", *overrides)  # fmt: skip
        return json.loads((tmp_path / name / "scores.json").read_text())["bleu"]

    assert bleu("tcmalloc", "cpu.allocator=tcmalloc") == bleu("system")
