"""experiments.budget and experiments.decoding_grid: one decoding procedure for every tool, runs
keyed by model, tool and seed, tables of one machine each, and the checks that keep a result
reproducible (clean tree, same machine on resume, src/eval.py reproducing the BLEU)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from experiments import budget
from experiments.budget import (
    HarnessError,
    check_clean_tree,
    check_run,
    markdown,
    mean_logged_tok_s,
    mean_std,
    reusable,
    run_key,
)
from experiments.decoding_grid import GRID, DecodingSetting, choose, grid_for
from seq2attn.config.run import validate_decoding
from tests.conftest import compose_config

EPYC = "AMD EPYC 7B13 (avx2, fma), 2 cores"
XEON = "Intel(R) Xeon(R) Platinum (avx2, fma, avx512f, amx_bf16), 2 cores"


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


def test_the_grid_is_listed_simplest_first() -> None:
    assert [s.name for s in GRID] == [
        "avg",
        "gnmt0.6",
        "gnmt1",
        "gnmt1.4",
        "avg+block3",
        "gnmt0.6+block3",
        "gnmt1+block3",
        "gnmt1.4+block3",
    ]


def test_choose_takes_the_simplest_setting_within_tolerance_of_the_best() -> None:
    scores = {"avg": 40.00, "gnmt0.6": 40.35, "gnmt1.4": 40.10, "gnmt1.4+block3": 40.50}
    assert choose(scores).name == "gnmt0.6"  # 0.15 below the best: not worth blocking
    scores["gnmt0.6"] = 40.29
    assert choose(scores).name == "gnmt1.4+block3"  # every simpler one is > 0.2 below
    assert choose({"gnmt1": 30.0}).name == "gnmt1"
    with pytest.raises(ValueError, match="not settings of the grid: gnmt9"):
        choose({"gnmt9": 41.0})
    with pytest.raises(ValueError, match="no val scores"):
        choose({})


def test_each_tool_spells_a_setting_its_own_way() -> None:
    blocked = DecodingSetting("gnmt", 1.0, 3)
    assert blocked.options("opennmt") == {
        "length_penalty": "wu",
        "alpha": 1.0,
        "block_ngram_repeat": 3,
    }
    assert GRID[0].options("opennmt") == {"length_penalty": "avg", "block_ngram_repeat": 0}
    assert blocked.options("joeynmt") is None  # no repeat blocking in JoeyNMT's beam search
    assert DecodingSetting("gnmt", 1.4).options("joeynmt") == {"beam_alpha": 1.4}
    assert [s.name for s in grid_for("joeynmt")] == ["gnmt0.6", "gnmt1", "gnmt1.4"]
    assert grid_for("opennmt") == grid_for("seq2attn") == GRID


@pytest.mark.parametrize("setting", GRID, ids=lambda s: s.name)
def test_every_setting_is_a_valid_seq2attn_decoding(setting: DecodingSetting) -> None:
    cfg = compose_config("eval", ["ckpt_path=x.ckpt", "decoding=beam", *setting.seq2attn()])
    decoding = validate_decoding(cfg.decoding)
    assert decoding.length_penalty_type.value == setting.length_penalty
    assert decoding.length_penalty == setting.alpha
    assert decoding.no_repeat_ngram_size == setting.block_ngram


def run(model: str, tool: str, machine: str, bleu: float, seed: int | None = None) -> dict:
    return {
        "model": model,
        "tool": tool,
        "seed": seed,
        "fingerprint": machine,
        "date": "2026-12-04",
        "commit": "abc1234",
        "precision": "32-true",
        "steps": 2800.0 + (seed or 0),
        "tok_s": 2500.0,
        "wall_s": 1250.0,
        "test_bleu": bleu,
        "test_chrf": 60.0,
        "repetition_rate": 0.5,
        "length_ratio": 1.01,
        "val_bleu": bleu + 1,
        "decoding": "gnmt0.6",
        **({"command": "python src/train.py experiment=budget_r2"} if tool == "seq2attn" else {}),
        **({"reproduced_bleu": bleu} if tool == "seq2attn" else {"log": ".cache/x.log"}),
    }


def test_runs_are_keyed_by_model_tool_and_seed() -> None:
    assert run_key("r2", "seq2attn", 2) == "r2_seq2attn_seed2"
    assert run_key("r2", "opennmt") == "r2_opennmt"


def test_mean_and_sample_std_over_seeds() -> None:
    assert mean_std([39.5, 40.0, 40.5]) == "40.00 ± 0.50"
    assert mean_std([39.3]) == "39.30"


def test_a_table_holds_the_runs_of_one_machine_only() -> None:
    runs = {
        **{run_key("r2", "seq2attn", s): run("r2", "seq2attn", EPYC, b, s) for s, b in [(1, 40.5)]},
        run_key("r2", "seq2attn", 2): run("r2", "seq2attn", EPYC, 41.5, 2),
        "r2_opennmt": run("r2", "opennmt", EPYC, 39.3),
        "r1_seq2attn_seed1": run("r1", "seq2attn", XEON, 38.0, 1),
    }
    text = markdown({"minutes": 20.0, "runs": runs, "goals": budget.GOALS})
    epyc, xeon = text.split(EPYC)[0], text.split(EPYC)[1]
    # the EPYC's table: R2 only, 2 seeds as mean ± std; the Xeon's R1 run in a table of its own
    assert "| R2 | seq2attn | 2 | 41.00 ± 0.71 |" in epyc and "| R1 |" not in epyc
    assert "| R2 | opennmt | 1 | 39.30 |" in epyc
    assert "| R1 | seq2attn | 1 | 38.00 |" in xeon and "| R2 |" not in xeon.split(XEON)[0]
    assert text.count("| model | tool | runs |") == 2
    assert "| r2_seq2attn_seed2 (abc1234) | 32-true | 2802 |" in text


def test_resume_reuses_only_the_runs_of_this_machine(capsys: pytest.CaptureFixture) -> None:
    runs = {"r2_seq2attn_seed1": run("r2", "seq2attn", EPYC, 40.0, 1)}
    runs["r2_opennmt"] = run("r2", "opennmt", XEON, 39.0)
    assert list(reusable(runs, EPYC)) == ["r2_seq2attn_seed1"]
    assert f"r2_opennmt: not reused, trained on {XEON}" in capsys.readouterr().out


def test_a_dirty_tree_is_refused() -> None:
    check_clean_tree("abc1234")
    with pytest.raises(HarnessError, match="uncommitted changes .commit abc1234\\+."):
        check_clean_tree("abc1234+")


def test_the_refusal_is_one_line_and_exit_code_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr("sys.argv", ["budget.py", "--models", "r2"])
    monkeypatch.setattr(budget, "require", lambda *paths: None)
    monkeypatch.setattr(budget, "commit", lambda *folder: "abc1234+")
    with pytest.raises(SystemExit) as ended:
        budget.main()
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("budget.py: error: the working tree has")


def test_a_run_is_reported_only_when_clean_and_reproduced() -> None:
    good = run("r2", "seq2attn", EPYC, 40.0, 1)
    assert check_run(good) is None
    assert check_run({**good, "reproduced_bleu": 40.09}) is None
    off = check_run({**good, "reproduced_bleu": 40.15})
    assert off is not None and "reproduced test BLEU 40.15, not 40.00" in off
    dirty = check_run({**good, "dirty": True, "commit": "abc1234+"})
    assert dirty is not None and "uncommitted changes (abc1234+)" in dirty
    assert check_run(run("r2", "opennmt", EPYC, 39.0)) is None  # nothing to reproduce


def settle(runs: dict[str, dict[str, Any]], results: Path, status: str = "kept") -> None:
    args = argparse.Namespace(name="trial", status=status, reason="val said no", minutes=20.0)
    args.overrides = []
    budget.settle(runs, args, 0.0)


def test_failed_runs_go_to_the_rejected_file_and_the_rest_to_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget, "RESULTS", tmp_path)
    monkeypatch.setattr(budget, "commit", lambda *folder: "abc1234")
    earlier = {"r2_opennmt": run("r2", "opennmt", XEON, 39.0), "old_format": {"test_bleu": 1.0}}
    (tmp_path / "trial.json").write_text(json.dumps({"runs": earlier}))
    good = run("r2", "seq2attn", EPYC, 40.0, 1)
    bad = {**run("r2", "seq2attn", EPYC, 41.0, 2), "reproduced_bleu": 40.5}
    settle({"r2_seq2attn_seed1": good, "r2_seq2attn_seed2": bad}, tmp_path)

    kept = json.loads((tmp_path / "trial.json").read_text())["runs"]
    # the new run joins the other machine's run; the entry without a fingerprint is dropped
    assert sorted(kept) == ["r2_opennmt", "r2_seq2attn_seed1"]
    rejected = json.loads((tmp_path / "trial-rejected.json").read_text())["runs"]
    ((key, entry),) = rejected.items()
    assert key.startswith("r2_seq2attn_seed2@") and entry["status"] == "rejected"
    assert "reproduced test BLEU 40.50, not 41.00" in entry["reason"]
    assert entry["test_bleu"] == 41.0  # the same entry schema as a kept run
    assert EPYC in (tmp_path / "trial.md").read_text()


def test_a_rejected_invocation_leaves_the_table_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget, "RESULTS", tmp_path)
    settle({"r2_seq2attn_seed1": run("r2", "seq2attn", EPYC, 40.0, 1)}, tmp_path, "replaced")
    settle({"r2_seq2attn_seed1": run("r2", "seq2attn", EPYC, 39.0, 1)}, tmp_path, "rejected")
    assert not (tmp_path / "trial.json").exists()
    rejected = json.loads((tmp_path / "trial-rejected.json").read_text())["runs"]
    entries = sorted(rejected.values(), key=lambda entry: entry["test_bleu"])
    assert [(e["status"], e["reason"]) for e in entries] == [
        ("rejected", "val said no"),
        ("replaced", "val said no"),
    ]


def test_a_report_of_runs_without_a_fingerprint_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget, "RESULTS", tmp_path)
    report = {"minutes": 20.0, "runs": {"r2_seq2attn": {"test_bleu": 40.1}}, "goals": {}}
    with pytest.raises(HarnessError, match=r"trial.json: runs without a machine fingerprint"):
        budget.publish(report, "trial")
    assert not (tmp_path / "trial.md").exists()
