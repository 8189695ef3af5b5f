"""Installing a peer tool for the benchmarks says which step runs (they take minutes), and a
failing step names its command and log. pip is not run: the steps are recorded."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks import peers


@pytest.mark.parametrize("tool", sorted(peers.INSTALL_STEPS))
def test_each_install_step_is_announced_and_logged(
    tool: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[list[str]] = []

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        ran.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(peers.subprocess, "run", run)
    monkeypatch.setattr(peers, "_imports", lambda tool, bin_dir: True)
    peers._create_venv(tool, tmp_path / tool, tmp_path / "install.log")
    lines = capsys.readouterr().err.splitlines()
    total = len(peers.INSTALL_STEPS[tool]) + 1
    assert len(ran) == total and len(lines) == total
    assert lines[0] == (
        f"installing {tool}, step 1 of {total}: a virtual environment "
        f"(output in {tmp_path / 'install.log'})"
    )
    assert lines[1].startswith(f"installing {tool}, step 2 of {total}: pip install ")
    assert (tmp_path / "install.log").read_text().count("$ ") == total


def test_a_failing_step_names_its_command_and_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 1 if "pip" in command else 0)

    monkeypatch.setattr(peers.subprocess, "run", run)
    tool = sorted(peers.INSTALL_STEPS)[0]
    with pytest.raises(RuntimeError, match=rf"installing {tool} failed at `.*pip install .*`; see"):
        peers._create_venv(tool, tmp_path / tool, tmp_path / "install.log")
