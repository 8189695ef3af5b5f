"""seq2attn.multirun: the line that ends a multirun."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from seq2attn.multirun import MultirunSummary


def test_the_end_of_a_multirun_names_its_folder_the_finished_jobs_and_the_report(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for job, finished in (("0_a", True), ("1_b", False), ("2_c", True)):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        if finished:
            (tmp_path / job / "metrics.json").write_text("{}")
    (tmp_path / "multirun.yaml").write_text("")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    with caplog.at_level(logging.INFO, logger="seq2attn.multirun"):
        MultirunSummary().on_multirun_end(config)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"multirun done: 2 of 3 jobs finished in {tmp_path}; ")
    assert f"python src/report.py {tmp_path} --chart {tmp_path / 'report.png'}" in line
