"""``cpu.allocator``: tcmalloc or jemalloc preloaded by the commands that start, glibc's malloc by
default, ``auto`` (tcmalloc where installed), and one line with exit code 2 when the allocator
cannot be had."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from seq2attn import allocator, cpu_tuning
from seq2attn.allocator import RESTARTED, AllocatorError, preload_allocator
from seq2attn.config import ConfigError
from seq2attn.cpu_tuning import CpuSettings, configure_cpu
from seq2attn.data.toy import ToyCorpus
from seq2attn.overrides import configured_allocator, exit_unless_allocator
from seq2attn.tasks import train as train_in_process
from tests.conftest import TINY, Compose

ROOT = Path(__file__).resolve().parents[1]
TCMALLOC, JEMALLOC = "libtcmalloc_minimal.so.4", "libjemalloc.so.2"
PRINT_ACTIVE = "from seq2attn import allocator; print(allocator.active_allocator())"


def installed(name: str) -> bool:
    return sys.platform.startswith("linux") and bool(
        ctypes.util.find_library(allocator.LIBRARIES[name][0])
    )


def needs(*names: str) -> pytest.MarkDecorator:
    missing = [allocator.LIBRARIES[n][1] for n in names if not installed(n)]
    return pytest.mark.skipif(
        bool(missing), reason=f"Debian's {', '.join(missing)} not installed (make allocators)"
    )


@pytest.fixture
def experiments(tmp_path: Path) -> str:
    """A config folder on the search path with experiments on glibc's malloc and on jemalloc."""
    folder = tmp_path / "conf" / "experiment"
    folder.mkdir(parents=True)
    (folder / "on_glibc.yaml").write_text("# @package _global_\nseed: 3\n")
    (folder / "on_jemalloc.yaml").write_text("# @package _global_\ncpu:\n  allocator: jemalloc\n")
    return f"hydra.searchpath=[file://{tmp_path / 'conf'}]"


def test_the_allocator_is_read_from_the_composed_config(experiments: str) -> None:
    assert configured_allocator("train", []) == "system"
    assert configured_allocator("train", ["cpu.allocator=jemalloc"]) == "jemalloc"
    assert configured_allocator("train", [experiments, "experiment=on_jemalloc"]) == "jemalloc"
    assert configured_allocator("eval", ["ckpt_path=x", "cpu.allocator=tcmalloc"]) == "tcmalloc"
    # a sweep over other keys, quoted commas and lists are Hydra's syntax, not several values
    line = ["-m", "scorer=dot,general", "+note='a,b'", "trainer.devices=[0,1]"]
    assert configured_allocator("train", [*line, "cpu.allocator=tcmalloc"]) == "tcmalloc"
    assert configured_allocator("train", ["-m", "cpu.allocator=choice(tcmalloc)"]) == "tcmalloc"


def test_a_command_line_hydra_cannot_compose_here_falls_back_to_its_own_value() -> None:
    assert configured_allocator("train", ["-cn", "other", "cpu.allocator=jemalloc"]) == "jemalloc"
    assert configured_allocator("train", ["no_such_group=x", "cpu.allocator=jemalloc"]) == (
        "jemalloc"
    )
    assert configured_allocator("train", ["cpu.allocator=${oc.env:NO_SUCH_VARIABLE}"]) == "system"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (["cpu.allocator=tcmalloc,jemalloc"], "cpu.allocator=tcmalloc,jemalloc: its jobs would"),
        (["experiment=on_glibc,on_jemalloc"], r"\(system, jemalloc\); one process has one"),
        (["hydra.sweeper.params.cpu.allocator=choice(a,b)"], "cannot be searched by a sweeper"),
    ],
)
def test_a_sweep_whose_jobs_need_different_allocators_is_refused(
    experiments: str, line: list[str], message: str
) -> None:
    with pytest.raises(AllocatorError, match=message):
        configured_allocator("train", ["-m", experiments, *line])


def test_a_missing_library_names_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(allocator.LIBRARIES, "tcmalloc", ("no_such_malloc_xyz", "libxyz9"))
    with pytest.raises(AllocatorError, match=r"libno_such_malloc_xyz is not installed \(Debian: "):
        allocator.library("tcmalloc")


@pytest.fixture
def restarts(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """os.execve recorded instead of run, on a process served by glibc, tcmalloc installed."""
    calls: list[tuple] = []
    monkeypatch.setattr(os, "execve", lambda *args: calls.append(args))
    monkeypatch.setattr(allocator, "active_allocator", lambda: "system")
    monkeypatch.setattr(allocator, "library", lambda name: TCMALLOC)
    monkeypatch.delenv(RESTARTED, raising=False)
    return calls


def test_the_command_starts_again_with_the_library_first_in_ld_preload(
    restarts: list[tuple], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LD_PRELOAD", f"{JEMALLOC}:libmine.so")
    preload_allocator("tcmalloc")
    [(executable, argv, env)] = restarts
    assert (executable, argv) == (sys.executable, [sys.executable, *sys.orig_argv[1:]])
    assert env["LD_PRELOAD"] == f"{TCMALLOC}:libmine.so"  # the other allocator taken out
    assert env[RESTARTED] == "tcmalloc"
    preload_allocator("system")
    preload_allocator("tcmallc")  # not an allocator: the config's schema says so later
    assert len(restarts) == 1


def not_installed(name: str) -> str:
    """Stands in for :func:`allocator.library` on a machine without the library."""
    raise AllocatorError(f"lib{name} is not installed")


def test_auto_restarts_with_tcmalloc_only_where_it_is_installed(
    restarts: list[tuple], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert allocator.resolved("auto") == "tcmalloc"
    assert allocator.resolved("jemalloc") == "jemalloc"
    preload_allocator("auto")
    [(_, _, env)] = restarts
    assert env["LD_PRELOAD"].split(":")[0] == TCMALLOC and env[RESTARTED] == "tcmalloc"

    monkeypatch.setattr(allocator, "library", not_installed)
    assert allocator.resolved("auto") == "system"
    preload_allocator("auto")
    assert len(restarts) == 1  # nothing to preload: the command goes on as it is


def test_auto_accepts_the_allocator_a_process_runs_on_and_says_which(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(allocator, "library", lambda name: TCMALLOC)
    for active, said in [
        ("tcmalloc", "cpu.allocator=auto: tcmalloc, preloaded when the command started"),
        ("system", "cpu.allocator=auto: system serves malloc, not tcmalloc: only src/train.py"),
    ]:
        monkeypatch.setattr(cpu_tuning, "active_allocator", lambda active=active: active)
        caplog.clear()
        with caplog.at_level("INFO", logger="seq2attn.cpu_tuning"):
            configure_cpu(CpuSettings(allocator="auto"))  # never refused
        assert caplog.messages[0].startswith(said)
    monkeypatch.setattr(allocator, "library", not_installed)
    caplog.clear()
    with caplog.at_level("INFO", logger="seq2attn.cpu_tuning"):
        configure_cpu(CpuSettings(allocator="auto"))
    assert caplog.messages == [
        "cpu.allocator=auto: the system's malloc (tcmalloc cannot be preloaded here; on Debian: "
        "make allocators)"
    ]


def test_a_restart_that_did_not_take_ends_instead_of_looping(
    restarts: list[tuple], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RESTARTED, "tcmalloc")
    with pytest.raises(AllocatorError, match="was preloaded but does not serve malloc"):
        preload_allocator("tcmalloc")
    assert not restarts and RESTARTED not in os.environ  # the processes it starts never see it


def test_commands_that_only_show_something_do_not_start_again(
    restarts: list[tuple], monkeypatch: pytest.MonkeyPatch
) -> None:
    for flag in ("--cfg", "--help", "--info", "-sc"):
        monkeypatch.setattr(sys, "argv", ["train.py", flag, "job", "cpu.allocator=tcmalloc"])
        exit_unless_allocator("train")
    assert not restarts
    monkeypatch.setattr(sys, "argv", ["train.py", "cpu.allocator=tcmalloc"])
    exit_unless_allocator("train")
    assert len(restarts) == 1


def test_an_allocator_that_cannot_be_had_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(allocator.LIBRARIES, "jemalloc", ("no_such_malloc_xyz", "libxyz9"))
    monkeypatch.setattr(sys, "argv", ["train.py", "cpu.allocator=jemalloc"])
    with pytest.raises(SystemExit) as exited:
        exit_unless_allocator("train")
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: cpu.allocator=jemalloc: libno_such_malloc_xyz is not installed (Debian: apt-get "
        "install libxyz9, or `make allocators`); or use cpu.allocator=system"
    ]


def test_an_unknown_allocator_lists_the_allowed_ones() -> None:
    allowed = "not one of system, auto, tcmalloc, jemalloc"
    with pytest.raises(ConfigError, match=f"cpu.allocator=tcmallc: {allowed}"):
        configure_cpu(OmegaConf.create({"allocator": "tcmallc"}))


def test_a_task_on_another_allocator_than_configured_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cpu_tuning, "active_allocator", lambda: "system")
    with pytest.raises(ConfigError, match="cpu.allocator=jemalloc: this process does not run on"):
        configure_cpu(CpuSettings(allocator="jemalloc"))


def test_a_run_records_the_allocator_in_use(compose_train: Compose) -> None:
    cfg = compose_train("debug=limit", "trainer.max_epochs=1")
    train_in_process(cfg)
    assert json.loads((Path(cfg.paths.output_dir) / "run.json").read_text())["allocator"] == (
        allocator.active_allocator()
    )


@needs("tcmalloc", "jemalloc")
def test_the_first_preloaded_allocator_is_the_one_in_use() -> None:
    def active(preload: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", PRINT_ACTIVE],
            env={**os.environ, "LD_PRELOAD": preload},
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout.strip()  # fmt: skip

    assert active(f"{JEMALLOC}:{TCMALLOC}") == "jemalloc"
    assert active(f"{TCMALLOC} {JEMALLOC}") == "tcmalloc"
    assert active("") == "system"


def test_the_sweep_refusal_ends_train_py_before_any_work(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "src/train.py", "-m", "cpu.allocator=tcmalloc,jemalloc",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: cpu.allocator=tcmalloc,jemalloc: its jobs would run on different allocators "
        "(tcmalloc, jemalloc); one process has one: run one command per allocator"
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


def train(tmp_path: Path, *line: str) -> dict:
    run_dir = tmp_path / "run"
    run("train", *TINY, "trainer.max_epochs=1", f"paths.root_dir={tmp_path}",
        f"hydra.run.dir={run_dir}", *line)  # fmt: skip
    return json.loads((run_dir / "run.json").read_text())


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=needs(n)) for n in ("tcmalloc", "jemalloc")]
)
def test_training_runs_on_the_preloaded_allocator(tmp_path: Path, name: str) -> None:
    assert train(tmp_path, f"cpu.allocator={name}")["allocator"] == name


@needs("tcmalloc")
def test_training_on_auto_runs_on_tcmalloc_where_installed(tmp_path: Path) -> None:
    assert train(tmp_path, "cpu.allocator=auto")["allocator"] == "tcmalloc"


@needs("jemalloc")
def test_an_experiment_that_sets_the_allocator_is_preloaded(
    tmp_path: Path, experiments: str
) -> None:
    assert train(tmp_path, experiments, "experiment=on_jemalloc")["allocator"] == "jemalloc"


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

    def translate(*line: str) -> str:
        return run("translate", f"ckpt_path={trained_run}", f"input={source}",
                   f"hydra.run.dir={tmp_path / 'out'}", *line)  # fmt: skip

    glibc = translate()
    assert glibc.count("\n") == 8
    assert translate("cpu.allocator=jemalloc") == glibc


@needs("tcmalloc")
def test_eval_scores_the_same_on_another_allocator(trained_run: Path, tmp_path: Path) -> None:
    def bleu(name: str, *line: str) -> float:
        run("eval", f"ckpt_path={trained_run}", "split=val", "decoding=greedy",
            f"hydra.run.dir={tmp_path / name}", *line)  # fmt: skip
        return json.loads((tmp_path / name / "scores.json").read_text())["bleu"]

    assert bleu("tcmalloc", "cpu.allocator=tcmalloc") == bleu("system")
