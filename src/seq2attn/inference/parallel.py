"""Batches searched side by side: ``n`` threads, each searching its own batch on cores / n of
torch's threads (CTranslate2's ``inter_threads``).

A decoding step over at most 64 sentences is a chain of small products and many smaller kernels;
split over every core, each kernel pays a handoff between threads for little work. With one
batch per thread each kernel runs whole on its own core. torch releases the GIL inside its
kernels, so the threads overlap everywhere except in Python's own steps. Each batch is searched
as it would be alone; only a product whose rounding depends on how many threads share it could
differ in its last bits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from typing import TypeVar

import torch

Item = TypeVar("Item")
Result = TypeVar("Result")

# torch's thread count is the process's: one parallel section at a time sets and restores it
_SECTION = threading.Lock()


def in_parallel(
    work: Callable[[Item], Result],
    items: Sequence[Item],
    threads: int,
    done: Callable[[], object] = lambda: None,
) -> list[Result]:
    """``work(item)`` of each item, in the items' order, ``threads`` items at a time; ``done()``
    is called in the calling thread as each item finishes.

    With fewer items or torch threads than ``threads``, fewer threads run; with one, the items
    run one after the other in the calling thread, on all of torch's threads. Each worker thread
    runs under the caller's CPU autocast state (thread-local in torch). When an item raises, or
    the caller is interrupted, the items not started are cancelled and the error is raised once
    the running ones end.
    """
    cores = torch.get_num_threads()
    threads = min(threads, len(items), cores)
    if threads <= 1:
        results = []
        for item in items:
            results.append(work(item))
            done()
        return results
    autocast = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")

    def under_callers_autocast(item: Item) -> Result:
        with torch.autocast("cpu", dtype=autocast[1], enabled=autocast[0]):
            return work(item)

    with _SECTION:
        cores = torch.get_num_threads()
        try:
            torch.set_num_threads(max(1, cores // threads))
            with ThreadPoolExecutor(threads, thread_name_prefix="search") as pool:
                futures = [pool.submit(under_callers_autocast, item) for item in items]
                _wait(futures, done)
            return [future.result() for future in futures]
        finally:
            torch.set_num_threads(cores)


def _wait(futures: list[Future[Result]], done: Callable[[], object]) -> None:
    """Wait for every future, calling ``done()`` as each ends; on an error (or an interrupt)
    cancel those not started and raise it."""
    try:
        for future in as_completed(futures):
            future.result()
            done()
    except BaseException:
        for future in futures:
            future.cancel()
        raise
