"""benchmarks.common: the measured child process, the corpus locator, relative paths, the commit,
the step timer and the JSON + Markdown writer."""

from __future__ import annotations

import json
import math
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import common

# Like JoeyNMT's training loop: save on KeyboardInterrupt, then exit normally.
INTERRUPTIBLE = """
import time
print("started", flush=True)
try:
    time.sleep(60)
except KeyboardInterrupt:
    print("saved on interrupt", flush=True)
"""
# touches every page of n MB (bytes of zeros from calloc would not be resident)
ALLOCATE = "import time; block = b'x' * ({mb} * 2**20); time.sleep(0.2)"


@pytest.mark.timeout(30)
def test_measured_child_reports_its_exit_code_and_wall_time(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    command = [sys.executable, "-c", "import sys, time; print('hi'); time.sleep(0.3); sys.exit(3)"]
    done = common.run_measured(command, log, expected=None)
    assert done.returncode == 3
    assert 0.3 <= done.wall_s < 20
    assert log.read_text() == "hi\n"


@pytest.mark.timeout(30)
def test_an_unexpected_exit_code_raises_with_the_logs_last_lines(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys; print('broken'); sys.exit(2)"]
    with pytest.raises(common.CommandFailed, match=r"(?s)exited with 2.*broken"):
        common.run_measured(command, tmp_path / "child.log")


@pytest.mark.timeout(60)
def test_peak_memory_is_the_childs_and_grows_with_what_it_allocates(tmp_path: Path) -> None:
    small = common.run_measured([sys.executable, "-c", ALLOCATE.format(mb=1)], tmp_path / "s.log")
    large = common.run_measured([sys.executable, "-c", ALLOCATE.format(mb=200)], tmp_path / "l.log")
    assert small.peak_rss_mb < 100
    assert large.peak_rss_mb > 150
    assert large.peak_rss_mb - small.peak_rss_mb > 150


@pytest.fixture
def sigint_ignored() -> Iterator[None]:
    """This process as `nohup cmd &` in a shell without job control starts it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.timeout(30)
def test_sigint_reaches_a_child_of_a_launcher_that_ignores_it(
    tmp_path: Path, sigint_ignored: None
) -> None:
    """A time-limited peer gets its stop signal even when the launcher ignores it: an ignored
    SIGINT would end in SIGKILL after the grace period (exit -9)."""
    log = tmp_path / "child.log"
    command = [sys.executable, "-c", INTERRUPTIBLE]
    done = common.run_measured(
        command, log, stop_after_s=3.0, stop_signal=signal.SIGINT, grace_s=10.0
    )
    assert log.read_text().splitlines() == ["started", "saved on interrupt"]
    assert done.returncode == 0
    assert 3.0 <= done.wall_s < 10.0


@pytest.mark.timeout(30)
def test_a_child_that_ignores_its_stop_signal_is_killed_after_the_grace_period(
    tmp_path: Path,
) -> None:
    ignores = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(30)"
    done = common.run_measured(
        [sys.executable, "-c", ignores],
        tmp_path / "child.log",
        stop_after_s=1.0,
        grace_s=1.0,
        expected=None,
    )
    assert done.returncode == -signal.SIGKILL
    assert 2.0 <= done.wall_s < 10.0
    assert math.isnan(done.peak_rss_mb)  # nobody was left to measure it


def test_corpus_is_seq2attn_data_when_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEQ2ATTN_DATA", str(tmp_path / "multi30k"))
    assert common.corpus() == tmp_path / "multi30k"
    monkeypatch.delenv("SEQ2ATTN_DATA")
    assert common.corpus() == common.REPO.parent / "shared" / "data" / "multi30k"


def test_require_names_the_missing_folder_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        common.require("python -m benchmarks.x", tmp_path, tmp_path / "absent")
    assert stopped.value.code == 2
    assert f"needs {tmp_path / 'absent'}; it is not there" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("hydra.run.dir=/srv/repo/logs/study/a-seed1 x=1", "hydra.run.dir=logs/study/a-seed1 x=1"),
        (
            "paths.root_dir=/srv/repo data.root=/srv/shared/m",
            "paths.root_dir=. data.root=../shared/m",
        ),
        ('["/srv/repo/.cache/r1.ckpt", "/srv"]', '[".cache/r1.ckpt", ".."]'),
        ("/srv/repository/x /other/srv/repo/y /srvx", "../repository/x /other/srv/repo/y /srvx"),
    ],
)
def test_relative_text_rewrites_only_paths_into_the_repository_or_beside_it(
    text: str, shown: str
) -> None:
    assert common.relative_text(text, Path("/srv/repo")) == shown


def test_write_result_writes_json_and_markdown_with_the_rows(tmp_path: Path) -> None:
    record = {"rate": 1.5, "checkpoint": str(common.REPO / ".cache" / "r1.ckpt"), "n": [1, 2]}
    markdown = common.table(["measure", "value"], [["greedy, sentences/s", "12.5"], ["a|b", 3]])
    json_path, markdown_path = common.write_result("decoding", record, markdown, tmp_path)
    assert (json_path, markdown_path) == (tmp_path / "decoding.json", tmp_path / "decoding.md")
    assert json.loads(json_path.read_text()) == {**record, "checkpoint": ".cache/r1.ckpt"}
    assert markdown_path.read_text().splitlines() == [
        "| measure | value |",
        "| --- | --- |",
        "| greedy, sentences/s | 12.5 |",
        "| a\\|b | 3 |",
    ]


@pytest.mark.parametrize(("dirty", "shown"), [(False, "668a619"), (True, "668a619+")])
def test_commit_of_a_run_is_what_its_run_record_says(
    tmp_path: Path, dirty: bool, shown: str
) -> None:
    git = {"commit": "668a6198b891e6624c4344732e03169f14666b37", "dirty": dirty}
    (tmp_path / "run.json").write_text(json.dumps({"argv": [], "git": git}))
    assert common.commit(tmp_path) == shown


def test_step_timer_counts_only_the_steps_after_warmup() -> None:
    timer = common.StepTimer()
    for tokens in (100, 200, 300, 400):
        timer.mark()
        timer.start()
        timer.stop(target_tokens=tokens)
    timed = timer.steady(2)
    assert timed["steps"] == 2
    assert timed["totals"] == {"target_tokens": 700}
    assert timed["seconds"] == pytest.approx(timer.ends[3] - timer.ends[1])
    assert timed["step_s"] == pytest.approx(sum(timer.durations[2:]))
    with pytest.raises(ValueError, match="warmup must leave timed steps"):
        timer.steady(4)


def test_machine_names_the_cpu_and_its_core_count() -> None:
    described = common.machine()
    assert described["cpu"] and described["cores"] >= 1
    assert set(described["flags"]) <= set(common.CPU_FLAGS)
    assert common.describe_machine(described).endswith(f", {described['cores']} cores")
