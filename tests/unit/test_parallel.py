"""Batches searched side by side (seq2attn.inference.parallel): order, threads, torch's threads,
the caller's autocast, cancelling on an error."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import torch

from seq2attn.inference.parallel import in_parallel

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def two_torch_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_results_come_in_the_order_of_the_items_whatever_finishes_first(
    two_torch_threads: None,
) -> None:
    finished: list[int] = []

    def work(item: int) -> int:
        time.sleep(0.02 * (item % 3 == 0))  # every third item finishes last
        return item * item

    results = in_parallel(work, list(range(12)), 2, done=lambda: finished.append(1))
    assert results == [i * i for i in range(12)]
    assert len(finished) == 12


def test_items_run_side_by_side_each_on_its_share_of_torchs_threads(
    two_torch_threads: None,
) -> None:
    meeting = threading.Barrier(2)  # passes only with two items running at once
    seen: list[tuple[str, int]] = []

    def work(item: int) -> int:
        meeting.wait(timeout=20)
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return item

    assert in_parallel(work, [0, 1, 2, 3], 2) == [0, 1, 2, 3]
    assert len({name for name, _ in seen}) == 2
    assert all(name != threading.main_thread().name for name, _ in seen)
    assert {threads for _, threads in seen} == {1}
    assert torch.get_num_threads() == 2  # given back


def test_one_thread_works_in_the_calling_thread_with_all_of_torchs_threads(
    two_torch_threads: None,
) -> None:
    def work(item: int) -> tuple[str, int]:
        return threading.current_thread().name, torch.get_num_threads()

    caller = threading.current_thread().name
    assert in_parallel(work, [0, 1], 1) == [(caller, 2)] * 2
    assert in_parallel(work, [0], 4) == [(caller, 2)]  # one item: no pool
    torch.set_num_threads(1)  # no more threads than torch has (cpu.num_threads=1)
    assert in_parallel(work, [0, 1], 2) == [(caller, 1)] * 2


def test_workers_run_under_the_callers_autocast(two_torch_threads: None) -> None:
    def work(item: int) -> torch.dtype:
        return (torch.ones(2, 2) @ torch.ones(2, 2)).dtype

    assert in_parallel(work, [0, 1], 2) == [torch.float32] * 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert in_parallel(work, [0, 1], 2) == [torch.bfloat16] * 2


def test_an_error_cancels_the_items_not_started_and_gives_torchs_threads_back(
    two_torch_threads: None,
) -> None:
    started: list[int] = []

    def work(item: int) -> int:
        started.append(item)
        if item == 1:
            raise ValueError("item 1")
        time.sleep(0.05)
        return item

    with pytest.raises(ValueError, match="item 1"):
        in_parallel(work, list(range(40)), 2)
    assert len(started) < 10  # the other 30-odd were cancelled, not searched
    assert torch.get_num_threads() == 2
