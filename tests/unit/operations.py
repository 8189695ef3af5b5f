"""The aten operations a block of code runs, recorded through a TorchDispatchMode."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class Operation(NamedTuple):
    """An operation: its name (``addmm``, ``sigmoid_``), its first tensor argument's dtype and
    size, the width of the ``out=`` tensor it wrote into (None: no ``out=``) and the shape of
    its result (None: not a tensor)."""

    name: str
    dtype: torch.dtype
    size: int
    out_width: int | None
    shape: tuple[int, ...] | None


@contextmanager
def recorded() -> Iterator[list[Operation]]:
    """A list that fills with every operation (with a tensor argument) run inside the block,
    forward and backward."""
    seen: list[Operation] = []

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            result = func(*args, **kwargs)
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            if first is not None:
                out = kwargs.get("out")
                shape = tuple(result.shape) if isinstance(result, torch.Tensor) else None
                seen.append(
                    Operation(
                        func.overloadpacket.__name__,
                        first.dtype,
                        first.numel(),
                        None if out is None else out.size(1),
                        shape,
                    )
                )
            return result

    with Recorder():
        yield seen
