"""A GRU whose training pass takes the recurrent weights' gradient in one product.

Per layer and direction, with the input gates a_t = W_i x_t + b_i of every position computed in one
product (as nn.GRU does on a CPU) and the recurrence

    g_t = W_h h_{t-1} + b_h
    r_t = sigmoid(a^r_t + g^r_t),   z_t = sigmoid(a^z_t + g^z_t)
    n_t = tanh(a^n_t + r_t * g^n_t)
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

the backward pass walks the positions in reverse, with one product per position for
dh_{t-1} = z_t * dh_t + dg_t W_h, and takes the weight gradient once at the end:
dW_h = sum_t dg_t^T h_{t-1} is one (3H x N) @ (N x H) product over all N rows of the batch.
Autograd through nn.GRU multiplies a (3H x H) gradient from each position's B rows and adds it to
the last. The math is nn.GRU's; only the order of the sums in the gradients differs. On a 2-core
CPU in fp32 this trained the benchmark's R2 1.06x as fast and R1 as fast (docs/performance.md).

:class:`GRU` is an ``nn.GRU`` (same parameters, same state dict) that runs this recurrence when it
needs gradients on a CPU in fp32 or fp64 outside autocast, and ``nn.GRU``'s own kernels otherwise
(inference, CUDA, bf16 or fp16 products, unbatched input). Its backward pass cannot itself be
differentiated (``create_graph=True``). Rows run in packed order: time-major, the rows of each
position sorted by decreasing length, so position t's rows are a prefix of position t - 1's.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence


def _offsets(batch_sizes: list[int]) -> list[int]:
    """The first packed row of each position."""
    return list(accumulate(batch_sizes[:-1], initial=0))


def reversal_index(batch_sizes: Tensor) -> Tensor:
    """The packed rows' permutation that reverses each sequence within its length: row i at
    position t swaps with row i at position L_i - 1 - t (its own inverse)."""
    sizes = batch_sizes.to(torch.long)
    offsets = torch.cumsum(sizes, 0) - sizes
    position = torch.repeat_interleave(torch.arange(sizes.numel()), sizes)
    rows = torch.arange(int(sizes.sum())) - offsets[position]
    lengths = (sizes.unsqueeze(0) > torch.arange(int(sizes[0])).unsqueeze(1)).sum(dim=1)
    return offsets[lengths[rows] - 1 - position] + rows


class _Recurrence(torch.autograd.Function):
    """h_t of every packed row, and each sequence's last h, from the input gates (N, 3H)."""

    @staticmethod
    def forward(
        ctx: Any,
        gates_in: Tensor,
        h0: Tensor,
        weight_hh: Tensor,
        bias_hh: Tensor,
        batch_sizes: list[int],
    ) -> tuple[Tensor, Tensor]:
        hidden = h0.size(1)
        rows_total = gates_in.size(0)
        outputs = gates_in.new_empty(rows_total, hidden)
        reset_update = gates_in.new_empty(rows_total, 2 * hidden)  # r_t, z_t
        candidate = gates_in.new_empty(rows_total, hidden)  # n_t
        hidden_candidate = gates_in.new_empty(rows_total, hidden)  # g^n_t
        weight_t = weight_hh.t()
        offsets = _offsets(batch_sizes)
        h_prev, steps = h0, []
        for start, size in zip(offsets, batch_sizes, strict=True):
            rows = slice(start, start + size)
            h_prev = h_prev[:size]
            gates_h = torch.addmm(bias_hh, h_prev, weight_t)
            gates = gates_in[rows]
            rz = torch.sigmoid(
                gates[:, : 2 * hidden] + gates_h[:, : 2 * hidden], out=reset_update[rows]
            )
            g_n = gates_h[:, 2 * hidden :]
            hidden_candidate[rows] = g_n
            n = torch.addcmul(gates[:, 2 * hidden :], rz[:, :hidden], g_n, out=candidate[rows])
            n.tanh_()
            h_prev = torch.lerp(n, h_prev, rz[:, hidden:], out=outputs[rows])
            steps.append(h_prev)
        # h_{t-1} of every packed row: h_0, then each position's outputs cut to the next's rows
        previous = torch.cat(
            [h0[: batch_sizes[0]]]
            + [step[:size] for step, size in zip(steps, batch_sizes[1:], strict=False)]
        )
        ctx.save_for_backward(weight_hh, previous, reset_update, candidate, hidden_candidate)
        ctx.batch_sizes, ctx.offsets = batch_sizes, offsets
        return outputs, _last_states(outputs, batch_sizes, offsets)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_outputs: Tensor, grad_last: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, None]:
        weight_hh, previous, reset_update, candidate, hidden_candidate = ctx.saved_tensors
        batch_sizes: list[int] = ctx.batch_sizes
        offsets: list[int] = ctx.offsets
        hidden = weight_hh.size(1)
        grad_gates_in = previous.new_empty(previous.size(0), 3 * hidden)
        grad_gates_h = torch.empty_like(grad_gates_in)
        grad_h = grad_last.clone()
        for start, size in reversed(list(zip(offsets, batch_sizes, strict=True))):
            rows = slice(start, start + size)
            dh = grad_h[:size] + grad_outputs[rows]
            rz, n = reset_update[rows], candidate[rows]
            r, z = rz[:, :hidden], rz[:, hidden:]
            dh_through_z = dh * z
            d_gates_in = grad_gates_in[rows]
            # the pre-tanh gradient dh (1 - z) (1 - n^2), which is also a^n's
            dn = dh - dh_through_z
            dn = torch.addcmul(dn, dn, n * n, value=-1)
            d_gates_in[:, 2 * hidden :] = dn
            torch.mul(dn, hidden_candidate[rows], out=d_gates_in[:, :hidden])  # dr
            torch.mul(dh, previous[rows] - n, out=d_gates_in[:, hidden : 2 * hidden])  # dz
            d_gates_in[:, : 2 * hidden].mul_(torch.addcmul(rz, rz, rz, value=-1))  # sigmoid'
            d_gates_h = grad_gates_h[rows]
            d_gates_h[:, : 2 * hidden] = d_gates_in[:, : 2 * hidden]
            torch.mul(dn, r, out=d_gates_h[:, 2 * hidden :])
            grad_h[:size] = torch.addmm(dh_through_z, d_gates_h, weight_hh)
        grad_weight = grad_gates_h.t().mm(previous)
        grad_bias = grad_gates_h.sum(dim=0)
        return grad_gates_in, grad_h, grad_weight, grad_bias, None


def _last_states(outputs: Tensor, batch_sizes: list[int], offsets: list[int]) -> Tensor:
    """Each row's h at its last position (rows sorted by decreasing length, packed outputs)."""
    pieces = []
    ends = [*batch_sizes[1:], 0]
    for start, size, next_size in zip(offsets, batch_sizes, ends, strict=True):
        if next_size < size:  # rows next_size .. size - 1 end at this position
            pieces.append(outputs[start + next_size : start + size])
    return torch.cat(pieces[::-1])


class GRU(nn.GRU):
    """``nn.GRU`` whose training pass on a CPU outside autocast runs :class:`_Recurrence`."""

    def forward(  # type: ignore[override]
        self, input: Tensor | PackedSequence, hx: Tensor | None = None
    ) -> tuple[Tensor | PackedSequence, Tensor]:
        if not self._takes_recurrence(input):
            return super().forward(input, hx)
        if isinstance(input, PackedSequence):
            data, batch_sizes = input.data, input.batch_sizes
            sorted_indices, unsorted_indices = input.sorted_indices, input.unsorted_indices
        else:
            time_major = input.transpose(0, 1) if self.batch_first else input
            steps, batch = time_major.shape[:2]
            data = time_major.reshape(steps * batch, -1)
            batch_sizes = torch.full((steps,), batch, dtype=torch.long)
            sorted_indices = unsorted_indices = None
        directions = 2 if self.bidirectional else 1
        batch = int(batch_sizes[0])
        if hx is None:
            hx = data.new_zeros(self.num_layers * directions, batch, self.hidden_size)
        elif sorted_indices is not None:
            hx = hx.index_select(1, sorted_indices)
        if isinstance(input, PackedSequence):
            self.check_forward_args(data, hx, batch_sizes)
        else:
            self.check_forward_args(input, hx, None)
        sizes = batch_sizes.tolist()
        # each direction's permutation of the packed rows: none, or each sequence reversed
        permutations: list[Tensor | None] = [None]
        if self.bidirectional:
            permutations.append(reversal_index(batch_sizes).to(data.device))
        last_states = []
        for layer in range(self.num_layers):
            outputs = []
            for direction, permutation in enumerate(permutations):
                suffix = f"l{layer}" + ("_reverse" if direction else "")
                gates_in = F.linear(
                    data, getattr(self, f"weight_ih_{suffix}"), getattr(self, f"bias_ih_{suffix}")
                )
                if permutation is not None:
                    gates_in = gates_in.index_select(0, permutation)
                output, last = _Recurrence.apply(
                    gates_in,
                    hx[layer * directions + direction],
                    getattr(self, f"weight_hh_{suffix}"),
                    getattr(self, f"bias_hh_{suffix}"),
                    sizes,
                )
                if permutation is not None:
                    output = output.index_select(0, permutation)
                outputs.append(output)
                last_states.append(last)
            data = torch.cat(outputs, dim=1) if directions > 1 else outputs[0]
            if layer < self.num_layers - 1 and self.dropout and self.training:
                data = F.dropout(data, self.dropout, training=True)
        hidden = torch.stack(last_states)
        if isinstance(input, PackedSequence):
            if unsorted_indices is not None:
                hidden = hidden.index_select(1, unsorted_indices)
            return PackedSequence(data, batch_sizes, sorted_indices, unsorted_indices), hidden
        output = data.view(len(sizes), batch, -1)
        return (output.transpose(0, 1) if self.batch_first else output), hidden

    def _takes_recurrence(self, input: Tensor | PackedSequence) -> bool:
        """Gradients needed, on a CPU, products in fp32 or fp64 (no autocast), a batch (unbatched
        2-D input goes to nn.GRU), biases present."""
        data = input.data if isinstance(input, PackedSequence) else input
        return (
            torch.is_grad_enabled()
            and (isinstance(input, PackedSequence) or input.dim() == 3)
            and data.dtype in (torch.float32, torch.float64)
            and any(weight.requires_grad for weight in self.parameters())
            and data.device.type == "cpu"
            and not torch.is_autocast_enabled("cpu")
            and self.bias
            and self.proj_size == 0
        )
