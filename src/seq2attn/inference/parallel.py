"""Batches searched side by side: ``n`` threads, each searching its own batch on cores / n of
torch's threads (CTranslate2's ``inter_threads``).

A decoding step over at most 64 sentences is a chain of small products and many smaller kernels;
split over every core, each kernel pays a handoff between threads for little work. With one
batch per thread each kernel runs whole on its own core. torch releases the GIL inside its
kernels, so the threads overlap everywhere except in Python's own steps. Every batch is searched
exactly as it would be alone: the output does not depend on ``n``, except where a product's
rounding depends on how many threads share it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

Item = TypeVar("Item")
Result = TypeVar("Result")


def in_parallel(
    work: Callable[[Item], Result], items: Sequence[Item], threads: int
) -> Iterator[Result]:
    """``work(item)`` of each item in order, ``threads`` items at a time (1: one after the
    other in the calling thread, on all of torch's threads)."""
    threads = min(threads, len(items))
    if threads <= 1:
        yield from map(work, items)
        return
    intra = torch.get_num_threads()
    torch.set_num_threads(max(1, intra // threads))
    pool = ThreadPoolExecutor(threads, thread_name_prefix="search")
    try:
        yield from pool.map(work, items)
    finally:
        pool.shutdown(cancel_futures=True)
        torch.set_num_threads(intra)
