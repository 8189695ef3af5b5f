"""experiments.budget and experiments.decoding_grid: one decoding procedure for every tool, runs
keyed by model, tool and seed, tables of one machine each, and the checks that keep a result
reproducible (clean tree, same machine on resume, src/eval.py reproducing the BLEU)."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.common import mean_std
from experiments import budget
from experiments.budget import check_run, markdown, mean_logged_tok_s, reusable, run_key
from experiments.decoding_grid import GRID, DecodingSetting, choose, grid_for
from experiments.scoring import HarnessError, check_clean_tree
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
    assert blocked.options("joeynmt") == {"beam_alpha": 1.0, "no_repeat_ngram_size": 3}
    assert DecodingSetting("gnmt", 1.4).options("joeynmt") == {
        "beam_alpha": 1.4,
        "no_repeat_ngram_size": -1,  # JoeyNMT's "off"
    }
    assert GRID[0].options("joeynmt") is None  # no avg normalisation in JoeyNMT's beam search
    assert [s.name for s in grid_for("joeynmt")] == [
        s.name for s in GRID if s.length_penalty == "gnmt"
    ]
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
        "minutes": 20.0,
        "overrides": [],
        "date": "2026-12-04",
        "commit": "abc1234",
        "precision": "32-true",
        "steps": 2800.0 + (seed or 0),
        "tok_s": 2500.0,
        "wall_s": 1250.0,
        "peak_rss_mb": 1500.0 + (seed or 0),
        "allocator": "tcmalloc" if tool == "seq2attn" else "system",
        "test_bleu": bleu,
        "test_chrf": 60.0,
        "repetition_rate": 0.5,
        "length_ratio": 1.01,
        "val_bleu": bleu + 1,
        "decoding": "gnmt0.6",
        "command": "python src/train.py experiment=budget_r2",
        **({"reproduced_bleu": bleu, "rescored_bleu": bleu} if tool == "seq2attn" else {}),
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
    text = markdown({"runs": runs, "goals": budget.GOALS})
    epyc, xeon = text.split(EPYC)[0], text.split(EPYC)[1]
    # the EPYC's table: R2 only, 2 seeds as mean ± std; the Xeon's R1 run in a table of its own
    assert "| R2 | seq2attn | 2 | 20 | 41.00 ± 0.71 |" in epyc and "| R1 |" not in epyc
    assert "| R2 | opennmt | 1 | 20 | 39.30 |" in epyc
    assert "| R1 | seq2attn | 1 | 20 | 38.00 |" in xeon and "| R2 |" not in xeon.split(XEON)[0]
    assert text.count("| model | tool | runs |") == 2
    assert "| r2_seq2attn_seed2 (abc1234) | 32-true | 2802 |" in text
    # each run's peak RSS and the allocator that served it; none recorded: an empty cell
    assert "| 1250 | 1,502 | tcmalloc | 41.50 | 41.50 |" in text
    assert "| 1250 | 1,500 | system | 39.30 |  |" in text
    del runs["r1_seq2attn_seed1"]["allocator"]
    assert "| 1250 | 1,501 |  | 38.00 | 38.00 |" in markdown({"runs": runs, "goals": budget.GOALS})


def test_a_seq2attn_run_records_what_its_run_json_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def trained(command: list[str], log: Path, cwd: Path) -> argparse.Namespace:
        folder = Path(next(a for a in command if a.startswith("hydra.run.dir=")).split("=")[1])
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"trainer/global_step": 7762.0}))
        record = {"precision": {"chosen": "bf16-mixed"}, "allocator": "tcmalloc"}
        (folder / "run.json").write_text(json.dumps(record | {"git": {"dirty": False}}))
        return argparse.Namespace(wall_s=1224.0, peak_rss_mb=1619.2)

    monkeypatch.setattr(budget, "run_measured", trained)
    monkeypatch.setattr(budget, "mean_logged_tok_s", lambda folder: 6407.0)
    monkeypatch.setattr(budget, "commit", lambda *folder: "abc1234")
    entry = budget.seq2attn_run("r2", 20.0, tmp_path, [], seed=1)
    assert (entry["precision"], entry["allocator"]) == ("bf16-mixed", "tcmalloc")
    assert (entry["steps"], entry["peak_rss_mb"], entry["wall_s"]) == (7762.0, 1619.2, 1224.0)
    assert "trainer.max_time=00:00:20:00" in entry["command"]


def test_resume_reuses_only_the_runs_of_this_machine_and_recipe(
    capsys: pytest.CaptureFixture,
) -> None:
    runs = {"r2_seq2attn_seed1": run("r2", "seq2attn", EPYC, 40.0, 1)}
    runs["r2_opennmt"] = run("r2", "opennmt", XEON, 39.0)
    runs["r2_seq2attn_seed2"] = {**run("r2", "seq2attn", EPYC, 40.0, 2), "overrides": ["x=1"]}
    here = {"fingerprint": EPYC, "minutes": 20.0, "overrides": []}
    assert list(reusable(runs, here)) == ["r2_seq2attn_seed1"]
    out = capsys.readouterr().out
    assert "r2_opennmt: not reused, its fingerprint differ" in out
    assert "r2_seq2attn_seed2: not reused, its overrides differ" in out


def test_a_dirty_tree_is_refused() -> None:
    check_clean_tree("abc1234")
    with pytest.raises(HarnessError, match="uncommitted changes .commit abc1234\\+."):
        check_clean_tree("abc1234+")


def test_the_refusal_is_one_line_and_exit_code_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr("sys.argv", ["budget.py", "--models", "r2"])
    monkeypatch.setattr(budget, "check_inputs", lambda *paths: None)
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
    assert off is not None and "src/eval.py gave test BLEU 40.15, not 40.00" in off
    rescored = check_run({**good, "rescored_bleu": 39.8})
    assert rescored is not None and "scoring the hypotheses gave test BLEU 39.80" in rescored
    dirty = check_run({**good, "dirty": True, "commit": "abc1234+"})
    assert dirty is not None and "uncommitted changes (abc1234+)" in dirty
    assert check_run(run("r2", "opennmt", EPYC, 39.0)) is None  # nothing to reproduce


def settle(runs: dict[str, dict[str, Any]], status: str = "kept") -> None:
    args = argparse.Namespace(name="trial", status=status, reason="val said no")
    budget.settle(runs, set(runs), args, 0.0)


def test_failed_runs_go_to_the_rejected_file_and_the_rest_to_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget, "RESULTS", tmp_path)
    monkeypatch.setattr(budget, "commit", lambda *folder: "abc1234")
    earlier = {
        "r2_opennmt": run("r2", "opennmt", XEON, 39.0),
        "r2_seq2attn_seed1": run("r2", "seq2attn", XEON, 38.0, 1),
        "old_format": {"test_bleu": 1.0},
    }
    (tmp_path / "trial.json").write_text(json.dumps({"runs": earlier}))
    good = run("r2", "seq2attn", EPYC, 40.0, 1)
    bad = {**run("r2", "seq2attn", EPYC, 41.0, 2), "reproduced_bleu": 40.5}
    runs = {"r2_seq2attn_seed1": good, "r2_seq2attn_seed2": bad}
    settle(runs)

    assert list(runs) == ["r2_seq2attn_seed1"]  # the failed run leaves: a resume retrains it
    kept = json.loads((tmp_path / "trial.json").read_text())["runs"]
    # the new run displaces the Xeon's run of its key; the Xeon's other run stays
    assert kept["r2_seq2attn_seed1"]["fingerprint"] == EPYC
    assert sorted(kept) == ["r2_opennmt", "r2_seq2attn_seed1"]
    rejected = json.loads((tmp_path / "trial-rejected.json").read_text())["runs"]
    by_run = {key.split("@")[0]: entry for key, entry in rejected.items()}
    assert by_run["r2_seq2attn_seed2"]["status"] == "rejected"
    assert "src/eval.py gave test BLEU 40.50, not 41.00" in by_run["r2_seq2attn_seed2"]["reason"]
    assert by_run["r2_seq2attn_seed2"]["test_bleu"] == 41.0  # the entry schema of a kept run
    assert by_run["r2_seq2attn_seed1"]["status"] == "replaced"  # the Xeon's, displaced
    assert by_run["r2_seq2attn_seed1"]["fingerprint"] == XEON
    assert by_run["old_format"]["reason"] == "written before machine fingerprints"
    text = (tmp_path / "trial.md").read_text()
    assert EPYC in text and XEON in text and text.count("| model | tool |") == 2


def test_runs_reused_by_resume_stay_in_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget, "RESULTS", tmp_path)
    reused = {"r2_opennmt": run("r2", "opennmt", XEON, 39.0)}
    reused["r2_seq2attn_seed1"] = run("r2", "seq2attn", XEON, 39.6, 1)
    (tmp_path / "trial.json").write_text(json.dumps({"runs": reused}))
    new = run("r2", "seq2attn", XEON, 39.1, 2)
    args = argparse.Namespace(name="trial", status="kept", reason="")
    budget.settle({**reused, "r2_seq2attn_seed2": new}, {"r2_seq2attn_seed2"}, args, 0.0)

    kept = json.loads((tmp_path / "trial.json").read_text())["runs"]
    assert kept == {**reused, "r2_seq2attn_seed2": new}
    assert not (tmp_path / "trial-rejected.json").exists()


def test_a_rejected_invocation_leaves_the_table_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(budget, "RESULTS", tmp_path)
    settle({"r2_seq2attn_seed1": run("r2", "seq2attn", EPYC, 40.0, 1)}, "replaced")
    settle({"r2_seq2attn_seed1": run("r2", "seq2attn", EPYC, 39.0, 1)}, "rejected")
    assert not (tmp_path / "trial.json").exists()
    rejected = json.loads((tmp_path / "trial-rejected.json").read_text())["runs"]
    entries = sorted(rejected.values(), key=lambda entry: entry["test_bleu"])
    assert [(e["status"], e["reason"]) for e in entries] == [
        ("rejected", "val said no"),
        ("replaced", "val said no"),
    ]


class FakeTools:
    """Stands in for training and decoding: records what was trained, scores each run at its
    seed's BLEU (a run that ``bad`` names fails the reproduction check)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, machine: str) -> None:
        self.trained: list[str] = []
        self.bad: set[str] = set()
        self.page = tmp_path / "results.md"
        self.page.write_text("before\n<!-- report:budget -->\n<!-- /report:budget -->\nafter\n")
        monkeypatch.setattr(budget, "RESULTS", tmp_path / "results")
        monkeypatch.setattr(budget, "PAGE", self.page)
        monkeypatch.setattr(budget, "check_inputs", lambda *paths: None)
        monkeypatch.setattr(budget, "commit", lambda *folder: "abc1234")
        monkeypatch.setattr(budget, "fingerprint", lambda described: machine)
        monkeypatch.setattr(budget.peers, "install", lambda tool, root: tmp_path)
        monkeypatch.setattr(budget.peers, "prepare_data", lambda *args: None)
        monkeypatch.setattr(budget, "seq2attn_run", self.seq2attn_run)
        monkeypatch.setattr(budget, "peer_train", self.peer_train)
        monkeypatch.setattr(budget, "seq2attn_decoding", self.decoding)
        monkeypatch.setattr(budget, "peer_decoding", lambda tool, r, ws, b: self.decoding(r))

    def seq2attn_run(self, model: str, minutes: float, ws: Path, overrides, seed: int) -> dict:
        self.trained.append(run_key(model, "seq2attn", seed))
        return {k: v for k, v in run(model, "seq2attn", "", 0.0, seed).items() if "bleu" not in k}

    def peer_train(self, tool: str, model: str, minutes: float, ws, bin_dir) -> dict:
        self.trained.append(run_key(model, tool))
        return {k: v for k, v in run(model, tool, "", 0.0).items() if "bleu" not in k}

    def decoding(self, trained: dict) -> dict:
        bleu = 40.0 + (trained["seed"] or 0) / 10
        name = run_key(trained["model"], trained["tool"], trained["seed"])
        again = bleu - 1 if name in self.bad else bleu
        return {"test_bleu": bleu, "val_bleu": bleu, "reproduced_bleu": again}


def invoke(tmp_path: Path, *argv: str) -> None:
    budget.drive(
        budget.parse_arguments(["--models", "r2", "--work-dir", str(tmp_path / "work"), *argv])
    )


def test_resume_trains_only_what_is_missing_or_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeTools(monkeypatch, tmp_path, EPYC)
    fake.bad = {"r2_seq2attn_seed2"}
    invoke(tmp_path, "--tools", "seq2attn,opennmt")
    assert fake.trained == [
        "r2_seq2attn_seed1",
        "r2_seq2attn_seed2",
        "r2_seq2attn_seed3",
        "r2_opennmt",
    ]
    kept = json.loads((tmp_path / "results" / "budget.json").read_text())["runs"]
    assert sorted(kept) == ["r2_opennmt", "r2_seq2attn_seed1", "r2_seq2attn_seed3"]
    assert kept["r2_seq2attn_seed3"]["fingerprint"] == EPYC and kept["r2_opennmt"]["seed"] is None
    page = fake.page.read_text()  # the results page's budget section holds the same table
    assert page.startswith("before\n") and page.endswith("after\n")
    assert "| r2_seq2attn_seed3 (abc1234) | 32-true | 2803 |" in page

    fake.trained, fake.bad = [], set()
    invoke(tmp_path, "--tools", "seq2attn,opennmt", "--resume")
    assert fake.trained == ["r2_seq2attn_seed2"]  # the failed run only
    kept = json.loads((tmp_path / "results" / "budget.json").read_text())["runs"]
    assert kept["r2_seq2attn_seed2"]["test_bleu"] == pytest.approx(40.2)

    # on another machine nothing is reused
    fake = FakeTools(monkeypatch, tmp_path, XEON)
    invoke(tmp_path, "--tools", "seq2attn", "--seeds", "1", "--resume")
    assert fake.trained == ["r2_seq2attn_seed1"]


def test_a_tried_recipe_trains_in_its_own_folder_and_records_only_its_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeTools(monkeypatch, tmp_path, EPYC)
    args = ["--models", "r2", "--tools", "seq2attn", "--seeds", "1"]
    tried = budget.parse_arguments([*args, "--status", "rejected", "--reason", "worse on val"])
    assert tried.work_dir.name == "budget-rejected"
    assert budget.parse_arguments(args).work_dir.name == "budget"
    tried.work_dir = tmp_path / "tried"
    tried.overrides = ["label_smoothing=0.3"]
    budget.drive(tried)
    assert fake.trained == ["r2_seq2attn_seed1"]
    assert not (tmp_path / "results" / "budget.json").exists()
    (entry,) = json.loads((tmp_path / "results" / "budget-rejected.json").read_text())[
        "runs"
    ].values()
    assert (entry["status"], entry["reason"], entry["overrides"]) == (
        "rejected",
        "worse on val",
        ["label_smoothing=0.3"],
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--models", "r3"], "--models: choose from r1, r2"),
        (["--models", ","], "--models: choose from r1, r2"),
        (["--tools", "fairseq"], "--tools: choose from seq2attn, opennmt, joeynmt"),
        (["--minutes", "0"], "--minutes 0: must be above 0"),
        (["--status", "rejected"], "--status rejected needs --reason"),
    ],
)
def test_bad_options_end_with_one_line_and_exit_code_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as ended:
        budget.parse_arguments(argv)
    assert ended.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]


def test_test_references_are_multi30ks_english_test_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "multi30k").mkdir()
    with gzip.open(tmp_path / "multi30k" / "test_2016_flickr.en.gz", "wt") as lines:
        lines.write("A dog runs .\nTwo men talk . \n")
    monkeypatch.setattr(budget, "corpus", lambda: tmp_path / "multi30k")
    monkeypatch.setattr(budget, "REPO", tmp_path)
    plain = budget.test_references()
    assert plain.read_text() == "A dog runs .\nTwo men talk .\n"
    hypotheses = tmp_path / "hyp.txt"
    hypotheses.write_text("A dog runs .\nTwo men talk .\n")
    assert budget.peer_scores(hypotheses, plain)["bleu"] == pytest.approx(100.0)
