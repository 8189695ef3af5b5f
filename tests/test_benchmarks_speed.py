"""benchmarks.speed's summary of repeated measurements: medians, spreads, ratios and the table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from benchmarks import speed
from benchmarks.common import REPO


def test_summary_is_the_median_with_min_and_max() -> None:
    assert speed.summary([3.0, 1.0, 10.0]) == {
        "median": 3.0,
        "min": 1.0,
        "max": 10.0,
        "values": [3.0, 1.0, 10.0],
    }


def test_ratio_is_against_the_best_peer_and_inverted_for_times() -> None:
    rates = {"seq2attn": 300.0, "opennmt": 150.0, "joeynmt": 50.0}
    assert speed.ratio(rates) == "2.00x"
    seconds = {"seq2attn": 4.0, "opennmt": 6.0, "joeynmt": 20.0}
    assert speed.ratio(seconds, lower_is_better=True) == "1.50x"
    assert speed.ratio({"seq2attn": 1.0, "opennmt": None, "joeynmt": None}) == "n/a"


def report(repeats: int) -> dict:
    """A report as main() assembles it, every figure 100 for the peers and 200 for seq2attn."""
    values = {"seq2attn": 200.0, "opennmt": 100.0, "joeynmt": 100.0}
    spread = {"seq2attn": speed.summary([180.0, 200.0, 230.0][:repeats] or [200.0])}
    machine = {"cpu": "Test CPU", "flags": ["avx2", "amx_bf16"], "cores": 2}
    return {
        **{key: dict(values) for _, key, _, _ in speed.ROWS},
        "spread": {key: spread for _, key, _, _ in speed.ROWS},
        "gemm_peak_gflops": {"fp32": 100.0, "bf16": 1.0},
        "machine": {**machine, "threads": 2, "torch": "2.13.0"},
        "bleu": {"seq2attn": {"greedy": 14.0, "beam5": 15.5}},
        "bleu_exact_stop": 15.9,
        "words": {
            "seq2attn": {"greedy": 7.6, "beam5": 6.8},
            "opennmt": {"greedy": 5.0, "beam5": 4.9},
        },
        "repeats": repeats,
        "date": "today",
        "commit": "abc1234",
        "timed_steps": 120,
        "warmup_steps": 30,
        "precision_auto": {"chosen": "32-true", "reason": "no bf16 instructions"},
        "max_output_pieces": 100,
        "bf16_skipped": "bf16 products ran at 1.0% of fp32's speed",
        "budget_peak_rss_mb": {"runs": {"r2": {"seq2attn": 3000.0}}, "machine": machine},
    }


@pytest.mark.parametrize("repeats", [1, 3])
def test_table_gives_medians_with_their_range_and_the_machine(repeats: int) -> None:
    text = speed.markdown(report(repeats))
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("|")}
    training = rows["R1 training, target tokens/s, fp32"]
    assert ("200 (180–230)" in training) == (repeats == 3)
    assert "| 100 |" in training and training.rstrip().endswith("| 2.00x |")
    assert rows["R1 greedy, whole process, s"].rstrip().endswith("| 0.50x |")  # 200 s vs 100 s
    assert "Test CPU (avx2, amx_bf16), 2 cores" in text
    assert "precision=auto chose 32-true: no bf16 instructions" in text
    assert "bf16-mixed training not timed" in text
    assert "R2 seq2attn 3,000 MB" in text
    assert f"Median of {repeats} runs per tool" in text
    assert "seq2attn 14.00 / 15.50 (seq2attn's exact stop: 15.90)" in text
    assert "words per hypothesis greedy / beam 5: seq2attn 7.6 / 6.8, opennmt 5.0 / 4.9" in text
    assert "output layer in" not in text  # a report written before the option
    assert "batches at a time" not in text
    with_choice = speed.markdown(
        {**report(repeats), "output_precision": "bf16", "parallel_batches": 2}
    )
    assert "seq2attn decoded with its output layer in bf16" in with_choice
    assert "seq2attn searched 2 batches at a time" in with_choice
    kept = {**report(repeats), "words": {"seq2attn": {"greedy": 7.6, "beam5": None}}}
    assert "words per hypothesis greedy / beam 5: seq2attn 7.6 / n/a" in speed.markdown(kept)
    assert "R1 beam-5, seq2attn's exact stop, sentences/s" in rows


def test_steadiness_warns_when_the_probed_rate_moved_by_more_than_a_sixth() -> None:
    steady = speed.steadiness([150.0, 160.0, 175.0])  # 175 / 150 = 7 / 6 exactly
    assert steady == (
        "fp32 products probed 3 times during the measurements ran at 150–175 GFLOP/s: the "
        "probes agreed within a sixth."
    )
    assert speed.steadiness([150.0, 176.0]).startswith("**")  # 1.173x
    moved = speed.steadiness([165.0, 60.0, 120.0, 90.0])
    assert moved.startswith("**fp32 products probed 4 times during the measurements ran at 60–165")
    assert "the fastest probe ran 2.75x the slowest**" in moved
    lines = speed.markdown({**report(3), "gemm_fp32_probes": [165.0, 60.0, 120.0, 90.0]})
    assert lines.splitlines()[lines.splitlines().index(moved) - 1].startswith("Median of 3 runs")
    assert "probed" not in speed.markdown(report(3))  # a report written before the probes
    # one probe (a resumed call that measured nothing) says nothing about steadiness
    assert "probed" not in speed.markdown({**report(3), "gemm_fp32_probes": [165.0]})


def test_gemm_peak_is_a_rate_of_square_products() -> None:
    rate = speed.gemm_peak_gflops(torch.float32, sizes=(64,), seconds=0.05)
    assert 0.01 < rate < 1e5  # GFLOP/s: 2 n^3 per product


def test_gemm_peak_of_one_slow_product_is_its_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    """A product slower than the time allowed is timed once, and larger sizes are skipped."""
    clock = iter([0.0, 10.0])
    monkeypatch.setattr(speed.time, "perf_counter", lambda: next(clock))
    assert speed.gemm_peak_gflops(torch.float32, sizes=(100, 4000), seconds=2.0) == (
        pytest.approx(2 * 100**3 / 10.0 / 1e9)
    )


def test_budget_memory_is_the_largest_peak_of_each_tool_on_the_newest_machine(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(model: str, tool: str, rss: float, machine: str, date: str) -> dict:
        return {
            "model": model,
            "tool": tool,
            "peak_rss_mb": rss,
            "fingerprint": machine,
            "date": date,
        }

    runs = {
        "r2_seq2attn_seed1": run("r2", "seq2attn", 2900.0, "EPYC", "2026-12-04"),
        "r2_seq2attn_seed2": run("r2", "seq2attn", 3100.0, "EPYC", "2026-12-04"),
        "r2_opennmt": run("r2", "opennmt", 1300.0, "EPYC", "2026-12-04"),
        "r1_seq2attn_seed1": run("r1", "seq2attn", 5000.0, "Xeon", "2026-12-01"),
    }
    (tmp_path / "budget.json").write_text(json.dumps({"runs": runs}))
    monkeypatch.setattr(speed, "RESULTS", tmp_path)
    assert speed.budget_memory() == {
        "runs": {"r2": {"seq2attn": 3100.0, "opennmt": 1300.0}},
        "machine": "EPYC",
    }
    # a file of the harness before fingerprints: keys <model>_<tool>, one machine
    old = {"r1_joeynmt": {"peak_rss_mb": 1800.0}, "r2_seq2attn": {"peak_rss_mb": 4400.0}}
    (tmp_path / "budget.json").write_text(json.dumps({"runs": old, "machine": "a CPU"}))
    assert speed.budget_memory() == {
        "runs": {"r1": {"joeynmt": 1800.0}, "r2": {"seq2attn": 4400.0}},
        "machine": "a CPU",
    }


def test_mean_words_counts_whitespace_words_per_line(tmp_path: Path) -> None:
    hypotheses = tmp_path / "hypotheses.en"
    hypotheses.write_text("a dog runs .\n\ntwo  men\n", encoding="utf-8")
    assert speed.mean_words(hypotheses) == pytest.approx(6 / 3)


def test_parallel_batches_is_the_override_else_translates_default() -> None:
    default = OmegaConf.load(REPO / "conf" / "translate.yaml").parallel_batches
    assert speed.parallel_batches(("decoding.early_stop=true",)) == default == 2
    assert speed.parallel_batches(("parallel_batches=1", "decoding.early_stop=true")) == 1


def test_the_output_precision_is_what_auto_chose_else_what_was_given() -> None:
    log = "decoding.output_precision=auto: chose bf16 (bf16 products 5.50x ...)"
    assert speed.output_precision(log, ()) == "bf16"
    assert speed.output_precision("", ("decoding.output_precision=fp32",)) == "fp32"
    assert speed.output_precision("", ("decoding.early_stop=true",)) == "auto"
