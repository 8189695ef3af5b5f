"""The best configuration of docs/results.md: train it, average its checkpoints, score it.

    python -m experiments.best                # train both runs (unless done), then score them
    python -m experiments.best --report       # only refresh docs/results.md from the result file

The configuration is ``experiment=multi30k_best`` trained twice with different seeds
(``python src/train.py experiment=multi30k_best``, logs/best/multi30k_best/, and the same with
``seed=2 precision=bf16-mixed``, logs/best/multi30k_best_seed2/; a run folder that already holds
metrics.json is not trained again). Each run's kept top-5 checkpoints are averaged
(src/average.py). Then val is decoded with beam 5 at GNMT length penalties 0.6, 1.0 to 1.5 in
steps of 0.1, and 2.0 (src/eval.py) for the first run's single best checkpoint, each run's
average, and the ensemble of the two averages; a call again decodes only what an earlier call
has not. The candidate with the highest val BLEU is the configuration; test_2016_flickr is
scored once for it, and once for each run's best candidate on val and for the first run's single
best checkpoint at the default 0.6 (to show what averaging and ensembling add). Everything goes
to docs/results/multi30k_best.json (scores, signatures, commands, wall times, commit), the table
of docs/results.md's ``best`` block is generated from it, and the attention maps of the first
three test sentences under the chosen model go to docs/figures/best_attention_<n>.png.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    REPO,
    commit,
    corpus,
    describe_machine,
    machine,
    relative,
    require,
    shown,
    table,
)
from experiments.scoring import LENGTH_PENALTIES, checkpoint_option, evaluate, run
from seq2attn.checkpoints.loading import resolve_checkpoint
from seq2attn.report import write_section

RUNS = REPO / "logs" / "best"
# run folder -> the overrides of experiment=multi30k_best it is trained with
MEMBERS = {
    "multi30k_best": (),
    "multi30k_best_seed2": ("seed=2", "precision=bf16-mixed"),
}
RESULT = REPO / "docs" / "results" / "multi30k_best.json"
PAGE = REPO / "docs" / "results.md"
FIGURES = REPO / "docs" / "figures"
AVERAGED = 5
# the runs' data config with the corpus folder of experiments.scoring.run's SEQ2ATTN_DATA
DATA = ("data=multi30k",)
HEATMAPS = 3


def train(run_dir: Path, overrides: tuple[str, ...]) -> dict[str, Any]:
    command = [
        "python",
        "src/train.py",
        "experiment=multi30k_best",
        *overrides,
        f"hydra.run.dir={shown(run_dir)}",
        "trainer.enable_progress_bar=false",
    ]
    if not (run_dir / "metrics.json").is_file():
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        run(command, run_dir.parent / f"{run_dir.name}.log")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "run": run_dir.name,
        "command": " ".join(command),
        "wall_s": metrics["time/wall_s"],
        "steps": metrics.get("trainer/global_step"),
        "params": metrics["params"],
        "val_bleu_greedy_best": metrics["val/bleu_best"],
        "commit": commit(run_dir),
    }


def average(run_dir: Path) -> dict[str, Any]:
    out = run_dir / "averaged.ckpt"
    command = ["python", "src/average.py", shown(run_dir), "--best", str(AVERAGED)]
    command += ["--out", shown(out)]
    if not out.is_file():
        run(command, run_dir / "average.log")
    return {"command": " ".join(command), "checkpoint": out}


def heatmaps(checkpoints: list[Path], length_penalty: float, work: Path) -> list[str]:
    """Attention maps of the first test sentences, copied to docs/figures/."""
    source = corpus() / "test_2016_flickr.de.gz"
    with gzip.open(source, "rt", encoding="utf-8") as text:
        lines = text.read().splitlines()[:HEATMAPS]
    work.mkdir(parents=True, exist_ok=True)
    (work / "input.de").write_text("".join(line + "\n" for line in lines))
    command = [
        "python",
        "src/translate.py",
        f"ckpt_path={checkpoint_option(checkpoints)}",
        f"input={shown(work / 'input.de')}",
        f"output={shown(work / 'output.en')}",
        f"attention_dir={shown(work)}",
        f"decoding.length_penalty={length_penalty}",
        f"hydra.run.dir={shown(work)}",
    ]
    run(command, work / "translate.log")
    figures = []
    for number in range(1, HEATMAPS + 1):
        target = FIGURES / f"best_attention_{number}.png"
        shutil.copyfile(work / f"sentence_{number:05d}.png", target)
        figures.append(shown(target))
    return figures


@dataclass(frozen=True)
class Candidate:
    """A model to score: its checkpoints (several: an ensemble), the folder that keeps its decodes
    (under eval/) and the prefix of their names there."""

    checkpoints: list[Path]
    folder: Path
    prefix: str = ""

    def evaluate(self, split: str, length_penalty: float) -> dict[str, Any]:
        """Beam-5 scores on ``split`` at ``length_penalty``."""
        out = self.folder / "eval" / f"{self.prefix}{split}-lp{length_penalty}"
        return evaluate(self.checkpoints, split, out, length_penalty, overrides=DATA)


def score(runs: Path) -> dict[str, Any]:
    """Train (unless done), average, choose on val, score test once; the result record."""
    trained: list[dict[str, Any]] = []
    averaged: list[dict[str, Any]] = []
    for name, overrides in MEMBERS.items():
        trained.append(train(runs / name, overrides))
        averaged.append(average(runs / name))
    first = runs / next(iter(MEMBERS))
    single = resolve_checkpoint(first)
    candidates = {"run 1, single best checkpoint": Candidate([single], first, f"{single.stem}-")}
    averages = [
        f"run {n}, average of the {AVERAGED} best checkpoints" for n in range(1, len(MEMBERS) + 1)
    ]
    for name, run_dir, member in zip(averages, MEMBERS, averaged, strict=True):
        candidates[name] = Candidate([member["checkpoint"]], runs / run_dir, "averaged-")
    candidates["ensemble of the runs' averages"] = Candidate(
        [member["checkpoint"] for member in averaged], runs / "ensemble"
    )
    val = [
        {"model": name, **candidate.evaluate("val", alpha)}
        for name, candidate in candidates.items()
        for alpha in LENGTH_PENALTIES
    ]
    best_of = {  # candidate -> its best val entry
        name: max((entry for entry in val if entry["model"] == name), key=lambda e: e["bleu"])
        for name in candidates
    }
    chosen = max(best_of.values(), key=lambda entry: entry["bleu"])
    looked_at = [(chosen["model"], chosen["length_penalty"])]
    looked_at += [(name, best_of[name]["length_penalty"]) for name in averages]
    looked_at.append((next(iter(candidates)), LENGTH_PENALTIES[0]))
    test = [
        {"model": name, **candidates[name].evaluate("test", alpha)}
        for name, alpha in dict.fromkeys(looked_at)
    ]
    figures = heatmaps(
        candidates[chosen["model"]].checkpoints, chosen["length_penalty"], runs / "heatmaps"
    )
    return {
        "experiment": "multi30k_best",
        "train": trained,
        "average": [
            {k: shown(v) if k == "checkpoint" else v for k, v in m.items()} for m in averaged
        ],
        "chosen": {"model": chosen["model"], "length_penalty": chosen["length_penalty"]},
        "val": val,
        "test": test,
        "figures": figures,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "hardware": f"{describe_machine(machine())}, no GPU",
    }


def markdown(result: dict[str, Any]) -> str:
    """The scores table of the result file, chosen row first, then how the runs were made."""
    chosen = result["chosen"]
    entries = sorted(result["test"], key=lambda e: e["model"] != chosen["model"])
    entries += sorted(result["val"], key=lambda e: -e["bleu"])
    rows = []
    for entry in entries:
        is_chosen = (entry["model"], entry["length_penalty"]) == (
            chosen["model"],
            chosen["length_penalty"],
        )
        rows.append(
            [
                f"{entry['model']}{' **(chosen on val)**' if is_chosen else ''}",
                entry["length_penalty"],
                "test_2016_flickr" if entry["split"] == "test" else "val",
                f"{entry['bleu']:.2f}",
                f"{entry['chrf']:.2f}",
                f"{entry['ter']:.2f}",
                f"`{entry['command']}`",
            ]
        )
    headers = ["model", "length penalty", "split", "BLEU", "chrF", "TER", "command"]
    lines = [table(headers, rows)]
    for number, (trained, averaged) in enumerate(
        zip(result["train"], result["average"], strict=True), 1
    ):
        lines.append(
            f"Run {number} trained by `{trained['command']}` in {trained['wall_s'] / 60:.0f} min "
            f"({trained['steps']:.0f} steps, {trained['params']:,.0f} parameters) on "
            f"{result['hardware']}, commit {_commit_text(trained)}; averaged by "
            f"`{averaged['command']}`.\n"
        )
    lines.append(f"Signature: `{result['test'][0]['signatures']['bleu']}`.\n")
    return "\n".join(lines)


def _commit_text(trained: dict[str, Any]) -> str:
    """``abc1234``, or ``abc1234 with uncommitted changes`` (``abc1234+`` in the record; older
    records hold the full hash and an ``uncommitted_changes`` flag)."""
    recorded = trained.get("commit") or "unknown"
    dirty = recorded.endswith("+") or trained.get("uncommitted_changes")
    return recorded.rstrip("+")[:7] + (" with uncommitted changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", type=Path, default=RUNS, help=f"the runs' parent folder (default {shown(RUNS)})"
    )
    parser.add_argument("--report", action="store_true", help="only refresh the page")
    args = parser.parse_args()
    if not args.report:
        require("python -m experiments.best", corpus() / "train.de.gz")
        result = score(args.runs.resolve())
        RESULT.write_text(json.dumps(relative(result), indent=2) + "\n")
        print(f"wrote {shown(RESULT)}")
    result = json.loads(RESULT.read_text())
    write_section(markdown(result), PAGE, "best")
    print(markdown(result), end="")


if __name__ == "__main__":
    main()
