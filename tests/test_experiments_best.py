"""experiments.best: one seed's run averaged, its decoding chosen on val by the budget grid's
rule, test scored once and reproduced, the seeds' records kept side by side in one file, and
runs that must not be reported refused with one line."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import pytest

from benchmarks.common import Measured
from experiments import best, scoring
from experiments.decoding_grid import GRID

# val BLEU of the averaged model by setting: gnmt1 is best, avg is 0.15 below it (chosen)
VAL = {"avg": 40.85, "gnmt0.6": 40.7, "gnmt1": 41.0, "gnmt1.4": 40.9}


def option(command: list[str], key: str) -> str:
    return next(part.split("=", 1)[1] for part in command if part.startswith(f"{key}="))


class FakeCommands:
    """Stands in for src/train.py, average.py, eval.py and translate.py: writes the files each
    would, scores val by :data:`VAL` (blocking costs 0.3) and test at 40.5 + seed / 10."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        self.calls: list[list[str]] = []
        self.git: dict[str, object] = {"commit": "abc1234" + "0" * 33, "dirty": False}
        self.changed: list[str] = []
        self.tree = "abc1234"
        self.again_offset = 0.0
        self.page = tmp_path / "results.md"
        self.page.write_text("before\n<!-- report:best -->\n<!-- /report:best -->\nafter\n")
        data = tmp_path / "data"
        data.mkdir()
        with gzip.open(data / "test_2016_flickr.de.gz", "wt") as text:
            text.write("ein Hund .\nzwei Hunde .\ndrei Hunde .\nvier\n")
        (tmp_path / "figures").mkdir()
        monkeypatch.setattr(best, "RESULT", tmp_path / "multi30k_best.json")
        monkeypatch.setattr(best, "REJECTED", tmp_path / "multi30k_best-rejected.json")
        monkeypatch.setattr(best, "PAGE", self.page)
        monkeypatch.setattr(best, "FIGURES", tmp_path / "figures")
        monkeypatch.setattr(best, "corpus", lambda: data)
        monkeypatch.setattr(scoring, "corpus", lambda: data)
        monkeypatch.setattr(best, "require", lambda *args: None)
        monkeypatch.setattr(best, "tree_commit", lambda: self.tree)
        monkeypatch.setattr(best, "changed_since", lambda commit, *paths: self.changed)
        monkeypatch.setattr(best, "machine", lambda: {})
        monkeypatch.setattr(best, "describe_machine", lambda described: "Xeon (amx_bf16), 2 cores")
        monkeypatch.setattr(best, "run", self.run)
        monkeypatch.setattr(scoring, "run", self.run)

    def run(self, command: list[str], log: Path) -> Measured:
        self.calls.append(command)
        script = command[1]
        if script == "src/train.py":
            folder = Path(option(command, "hydra.run.dir"))
            (folder / "checkpoints").mkdir(parents=True)
            (folder / "checkpoints" / "best-epoch020-bleu39.90.ckpt").write_text("")
            precision = {"chosen": "bf16-mixed", "reason": "bf16 products 3.1x faster"}
            record = {"git": self.git, "precision": precision, "argv": command[1:]}
            (folder / "run.json").write_text(json.dumps(record))
            metrics = {"time/wall_s": 6000.0, "trainer/global_step": 10500, "params": 26570560}
            metrics |= {"stop_reason": "time", "val/bleu_best": 39.9}
            (folder / "metrics.json").write_text(json.dumps(metrics))
        elif script == "src/average.py":
            Path(command[command.index("--out") + 1]).write_text("")
        elif script == "src/eval.py":
            folder = Path(option(command, "hydra.run.dir"))
            setting = option(command, "decoding.length_penalty_type")
            alpha = float(option(command, "decoding.length_penalty"))
            name = "avg" if setting == "avg" else f"gnmt{alpha:g}"
            seed = int(folder.parent.parent.name.removeprefix("multi30k_best_seed"))
            if option(command, "split") == "val":
                bleu = VAL[name] - 0.3 * (option(command, "decoding.no_repeat_ngram_size") != "0")
                bleu -= 1.0 * ("single" in folder.name)
            else:
                bleu = 40.5 + seed / 10 + self.again_offset * folder.name.endswith("-again")
            scores = {"bleu": bleu, "chrf": 60.0, "ter": 40.0, "repetition_rate": 0.2}
            scores |= {"length_ratio": 0.98, "signatures": {"bleu": "nrefs:1|tok:13a"}}
            (folder / "scores.json").write_text(json.dumps(scores | {"decode_seconds": 1.0}))
        elif script == "src/translate.py":
            folder = Path(option(command, "attention_dir"))
            for number in range(1, best.HEATMAPS + 1):
                (folder / f"sentence_{number:05d}.png").write_bytes(b"png")
        return Measured(returncode=0, wall_s=6020.0, peak_rss_mb=3400.0)


def test_a_seed_is_trained_averaged_chosen_on_val_and_scored_on_test_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeCommands(monkeypatch, tmp_path)
    best.main(["--seed", "1", "--runs", str(tmp_path / "runs")])
    scripts = [command[1] for command in fake.calls]
    assert scripts[:2] == ["src/train.py", "src/average.py"]
    val = [c for c in fake.calls if c[1] == "src/eval.py" and "split=val" in c]
    assert len(val) == len(GRID) + 1  # the grid for the average, the chosen one for the single
    test = [c for c in fake.calls if c[1] == "src/eval.py" and "split=test" in c]
    assert len(test) == 2  # once, and once again by a fresh process
    assert all("decoding.length_penalty_type=avg" in c for c in test)
    record = json.loads((tmp_path / "multi30k_best.json").read_text())["runs"]["seed1"]
    assert (record["decoding"], record["val_bleu"], record["test_bleu"]) == ("avg", 40.85, 40.6)
    assert record["single_checkpoint"]["val_bleu"] == pytest.approx(39.85)
    assert record["val_by_decoding"]["gnmt1+block3"]["bleu"] == pytest.approx(40.7)
    assert (record["commit"], record["precision"]) == ("abc1234", "bf16-mixed")
    assert (record["steps"], record["process_wall_s"], record["peak_rss_mb"]) == (10500, 6020, 3400)
    assert record["command"].endswith(
        "python src/train.py experiment=multi30k_best seed=1 hydra.run.dir="
        f"{tmp_path}/runs/multi30k_best_seed1 trainer.enable_progress_bar=false"
    )
    assert record["figures"] == [f"{tmp_path}/figures/best_attention_{n}.png" for n in (1, 2, 3)]
    page = fake.page.read_text()
    assert page.startswith("before\n") and page.endswith("after\n")
    assert "| 1 | 10,500 | 100 | bf16-mixed | avg | 40.85 | 40.60 | 60.00 | 0.2 | 0.980 |" in page


def test_the_second_seed_joins_the_first_and_the_page_gives_their_mean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeCommands(monkeypatch, tmp_path)
    best.main(["--seed", "1", "--runs", str(tmp_path / "runs")])
    best.main(["--seed", "2", "--runs", str(tmp_path / "runs")])
    best.main(["--seed", "1", "--runs", str(tmp_path / "runs")])  # done: nothing trained again
    assert sum(command[1] == "src/train.py" for command in fake.calls) == 2
    assert sorted(json.loads((tmp_path / "multi30k_best.json").read_text())["runs"]) == [
        "seed1",
        "seed2",
    ]
    assert "| mean of 2 |  |  |  |  | 40.85 ± 0.00 | 40.65 ± 0.07 |" in fake.page.read_text()


def test_a_rejected_recipe_is_scored_on_val_only_and_kept_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeCommands(monkeypatch, tmp_path)
    reason = "val below the recipe it was to replace"
    best.main(["--seed", "1", "--rejected", reason, "--runs", str(tmp_path / "runs")])
    assert not any("split=test" in command for command in fake.calls)
    assert not (tmp_path / "multi30k_best.json").exists()
    kept = json.loads((tmp_path / "multi30k_best-rejected.json").read_text())["runs"]
    record = kept["abc1234_seed1"]
    assert (record["status"], record["reason"], record["val_bleu"]) == ("rejected", reason, 40.85)
    assert "test_bleu" not in record
    assert f"| abc1234, seed 1 | 10,500 | 100 | bf16-mixed | avg | 40.85 | 39.90 | {reason} |" in (
        fake.page.read_text()
    )
    best.main(["--seed", "1", "--runs", str(tmp_path / "runs")])  # accepted after all: test once
    assert sum("split=test" in command for command in fake.calls) == 2
    page = fake.page.read_text()
    assert page.index("| 1 | 10,500 |") < page.index("Rejected recipes") < page.index("abc1234,")


def refusal(fake: FakeCommands, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The one line with which ``--seed 1`` stops, after checking it wrote no result."""
    page = fake.page.read_text()
    with pytest.raises(SystemExit) as stopped:
        best.main(["--seed", "1", "--runs", str(tmp_path / "runs")])
    assert stopped.value.code == 2
    assert not (tmp_path / "multi30k_best.json").exists() and fake.page.read_text() == page
    (line,) = capsys.readouterr().err.splitlines()
    return line


@pytest.mark.parametrize(
    "git", [{"commit": "abc1234" + "0" * 33, "dirty": True}, {"commit": None, "dirty": None}]
)
def test_a_run_not_trained_from_a_clean_commit_is_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    git: dict[str, object],
) -> None:
    fake = FakeCommands(monkeypatch, tmp_path)
    fake.git = git
    line = refusal(fake, tmp_path, capsys)
    assert "multi30k_best_seed1 was not trained from a clean commit" in line
    assert line.endswith("multi30k_best_seed1 to train it again")


def test_nothing_starts_from_a_tree_with_uncommitted_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeCommands(monkeypatch, tmp_path)
    best.main(["--seed", "1", "--runs", str(tmp_path / "runs")])
    fake.calls.clear()
    (tmp_path / "multi30k_best.json").unlink()
    fake.tree = "abc1234+"  # scoring a finished run is refused too, not only training one
    assert "commit or stash them first" in refusal(fake, tmp_path, capsys)
    assert fake.calls == []


def test_an_unfinished_foreign_or_outdated_run_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeCommands(monkeypatch, tmp_path)
    folder = tmp_path / "runs" / "multi30k_best_seed1"
    folder.mkdir(parents=True)  # a run stopped before it wrote metrics.json
    assert "seed1 holds no finished run (no metrics.json)" in refusal(fake, tmp_path, capsys)
    assert fake.calls == []  # its checkpoints are not mixed with a new run's
    folder.rmdir()
    fake.changed = ["conf/experiment/multi30k_best.yaml"]
    line = refusal(fake, tmp_path, capsys)
    assert "trained at abc1234; conf/experiment/multi30k_best.yaml changed since" in line
    fake.changed = []
    record = json.loads((folder / "run.json").read_text())
    record["argv"] = ["src/train.py", "experiment=multi30k_best", "seed=1", "model.dropout=0.1"]
    (folder / "run.json").write_text(json.dumps(record))
    line = refusal(fake, tmp_path, capsys)
    assert "was trained by 'src/train.py experiment=multi30k_best seed=1 model.dropout=0.1'" in line


def test_a_test_score_that_a_fresh_process_does_not_reproduce_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeCommands(monkeypatch, tmp_path)
    fake.again_offset = 0.2
    assert "a fresh src/eval.py scored test 40.80, not 40.60" in refusal(fake, tmp_path, capsys)


def test_report_without_a_result_file_says_which_command_makes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    FakeCommands(monkeypatch, tmp_path)
    with pytest.raises(SystemExit) as stopped:
        best.main(["--report"])
    assert stopped.value.code == 2 and "run --seed 1 first" in capsys.readouterr().err


def test_a_reworded_comment_is_no_change_of_recipe_but_a_changed_value_is(tmp_path: Path) -> None:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(tmp_path), *args], capture_output=True, text=True, timeout=30
        )
        return done.stdout.strip()

    git("init", "-q")
    (tmp_path / "conf").mkdir()
    recipe = tmp_path / "conf" / "best.yaml"
    recipe.write_text("# a wide model\nmodel:\n  dropout: 0.4  # more than before\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "recipe")
    trained_at = git("rev-parse", "HEAD")
    recipe.write_text(
        "# a wide model, about 9,000 steps\n\nmodel:\n    # regularised\n"
        "  dropout: 0.4  # more than before\n"
    )
    assert scoring.changed_since(trained_at, "conf", repo=tmp_path) == []
    recipe.write_text("# a wide model\nmodel:\n  dropout: 0.3  # more than before\n")
    assert scoring.changed_since(trained_at, "conf", repo=tmp_path) == ["conf/best.yaml"]
