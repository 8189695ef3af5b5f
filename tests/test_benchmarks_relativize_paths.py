"""benchmarks.relativize_paths: committed results lose the machine's folders, nothing else."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.relativize_paths import machine_paths, relativize, result_files


def test_an_absolute_path_becomes_relative_and_the_rest_stays(tmp_path: Path) -> None:
    made_in = Path("/work/main")
    record = {
        "command": "python src/train.py hydra.run.dir=/work/main/logs/study/base-seed2 seed=2",
        "config": {"data": {"root": "/work/shared/data/multi30k"}, "lr": 0.002, "seed": 2},
        "metrics": {"test/bleu": 22.37428751},
    }
    path = tmp_path / "study-seed2.json"
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    path.write_text(text)
    assert relativize(path, made_in)
    rewritten = path.read_text()
    assert json.loads(rewritten) == {
        **record,
        "command": "python src/train.py hydra.run.dir=logs/study/base-seed2 seed=2",
        "config": {"data": {"root": "../shared/data/multi30k"}, "lr": 0.002, "seed": 2},
    }
    # only the paths' characters changed: the same lines apart from those two
    before, after = text.splitlines(), rewritten.splitlines()
    assert len(before) == len(after)
    assert sum(a != b for a, b in zip(before, after, strict=True)) == 2
    assert machine_paths([path]) == []
    assert not relativize(path, made_in)  # a second run has nothing left to do


def test_markdown_and_what_is_left_over(tmp_path: Path) -> None:
    page = tmp_path / "results.md"
    page.write_text("| `python src/eval.py ckpt_path=/work/main/logs/a.ckpt` | /tmp/x.log |\n")
    assert relativize(page, Path("/work/main"))
    assert page.read_text() == "| `python src/eval.py ckpt_path=logs/a.ckpt` | /tmp/x.log |\n"
    assert [line.split(": ", 1)[1] for line in machine_paths([page])] == ["/tmp/x.log"]


def test_the_committed_results_hold_no_machine_path() -> None:
    files = result_files()
    assert any(path.name == "results.md" for path in files)
    assert machine_paths(files) == []
