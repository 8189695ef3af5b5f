"""benchmarks.trained_decoding: which models it decodes, what it refuses, and its table."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks import trained_decoding
from benchmarks.speed import summary


def write_budget(path: Path, runs: dict) -> Path:
    path.write_text(json.dumps({"runs": runs}))
    return path


def test_budget_models_are_the_seed_run_folder_and_the_peer_checkpoint(tmp_path: Path) -> None:
    run_dir, checkpoint = tmp_path / "seq2attn_r1_seed2", tmp_path / "model_step_2500.pt"
    run_dir.mkdir()
    checkpoint.write_bytes(b"")
    runs = {
        "r1_seq2attn_seed1": {"run_dir": str(tmp_path / "elsewhere")},
        "r1_seq2attn_seed2": {"run_dir": str(run_dir)},
        "r1_opennmt": {"checkpoint": str(checkpoint)},
    }
    budget = write_budget(tmp_path / "budget.json", runs)
    models = trained_decoding.budget_models(2, budget)
    assert models == {"seq2attn": run_dir, "opennmt": checkpoint}


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        (None, r"no .*budget\.json: run python -m experiments\.budget --models r1 first"),
        ({"r1_opennmt": {"checkpoint": "x.pt"}}, r"has no run r1_seq2attn_seed1$"),
        (
            {"r1_seq2attn_seed1": {"run_dir": "missing/run"}, "r1_opennmt": {}},
            r"r1_seq2attn_seed1's model \(missing/run\) is not on this machine",
        ),
    ],
)
def test_a_missing_budget_run_or_model_is_refused_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], runs: dict | None, message: str
) -> None:
    budget = tmp_path / "budget.json"
    if runs is not None:
        write_budget(budget, runs)
    with pytest.raises(SystemExit) as stop:
        trained_decoding.budget_models(1, budget)
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("benchmarks.trained_decoding: ")
    assert re.search(message, error.strip())


def test_words_per_second_is_sentences_per_second_times_words_per_hypothesis() -> None:
    assert trained_decoding.words_per_second({"sent_s": 200.0, "words": 12.5}) == 2500.0


def test_table_gives_medians_ranges_ratios_and_both_models() -> None:
    fast, slow = summary([90.0, 100.0, 120.0]), summary([45.0, 50.0, 52.0])
    middle = summary([70.0, 80.0, 85.0])
    rates = {"seq2attn": fast, "opennmt": slow, "seq2attn_fp32": slow}
    times = {"seq2attn": slow, "opennmt": fast, "seq2attn_fp32": fast}
    spread = {
        key: {**(times if key.endswith("process_s") else rates), "seq2attn_one_batch": middle}
        for _, key, _, _ in trained_decoding.ROWS
    }
    machine = {"cpu": "Test CPU", "flags": ["avx2"], "cores": 2, "threads": 2, "torch": "2.13.0"}
    quality = {name: {"bleu": 38.0, "words": 12.0} for name in ("greedy", "beam5")}
    report = {
        "spread": spread,
        "repeats": 3,
        "machine": machine,
        "date": "today",
        "commit": "abc1234",
        "models": {"seq2attn": "runs/r1_seed1", "opennmt": "peers/model_step_2500.pt"},
        "max_output_pieces": 100,
        "quality": {"seq2attn": quality, "opennmt": quality},
        "output_precision": "bf16",
        "parallel_batches": 2,
    }
    text = trained_decoding.markdown(report)
    assert "| seq2attn, fp32 output layer | seq2attn, one batch at a time |" in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("|")}
    assert (
        rows["R1 beam-5 decoding, sentences/s"]
        .rstrip()
        .endswith("| 50.0 (45.0–52.0) | 2.00x | 50.0 (45.0–52.0) | 80.0 (70.0–85.0) |")
    )
    # 50 s against 100 s
    assert (
        rows["R1 greedy, whole process, s"]
        .rstrip()
        .endswith("| 2.00x | 100.00 (90.00–120.00) | 80.00 (70.00–85.00) |")
    )
    assert "output layer in bf16" in text and "`decoding.output_precision=fp32`" in text
    assert "seq2attn searched 2 batches at a time" in text and "`parallel_batches=1`" in text
    for key in spread:
        del spread[key]["seq2attn_fp32"], spread[key]["seq2attn_one_batch"]
    del report["output_precision"], report["parallel_batches"]  # a report before the variants
    text = trained_decoding.markdown(report)
    assert "| 2.00x | n/a | n/a |" in text and "output layer in" not in text
    assert "batches at a time" not in text
    assert "seq2attn `runs/r1_seed1`, opennmt `peers/model_step_2500.pt`" in text
    assert "seq2attn 38.00 / 38.00 BLEU, 12.0 / 12.0 words per hypothesis" in text
