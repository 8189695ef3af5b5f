"""Batches searched side by side (seq2attn.inference.parallel): order, threads, torch's threads."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from seq2attn.inference.parallel import in_parallel

pytestmark = pytest.mark.timeout(60)


def test_results_come_in_the_order_of_the_items_whatever_finishes_first() -> None:
    def work(item: int) -> int:
        time.sleep(0.02 * (item % 3 == 0))  # every third item finishes last
        return item * item

    assert list(in_parallel(work, list(range(12)), 3)) == [i * i for i in range(12)]


def test_items_run_side_by_side_each_on_its_share_of_torchs_threads() -> None:
    meeting = threading.Barrier(2, timeout=20)  # passes only with two items running at once
    seen: list[tuple[str, int]] = []
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:

        def work(item: int) -> int:
            meeting.wait()
            seen.append((threading.current_thread().name, torch.get_num_threads()))
            return item

        assert list(in_parallel(work, [0, 1, 2, 3], 2)) == [0, 1, 2, 3]
        assert len({name for name, _ in seen}) == 2
        assert all(name != threading.main_thread().name for name, _ in seen)
        assert {threads for _, threads in seen} == {1}
        assert torch.get_num_threads() == 2  # given back
    finally:
        torch.set_num_threads(before)


def test_one_thread_works_in_the_calling_thread_with_all_of_torchs_threads() -> None:
    def work(item: int) -> tuple[str, int]:
        return threading.current_thread().name, torch.get_num_threads()

    threads = torch.get_num_threads()
    assert list(in_parallel(work, [0, 1], 1)) == [(threading.current_thread().name, threads)] * 2
    # more threads than items: one item, no pool
    assert list(in_parallel(work, [0], 4)) == [(threading.current_thread().name, threads)]


def test_a_failing_item_raises_in_the_caller_and_torchs_threads_are_given_back() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:

        def work(item: int) -> int:
            if item == 1:
                raise ValueError("item 1")
            return item

        with pytest.raises(ValueError, match="item 1"):
            list(in_parallel(work, [0, 1, 2, 3], 2))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
