"""benchmarks/budget.py's throughput figure: the mean over the whole run's CSV log."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from budget import mean_logged_tok_s, trained_commit  # noqa: E402


def write_log(folder: Path, rows: list[str]) -> None:
    (folder / "csv").mkdir()
    header = "epoch,step,train/loss,train/tok_s,val/bleu\n"
    (folder / "csv" / "metrics.csv").write_text(header + "".join(f"{r}\n" for r in rows))


def test_mean_of_every_logged_step_not_the_last(tmp_path: Path) -> None:
    write_log(tmp_path, ["0,19,8.6,4000.0,", "0,39,5.8,6000.0,", "1,59,4.1,2000.0,", "1,59,,,38.2"])
    assert mean_logged_tok_s(tmp_path) == pytest.approx(4000.0)


def test_a_log_without_rates_is_an_error_naming_the_file(tmp_path: Path) -> None:
    write_log(tmp_path, ["1,59,,,38.2"])
    with pytest.raises(ValueError, match=r"csv/metrics\.csv: no train/tok_s rows"):
        mean_logged_tok_s(tmp_path)


@pytest.mark.parametrize(("dirty", "shown"), [(False, "668a619"), (True, "668a619+")])
def test_trained_commit_reads_the_runs_own_record(tmp_path: Path, dirty: bool, shown: str) -> None:
    git = {"commit": "668a6198b891e6624c4344732e03169f14666b37", "dirty": dirty}
    (tmp_path / "run.json").write_text(json.dumps({"argv": [], "git": git}))
    assert trained_commit(tmp_path) == shown
