"""A checkpoint is data: what its stored config names is checked before anything is built, and
only the model node (and, for eval, the corpus node) is ever built."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seq2attn.checkpoints import CheckpointError
from seq2attn.checkpoints.loading import check_resumable, resolve_checkpoint
from seq2attn.data.tokenizer import Tokenizer, train_sentencepiece
from seq2attn.inference import load
from seq2attn.inference.commands import evaluate
from tests.conftest import compose_config

CALLS: list[Any] = []


def record_call(*args: Any, **kwargs: Any) -> None:
    """A foreign target: loading a checkpoint that names it must never reach it."""
    CALLS.append((args, kwargs))


FOREIGN = f"{__name__}.record_call"


@pytest.fixture(scope="module")
def stored(trained_run: Path) -> dict[str, Any]:
    return torch.load(resolve_checkpoint(trained_run), weights_only=True)


def _write(contents: dict[str, Any], path: Path) -> Path:
    torch.save(contents, path)
    return path


def test_a_nested_open_in_the_model_config_is_refused_and_the_victim_kept(
    stored: dict[str, Any], tmp_path: Path
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    crafted = copy.deepcopy(stored)
    opener = {"_target_": "builtins.open", "file": str(victim), "mode": "w"}
    crafted["seq2attn"]["config"]["model"]["scorer"]["hidden_size"] = opener
    path = _write(crafted, tmp_path / "crafted.ckpt")
    with pytest.raises(CheckpointError) as refused:
        load(path)
    assert str(refused.value).startswith(
        f"{path}: refused; model.scorer.hidden_size._target_='builtins.open' is not one of "
        "seq2attn's own classes"
    )
    assert victim.read_text() == "precious"


def test_os_system_as_the_model_target_is_refused(stored: dict[str, Any], tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    crafted = copy.deepcopy(stored)
    model = crafted["seq2attn"]["config"]["model"]
    model["_target_"], model["_args_"] = "os.system", [f"touch {marker}"]
    with pytest.raises(CheckpointError, match=r"refused; model\._target_='os\.system'"):
        load(_write(crafted, tmp_path / "crafted.ckpt"))
    assert not marker.exists()


def test_foreign_targets_outside_the_model_node_are_never_built(
    stored: dict[str, Any], tmp_path: Path
) -> None:
    crafted = copy.deepcopy(stored)
    config = crafted["seq2attn"]["config"]
    for key in ("trainer", "optimizer", "callbacks", "logger", "teacher_forcing", "scheduler"):
        config[key] = {"_target_": FOREIGN, "nested": {"_target_": FOREIGN}}
    path = _write(crafted, tmp_path / "crafted.ckpt")
    CALLS.clear()
    cfg = compose_config(
        "eval", [f"ckpt_path={path}", f"paths.output_dir={tmp_path / 'eval'}", "decoding=greedy"]
    )
    assert evaluate(cfg)["bleu"] > 0
    assert CALLS == []


def test_a_foreign_corpus_target_is_refused_by_eval(stored: dict[str, Any], tmp_path: Path) -> None:
    crafted = copy.deepcopy(stored)
    crafted["seq2attn"]["config"]["data"]["corpus"]["_target_"] = FOREIGN
    path = _write(crafted, tmp_path / "crafted.ckpt")
    CALLS.clear()
    cfg = compose_config("eval", [f"ckpt_path={path}", f"paths.output_dir={tmp_path / 'eval'}"])
    with pytest.raises(CheckpointError, match=r"refused; data\.corpus\._target_="):
        evaluate(cfg)
    assert CALLS == []


_leaves = st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.none())
_trees = st.recursive(
    _leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.sampled_from(["a", "b", "_args_", "file"]), children, max_size=3),
    ),
    max_leaves=8,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tree=_trees,
    where=st.sampled_from(["model", "scorer", "new_key", "list"]),
)
def test_a_foreign_target_anywhere_in_the_model_node_is_refused(
    stored: dict[str, Any], tmp_path: Path, tree: Any, where: str
) -> None:
    crafted = copy.deepcopy(stored)
    model = crafted["seq2attn"]["config"]["model"]
    foreign = {"_target_": FOREIGN, "payload": tree}
    if where == "model":
        model["_target_"] = FOREIGN
    elif where == "scorer":
        model["scorer"]["extra"] = foreign
    elif where == "new_key":
        model["added"] = {"inner": foreign}
    else:
        model["added"] = [tree, [foreign]]
    CALLS.clear()
    with pytest.raises(CheckpointError, match="refused"):
        load(_write(crafted, tmp_path / "crafted.ckpt"))
    assert CALLS == []


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=2000))
def test_random_bytes_are_refused_with_a_checkpoint_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "random.ckpt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError) as refused:
        load(path)
    assert "weights_only=False" not in str(refused.value)


def test_resuming_with_other_tokenizers_is_refused(trained_run: Path) -> None:
    path = resolve_checkpoint(trained_run)
    stored = torch.load(path, weights_only=True)["seq2attn"]
    src, tgt = Tokenizer.from_proto(stored["src_spm"]), Tokenizer.from_proto(stored["tgt_spm"])
    check_resumable(path, src, tgt)  # the run's own tokenizers: resumable
    other = Tokenizer.from_proto(
        train_sentencepiece(["ein anderer satz", "noch ein satz"] * 50, 30, "unigram", 1.0)
    )
    with pytest.raises(CheckpointError, match=r"its target tokenizer \(\d+ pieces\) differs"):
        check_resumable(path, src, other)


def test_eval_of_random_bytes_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "random.ckpt"
    path.write_bytes(bytes(range(256)) * 4)
    result = subprocess.run(
        [sys.executable, "src/eval.py", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'eval'}"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {path}: refused to load; it is not a file of tensors")
    assert (result.stdout + result.stderr).count("refused to load") == 1  # printed once
    assert "Traceback" not in result.stderr and "weights_only=False" not in result.stderr
    assert not (tmp_path / "eval").exists()  # refused before any work: no run folder left
