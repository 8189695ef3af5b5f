"""benchmarks.onednn_cache: the LRU hit rate, the product recorder, and a replay whose cache size
reaches oneDNN through the child process's environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.onednn_cache import ProductRecorder, lru_hit_rate, main, replay_with_capacity


def test_lru_hit_rate_equals_a_hand_count() -> None:
    # capacity 2: 1 miss, 2 miss, 1 hit, 3 miss (evicts 2), 1 hit, 2 miss -> 2 hits of 6
    sequence = [1, 2, 1, 3, 1, 2]
    assert lru_hit_rate(sequence, 2) == pytest.approx(2 / 6)
    assert lru_hit_rate(sequence, 3) == pytest.approx(3 / 6)  # only the first sightings miss
    assert lru_hit_rate(sequence, 0) == 0.0
    assert lru_hit_rate([], 8) == 0.0


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


@pytest.mark.parametrize(
    "argv", [["--capacities", "256,lots"], ["--steps", "0"], ["--capacities", "-1"]]
)
def test_bad_options_end_with_exit_code_2(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert "error:" in capsys.readouterr().err
