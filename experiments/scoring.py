"""What experiments.best and experiments.budget share: scores of a checkpoint on val or test by
``src/eval.py``, kept in a folder so that a second call reads them instead of decoding again, and
the refusals that keep a result reportable (one line, exit code 2)."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import (
    REPO,
    CommandFailed,
    Measured,
    corpus,
    git_output,
    run_measured,
    shown,
)


class HarnessError(RuntimeError):
    """A refusal that ends the driver with one line and exit code 2."""


def check_clean_tree(current: str) -> None:
    """Refuse a working tree with uncommitted changes (``commit()`` ends with ``+``)."""
    if current.endswith("+"):
        raise HarnessError(
            f"the working tree has uncommitted changes (commit {current}): commit or stash them "
            "first, so that every result names the commit that made it"
        )


def changed_since(commit: str, *paths: str, repo: Path = REPO) -> list[str]:
    """The files under ``paths`` whose lines other than comments and blank lines differ between
    ``commit`` and the working tree (a reworded comment changes no recipe)."""
    pattern = "-G^[[:space:]]*[^#[:space:]]"  # a changed line that is not a comment
    return git_output("diff", "--name-only", pattern, commit, "--", *paths, repo=repo).split()


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
