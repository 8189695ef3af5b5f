"""Products whose shapes follow each batch's lengths run in fp32 on a CPU, even under autocast.

oneDNN, which runs a CPU's bf16 products, compiles a kernel for every distinct product shape
and caches the last 1,024 (``ONEDNN_PRIMITIVE_CACHE_CAPACITY``). Products whose shapes change
with a batch's source and target lengths (attention scores and contexts, the encoder RNN over
a packed batch of any number of tokens) compile new kernels nearly every step and keep that
cache full: on a Xeon with AMX, a ``budget_r2`` run in bf16-mixed grew to 4 GB of resident
memory in 6 minutes against 1 GB in fp32. fp32 products go to a BLAS that keeps nothing per
shape. The output layer, the largest product, keeps bf16 and pads its rows instead
(:mod:`seq2attn.loss`). Products whose shapes take one value per length (B·S or B·T rows with
a fixed number of sentences) stay in bf16: their kernels stop growing in number.

Autocast is off in the forward pass; the backward pass follows the forward's dtypes as long as
it runs outside autocast, as Lightning runs it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import Tensor


def under_cpu_autocast(tensor: Tensor) -> bool:
    """Whether ``tensor`` is on a CPU and autocast is on there."""
    return tensor.device.type == "cpu" and torch.is_autocast_enabled("cpu")


def fp32_on_cpu(tensor: Tensor) -> AbstractContextManager[object]:
    """Turns off autocast while active, if ``tensor`` is on a CPU where it is on."""
    if under_cpu_autocast(tensor):
        return torch.autocast("cpu", enabled=False)
    return nullcontext()


def batched_product(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` of (B, n, k) @ (B, k, m), in fp32 on a CPU under autocast (see the module)."""
    if not under_cpu_autocast(a):
        return a @ b
    with torch.autocast("cpu", enabled=False):
        return a.float() @ b.float()
