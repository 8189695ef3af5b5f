"""experiments.best: one seed's teacher trained, averaged and made to translate the training set,
its student trained on the union and averaged, the student's decoding chosen on val by the budget
grid's rule, test scored once and reproduced, the seeds' records kept side by side in one file,
and runs that must not be reported refused with one line."""

from __future__ import annotations

import gzip
import json
import shutil
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
    would, scores the student's val by :data:`VAL` (blocking costs 0.3), the teacher's val at
    40.0, test at 40.5 + seed / 10, and translates every source as ``teacher: <source>``."""

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
        for lang, lines in (("de", "ein Hund .\nzwei\n"), ("en", "a dog .\ntwo\n")):
            with gzip.open(data / f"train.{lang}.gz", "wt") as text:
                text.write(lines)
        self.translations = 2  # lines the fake translate.py writes
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
            stage, seed = folder.parent.parent.name, int(folder.parents[2].name[len("seed") :])
            if stage == "teacher":
                bleu = 40.0
            elif option(command, "split") == "val":
                bleu = VAL[name] - 0.3 * (option(command, "decoding.no_repeat_ngram_size") != "0")
                bleu -= 1.0 * ("single" in folder.name)
            else:
                bleu = 40.5 + seed / 10 + self.again_offset * folder.name.endswith("-again")
            scores = {"bleu": bleu, "chrf": 60.0, "ter": 40.0, "repetition_rate": 0.2}
            scores |= {"length_ratio": 0.98, "signatures": {"bleu": "nrefs:1|tok:13a"}}
            (folder / "scores.json").write_text(json.dumps(scores | {"decode_seconds": 1.0}))
        elif script == "src/translate.py" and "attention_dir" not in " ".join(command):
            sources = Path(option(command, "input")).read_text().splitlines()
            lines = [f"teacher: {line}\n" for line in sources][: self.translations]
            Path(option(command, "output")).write_text("".join(lines))
        elif script == "src/translate.py":
            folder = Path(option(command, "attention_dir"))
            for number in range(1, best.HEATMAPS + 1):
                (folder / f"sentence_{number:05d}.png").write_bytes(b"png")
        return Measured(returncode=0, wall_s=6020.0, peak_rss_mb=3400.0)


def test_a_seed_trains_a_teacher_distils_a_student_chooses_on_val_and_scores_test_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeCommands(monkeypatch, tmp_path)
    best.main(["--seed", "1", "--runs", str(tmp_path / "runs")])
    seed = tmp_path / "runs" / "seed1"
    steps = [
        (c[1], option(c, "hydra.run.dir") if c[1] == "src/train.py" else "") for c in fake.calls
    ]
    assert steps[:5] == [
        ("src/train.py", f"{seed}/teacher"),
        ("src/average.py", ""),
        ("src/eval.py", ""),  # the teacher's average on val
        ("src/translate.py", ""),
        ("src/train.py", f"{seed}/student"),
    ]
    translate = fake.calls[3]
    assert option(translate, "ckpt_path") == f"{seed}/teacher/averaged.ckpt"
    assert "decoding.beam_size=5" in translate and "decoding.length_penalty_type=avg" in translate
    union = (seed / "distill" / "union.de", seed / "distill" / "union.en")
    assert union[0].read_text() == "ein Hund .\nzwei\nein Hund .\nzwei\n"
    assert union[1].read_text() == "a dog .\ntwo\nteacher: ein Hund .\nteacher: zwei\n"
    student = fake.calls[4]
    assert (option(student, "data"), option(student, "trainer.val_check_interval")) == (
        "text_pairs",
        "0.5",
    )
    assert (option(student, "data.train_src"), option(student, "data.train_tgt")) == (
        str(union[0]),
        str(union[1]),
    )
    assert option(student, "data.test_tgt") == f"{tmp_path}/data/test_2016_flickr.en.gz"
    # the student takes the recipe's own size, as the teacher does, and less dropout
    assert [part for part in student if part.startswith("model.")] == ["model.dropout=0.2"]
    assert not any(part.startswith("model.") for part in fake.calls[0])
    val = [c for c in fake.calls if c[1] == "src/eval.py" and "split=val" in c]
    assert len(val) == 1 + len(GRID) + 1  # the teacher; the student's grid; its single best
    assert all(f"{seed}/student/" in option(c, "ckpt_path") for c in val[1:])
    test = [c for c in fake.calls if c[1] == "src/eval.py" and "split=test" in c]
    assert len(test) == 2  # once, and once again by a fresh process
    assert all(option(c, "ckpt_path") == f"{seed}/student/averaged.ckpt" for c in test)
    assert all("decoding.length_penalty_type=avg" in c for c in test)
    runs = json.loads((tmp_path / "multi30k_best.json").read_text())["runs"]
    record = runs["distilled_dropout02_seed1"]
    assert record["recipe"] == "distilled_dropout02"
    assert (record["decoding"], record["val_bleu"], record["test_bleu"]) == ("avg", 40.85, 40.6)
    assert record["single_checkpoint"]["val_bleu"] == pytest.approx(39.85)
    assert record["val_by_decoding"]["gnmt1+block3"]["bleu"] == pytest.approx(40.7)
    assert (record["commit"], record["precision"]) == ("abc1234", "bf16-mixed")
    assert (record["steps"], record["process_wall_s"], record["peak_rss_mb"]) == (10500, 6020, 3400)
    assert record["teacher"]["val_bleu"] == 40.0
    assert record["teacher"]["command"].endswith(
        "python src/train.py experiment=multi30k_best seed=1 hydra.run.dir="
        f"{seed}/teacher trainer.enable_progress_bar=false"
    )
    assert record["distillation"]["pairs"] == 4
    assert record["total_wall_s"] == 6000 + 6020 + 6000  # teacher, translation, student
    assert record["figures"] == [f"{tmp_path}/figures/best_attention_{n}.png" for n in (1, 2, 3)]
    page = fake.page.read_text()
    assert page.startswith("before\n") and page.endswith("after\n")
    assert "| 1 | 10,500 | 300 | bf16-mixed | avg | 40.85 | 40.60 | 60.00 | 0.2 | 0.980 |" in page
    assert "which scores val 40.00 (beam 5, `avg`)" in page


def test_a_teacher_that_does_not_translate_every_source_stops_the_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeCommands(monkeypatch, tmp_path)
    fake.translations = 1
    line = refusal(fake, tmp_path, capsys)
    assert "train.teacher.en holds 1 translations of 2 sources: a later call" in line
    distill = tmp_path / "runs" / "seed1" / "distill"
    assert not (distill / "union.en").exists() and not (distill / "translate.json").exists()
    assert not any("seed1/student" in " ".join(c) for c in fake.calls)
    fake.translations = 2  # a second call translates again rather than trusting the half file
    best.main(["--seed", "1", "--runs", str(tmp_path / "runs")])
    translations = [c for c in fake.calls if "decoding=beam" in c and "src/translate.py" in c]
    assert len(translations) == 2
    assert (distill / "union.en").read_text().count("teacher:") == 2


def test_earlier_recipes_records_keep_their_own_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeCommands(monkeypatch, tmp_path)
    best.main(["--seed", "1", "--runs", str(tmp_path / "runs")])
    kept = json.loads((tmp_path / "multi30k_best.json").read_text())
    recipe = kept["runs"]["distilled_dropout02_seed1"]
    kept["runs"]["distilled_wide_seed1"] = recipe | {"recipe": "distilled_wide", "test_bleu": 39.5}
    kept["runs"]["distilled_seed1"] = recipe | {"recipe": "distilled", "test_bleu": 39.7}
    alone = {key: value for key, value in recipe.items()}
    for key in ("recipe", "teacher", "distillation", "total_wall_s"):
        del alone[key]
    kept["runs"]["seed1"] = alone | {"test_bleu": 39.0}
    (tmp_path / "multi30k_best.json").write_text(json.dumps(kept))
    best.main(["--report"])
    page = fake.page.read_text()
    order = ["dropout 0.2 in the student (the recipe)", "40.60", "the earlier recipe", "39.70"]
    order += ["A wider distilled", "39.50"]
    order += ["before distil"]
    order += ["| 1 | 10,500 | 100 |", "39.00"]
    assert [page.index(part) for part in order] == sorted(page.index(part) for part in order)
    assert "mean of" not in page  # one seed of each recipe: no mean across recipes


def test_the_second_seed_joins_the_first_and_the_page_gives_their_mean(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeCommands(monkeypatch, tmp_path)
    best.main(["--seed", "1", "--runs", str(tmp_path / "runs")])
    best.main(["--seed", "2", "--runs", str(tmp_path / "runs")])
    best.main(["--seed", "1", "--runs", str(tmp_path / "runs")])  # done: nothing trained again
    assert sum(command[1] == "src/train.py" for command in fake.calls) == 4  # 2 per seed
    assert sorted(json.loads((tmp_path / "multi30k_best.json").read_text())["runs"]) == [
        "distilled_dropout02_seed1",
        "distilled_dropout02_seed2",
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
    assert f"| abc1234, seed 1 | 10,500 | 300 | bf16-mixed | avg | 40.85 | 39.90 | {reason} |" in (
        fake.page.read_text()
    )
    best.main(["--seed", "1", "--runs", str(tmp_path / "runs")])  # accepted after all: test once
    assert sum("split=test" in command for command in fake.calls) == 2
    page = fake.page.read_text()
    assert page.index("| 1 | 10,500 |") < page.index("Rejected recipes") < page.index("abc1234,")


def test_candidates_adopted_and_rejected_recipes_and_controls_have_a_table_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeCommands(monkeypatch, tmp_path)
    best.main(["--seed", "1", "--rejected", "too short", "--runs", str(tmp_path / "runs")])
    path = tmp_path / "multi30k_best-rejected.json"
    kept = json.loads(path.read_text())
    tried = kept["runs"]["abc1234_seed1"] | {"status": "candidate", "reason": "val 41.0 >= 40.9"}
    kept["runs"]["abc1234_seed1_longer"] = tried | {"val_bleu": 41.0}
    control = {"status": "control", "reason": "the longer one's teacher", "val_bleu": 40.7}
    kept["runs"]["abc1234_seed1_control"] = tried | control
    adopted = {"status": "adopted", "reason": "val 41.3 >= 40.9", "val_bleu": 41.3}
    kept["runs"]["abc1234_seed1_adopted"] = tried | adopted
    path.write_text(json.dumps(kept))
    best.main(["--report"])
    page = fake.page.read_text()
    order = ["Candidates that passed", "| 41.00 | 39.90 | val 41.0 >= 40.9 |"]
    order += ["became the recipe", "| 41.30 | 39.90 | val 41.3 >= 40.9 |", "Rejected recipes"]
    order += ["| 40.85 | 39.90 | too short |", "Controls: the recipe itself"]
    order += ["| 40.70 | 39.90 | the longer one's teacher |"]
    assert [page.index(part) for part in order] == sorted(page.index(part) for part in order)
    assert page.count("| abc1234, seed 1 |") == 4  # each record in one table only


def test_a_val_gate_fixed_before_training_decides_whether_test_is_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeCommands(monkeypatch, tmp_path)
    runs = ["--runs", str(tmp_path / "runs")]
    best.main(["--seed", "1", "--val-gate", "40.9", *runs])  # chosen val 40.85: below
    assert not any("split=test" in command for command in fake.calls)
    record = json.loads((tmp_path / "multi30k_best-rejected.json").read_text())["runs"]
    assert record["abc1234_seed1"]["reason"] == "val 40.85 below the gate 40.90 set before training"
    assert record["abc1234_seed1"]["val_gate"] == 40.9
    best.main(["--seed", "1", *runs])  # the kept gate binds a call that names none
    assert not any("split=test" in command for command in fake.calls)
    assert not (tmp_path / "multi30k_best.json").exists()
    for gate in ("40.0", "40.9"):  # no call can change it, nor gate a seed already started
        seed = "1" if gate == "40.0" else "2"
        if seed == "2":
            best.main(["--seed", "2", *runs])
        with pytest.raises(SystemExit) as stopped:
            best.main(["--seed", seed, "--val-gate", gate, *runs])
        assert stopped.value.code == 2
        assert "fixed before training; it cannot change" in capsys.readouterr().err
    best.main(["--seed", "3", "--val-gate", "40.85", *runs])  # reached: test decoded
    assert sum(
        "seed3/student/averaged.ckpt" in " ".join(c) for c in fake.calls if "split=test" in c
    )
    assert sorted(json.loads((tmp_path / "multi30k_best.json").read_text())["runs"]) == [
        "distilled_dropout02_seed2",
        "distilled_dropout02_seed3",
    ]


def test_a_stage_is_not_made_again_under_later_stages_made_from_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeCommands(monkeypatch, tmp_path)
    best.main(["--seed", "1", "--runs", str(tmp_path / "runs")])
    (tmp_path / "multi30k_best.json").unlink()
    seed = tmp_path / "runs" / "seed1"
    fake.calls.clear()
    shutil.move(seed / "teacher", tmp_path / "teacher")
    line = refusal(fake, tmp_path, capsys)
    assert f"{seed}/teacher is not done, but {seed}/distill and {seed}/student were made" in line
    shutil.move(tmp_path / "teacher", seed / "teacher")
    (seed / "distill" / "translate.json").rename(tmp_path / "translate.json")
    assert f"but {seed}/student were made from an earlier one" in refusal(fake, tmp_path, capsys)
    (tmp_path / "translate.json").rename(seed / "distill" / "translate.json")
    (seed / "teacher" / "averaged.ckpt").write_text("another average")
    line = refusal(fake, tmp_path, capsys)
    assert f"{seed}/distill was translated by another {seed}/teacher/averaged.ckpt" in line
    (seed / "teacher" / "averaged.ckpt").write_text("")
    (seed / "distill" / "union.en").write_text("edited\n")
    assert "union.en is missing or changed since it was made" in refusal(fake, tmp_path, capsys)
    assert fake.calls == [c for c in fake.calls if c[1] == "src/eval.py"]  # nothing trained


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
    assert "seed1/teacher was not trained from a clean commit" in line
    assert line.endswith("seed1/teacher to train it again")


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
    folder = tmp_path / "runs" / "seed1" / "teacher"
    folder.mkdir(parents=True)  # a run stopped before it wrote metrics.json
    line = refusal(fake, tmp_path, capsys)
    assert "seed1/teacher holds no finished run (no metrics.json)" in line
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
