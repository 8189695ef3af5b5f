"""experiments.budget: the throughput figure is the mean over the whole run's CSV log, and the
Markdown shows what the result file holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.budget import markdown, mean_logged_tok_s


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


def test_markdown_of_a_rejected_attempt_names_its_status_and_overrides() -> None:
    run = {
        "test_bleu": 39.37,
        "val_bleu": 39.53,
        "steps": 5986.0,
        "tok_s": 5147.4,
        "commit": "668a619+",
        "wall_s": 1225.9,
        "command": "python src/train.py experiment=budget_r2 label_smoothing=0.3",
        "length_penalty": 1.1,
        "val_bleu_by_length_penalty": {"0.6": 39.34, "1.1": 40.26},
        "test_chrf": 58.36,
        "eval_command": "python src/eval.py ckpt_path=.cache/bench/x split=test",
    }
    report = {
        "minutes": 20.0,
        "status": "rejected",
        "overrides": ["label_smoothing=0.3"],
        "runs": {"r2_seq2attn": run},
        "goals": {"r1": 38.0, "r2": 40.0},
        "machine": {"cpu": "Intel(R) Xeon(R) Processor", "flags": ["amx_bf16"], "cores": 2},
        "date": "2026-12-02 18:30 UTC",
        "commit": "668a619",
    }
    text = markdown(report)
    assert "| R1 | not run | not run | not run | ≥ 38.0 |" in text
    assert "| R2 | 39.37 | not run | not run | ≥ 40.0 |" in text
    assert "Intel(R) Xeon(R) Processor (amx_bf16), 2 cores;" in text
    assert "overrides: `label_smoothing=0.3`. Status: rejected." in text
    assert "| r2_seq2attn (668a619+) | 5986 | 5,147 | 1226 | 39.53 | 1.1 (val beam-5 BLEU" in text
