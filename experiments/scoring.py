"""Scores of a checkpoint on val or test by ``src/eval.py``, kept in a folder so that a second
call reads them instead of decoding again; shared by experiments.best and experiments.budget."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import REPO, CommandFailed, Measured, corpus, run_measured, shown

# GNMT length penalties tried on val with beam 5; the best one decodes test
LENGTH_PENALTIES = (0.6, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 2.0)


def run(command: list[str], log: Path) -> Measured:
    """Run ``python <script> ...`` from the repository with this interpreter and the corpus of
    :func:`benchmarks.common.corpus`, output to ``log``; stop the driver, naming the log, if it
    fails."""
    print(f"$ {shlex.join(command)}", flush=True)
    env = {**os.environ, "SEQ2ATTN_DATA": shown(corpus())}
    try:
        return run_measured([sys.executable, *command[1:]], log, env=env, cwd=REPO)
    except CommandFailed as failure:
        sys.exit(f"{Path(sys.argv[0]).name}: {failure}")


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
    """Beam-5 scores of the checkpoint (an ensemble if several) on ``split`` at a GNMT length
    penalty, with the command; ``folder`` holds the decode and its scores.json."""
    scores = evaluate_with(
        checkpoints, split, folder, (*overrides, f"decoding.length_penalty={length_penalty}")
    )
    return {"length_penalty": length_penalty, **scores}


def evaluate_with(
    checkpoints: list[Path], split: str, folder: Path, decoding: tuple[str, ...]
) -> dict[str, Any]:
    """Beam-5 scores of the checkpoint (an ensemble if several) on ``split`` with the
    ``decoding`` overrides, and the command; ``folder`` holds the decode and its scores.json,
    read instead of decoding again when it exists."""
    command = [
        "python",
        "src/eval.py",
        f"ckpt_path={checkpoint_option(checkpoints)}",
        f"split={split}",
        "decoding=beam",
        "decoding.beam_size=5",
        *decoding,
        f"hydra.run.dir={shown(folder)}",
    ]
    if not (folder / "scores.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        run(command, folder.parent / f"{folder.name}.log")
    scores = json.loads((folder / "scores.json").read_text())
    return {
        "split": split,
        "bleu": scores["bleu"],
        "chrf": scores["chrf"],
        "ter": scores["ter"],
        "repetition_rate": scores.get("repetition_rate"),
        "length_ratio": scores.get("length_ratio"),
        "signatures": scores["signatures"],
        "command": f"SEQ2ATTN_DATA={shlex.quote(shown(corpus()))} {shlex.join(command)}",
        "decode_s": scores["decode_seconds"],
    }
