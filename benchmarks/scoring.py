"""Scores of a checkpoint on val or test by ``src/eval.py``, kept in a folder so that a second
call reads them instead of decoding again; shared by benchmarks/best.py and budget.py."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def corpus() -> Path:
    """Multi30k's folder: $SEQ2ATTN_DATA, else ../shared/data/multi30k beside the project."""
    return Path(os.environ.get("SEQ2ATTN_DATA", ROOT.parent / "shared" / "data" / "multi30k"))


def shown(path: Path) -> str:
    """A path as the commands show it: relative to the project folder where possible."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def run(command: list[str], log: Path) -> None:
    """Run ``python <script> ...`` from the project folder with this interpreter, output to
    ``log``; stop the benchmark, naming the log, if it fails."""
    print(f"$ {shlex.join(command)}", flush=True)
    env = {**os.environ, "SEQ2ATTN_DATA": str(corpus())}
    with log.open("w") as sink:
        done = subprocess.run(
            [sys.executable, *command[1:]], cwd=ROOT, stdout=sink, stderr=sink, env=env
        )
    if done.returncode != 0:
        sys.exit(f"{Path(sys.argv[0]).name}: '{shlex.join(command)}' failed; see {log}")


def checkpoint_option(checkpoints: list[Path]) -> str:
    """The ckpt_path value: one path, or a list of them for an ensemble."""
    paths = [shown(checkpoint) for checkpoint in checkpoints]
    return paths[0] if len(paths) == 1 else f"[{','.join(paths)}]"


def evaluate(
    checkpoints: list[Path],
    split: str,
    folder: Path,
    length_penalty: float,
    overrides: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Beam-5 scores of the checkpoint (an ensemble if several) on ``split``, with the command;
    ``folder`` holds the decode and its scores.json."""
    command = [
        "python",
        "src/eval.py",
        f"ckpt_path={checkpoint_option(checkpoints)}",
        *overrides,
        f"split={split}",
        "decoding=beam",
        "decoding.beam_size=5",
        f"decoding.length_penalty={length_penalty}",
        f"hydra.run.dir={shown(folder)}",
    ]
    if not (folder / "scores.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        run(command, folder.parent / f"{folder.name}.log")
    scores = json.loads((folder / "scores.json").read_text())
    return {
        "split": split,
        "length_penalty": length_penalty,
        "bleu": scores["bleu"],
        "chrf": scores["chrf"],
        "ter": scores["ter"],
        "signatures": scores["signatures"],
        "command": shlex.join(command),
        "decode_s": scores["decode_seconds"],
    }
