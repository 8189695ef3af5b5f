"""peers.py stops a time-limited peer with its own signal, whatever the launcher ignores."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import peers  # noqa: E402

# Like JoeyNMT's training loop: save on KeyboardInterrupt, then exit normally.
INTERRUPTIBLE = """
import time
print("started", flush=True)
try:
    time.sleep(60)
except KeyboardInterrupt:
    print("saved on interrupt", flush=True)
"""


@pytest.fixture
def sigint_ignored() -> Iterator[None]:
    """This process as `nohup cmd &` in a shell without job control starts it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGINT, previous)


def test_sigint_reaches_a_child_of_a_launcher_that_ignores_it(
    tmp_path: Path, sigint_ignored: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers, "STOP_GRACE_S", 10.0)  # an ignored SIGINT ends in SIGKILL: -9
    log = tmp_path / "child.log"
    command = [sys.executable, "-c", INTERRUPTIBLE]
    bin_dir = Path(sys.executable).parent
    done = peers._run("joeynmt", command, log, bin_dir, 3.0, signal.SIGINT, expected=(0,))
    assert log.read_text().splitlines() == ["started", "saved on interrupt"]
    assert 3.0 <= done.wall_s < 10.0
