"""benchmarks.onednn_cache: the LRU hit rate, the product recorder, and a replay whose cache size
reaches oneDNN through the child process's environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import onednn_cache
from benchmarks.onednn_cache import (
    ProductRecorder,
    low_precision,
    lru_misses,
    main,
    markdown,
    replay_with_capacity,
    summary,
)


def test_lru_misses_equal_a_hand_count() -> None:
    # capacity 2: 1 miss, 2 miss, 1 hit, 3 miss (evicts 2), 1 hit, 2 miss -> 4 misses
    sequence = [1, 2, 1, 3, 1, 2]
    assert lru_misses(sequence, 2) == 4
    assert lru_misses(sequence, 3) == 3  # only the first sightings miss
    assert lru_misses(sequence, 0) == 6
    assert lru_misses([], 8) == 0


def test_the_recorder_numbers_each_distinct_product_of_a_step() -> None:
    layer = torch.nn.Linear(4, 3)
    recorder = ProductRecorder()
    for rows in (5, 5, 7):
        with recorder:
            layer(torch.randn(rows, 4, requires_grad=True)).sum().backward()
    first, again, other = recorder.steps
    # forward addmm, and the backward's two products (gradients of the input and the weight)
    assert len(first) == 3 and len(set(first)) == 3
    assert again == first  # the same shapes are the same products
    assert set(other).isdisjoint(first)  # every product's shape depends on the rows
    assert len(recorder.products) == 6
    names = sorted(name for name, _ in recorder.products)
    assert names.count("addmm") == 2 and names.count("mm") == 4


def test_under_autocast_the_recorder_counts_only_the_bf16_products() -> None:
    layer = torch.nn.Linear(4, 3)
    recorder = ProductRecorder(low_precision_only=True)
    with recorder, torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = layer(torch.randn(5, 4))  # bf16: oneDNN's
        with torch.autocast("cpu", enabled=False):
            hidden.float() @ torch.randn(3, 2)  # fp32: the BLAS's
    ((name, operands),) = recorder.products
    assert name == "addmm" and operands[1][0] == (5, 4)
    assert low_precision("bf16-mixed") and low_precision("16-true")
    assert not low_precision("32-true") and not low_precision("64-true")


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux's /proc")
def test_a_smaller_cache_given_to_the_replay_keeps_less_memory(tmp_path: Path) -> None:
    # 300 products of distinct shapes (rows 2..301 of a 256 x 256 product), one per step
    products = [["mm", [[[rows, 256], [256, 1]], [[256, 256], [1, 256]]]] for rows in range(2, 302)]
    recorded = tmp_path / "products.json"
    recorded.write_text(json.dumps({"products": products, "steps": [[i] for i in range(300)]}))
    small = replay_with_capacity(recorded, 16, bf16=False)
    default = replay_with_capacity(recorded, 1024, bf16=False)
    assert small["operands"] == "fp32 (oneDNN linear, a proxy)"
    # each kept primitive holds memory: 1,024 keep all 300, 16 keep 16
    assert default["rss_growth_mb"] - small["rss_growth_mb"] > 30, (small, default)
    assert small["rss_growth_mb"] < 0.75 * default["rss_growth_mb"], (small, default)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
def test_the_summary_and_its_page_count_misses_per_capacity(tmp_path: Path) -> None:
    # products a, b, a | c, a over two steps; capacity 1: a, b, a, c, a all miss (5);
    # capacity 3: only the 3 first sightings miss
    shapes = [[[[rows, 8], [8, 1]], [[8, 8], [1, 8]]] for rows in (2, 3, 4)]
    recorded = {
        "products": [["mm", shape] for shape in shapes],
        "steps": [[0, 1, 0], [2, 0]],
        "precision": "32-true",
    }
    result = summary(recorded, [1, 3], bf16=False)
    assert (result["steps"], result["products"], result["distinct_products"]) == (2, 5, 3)
    assert result["capacities"][1]["misses"] == 5 and result["capacities"][3]["misses"] == 3
    assert result["capacities"][3]["hit_rate"] == pytest.approx(0.4)
    page = markdown(
        {
            **result,
            "overrides": ["x=1"],
            "machine": {"cpu": "c", "flags": []},
            "precision": "32-true",
            "commit": "abc",
            "date": "d",
        }
    )
    assert "| 3 | 40.0% | 1.5 |" in page  # capacity, hit rate, misses per step
    assert "a proxy" in page


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--capacities", "256,lots"], "--capacities 256,lots: expected whole numbers"),
        (["--steps", "0"], "--steps 0: must be >= 1"),
        (["--capacities", "-1"], "--capacities -1: every capacity must be >= 0"),
        (["--replay", "x.json"], "--replay needs --out"),
    ],
)
def test_bad_options_end_with_exit_code_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # were the checks gone, the missing corpus would stop the benchmark before any work
    monkeypatch.setattr(onednn_cache, "corpus", lambda: Path("/nonexistent/multi30k"))
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_bad_override_is_named_on_one_line_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onednn_cache, "corpus", lambda: tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["model.no_such_size=3"])
    assert stopped.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "Could not override 'model.no_such_size'" in last
    assert "Traceback" not in last


def test_overrides_are_added_to_the_default_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onednn_cache, "corpus", lambda: tmp_path)
    composed: list[list[str]] = []

    def stop_after_seeing(overrides: list[str], steps: int, output_dir: Path) -> None:
        composed.append(list(overrides))
        raise SystemExit(0)

    monkeypatch.setattr(onednn_cache, "record", stop_after_seeing)
    for argv in (["trainer.max_steps=5"], ["experiment=budget_r1"]):
        with pytest.raises(SystemExit):
            main(argv)
    assert composed[0][:2] == ["experiment=budget_r2", "trainer.max_steps=5"]
    assert composed[1][0] == "experiment=budget_r1"
    assert "experiment=budget_r2" not in composed[1]
