"""The output layer and its cross-entropy in one autograd function.

For rows x_i (features) with targets y_i, logits z_i = W x_i + b and p_i = softmax(z_i):

    loss = sum_i (1 - eps) (lse(z_i) - z_i[y_i]) + eps (lse(z_i) - mean_v z_i[v])
    dloss/dz_i = p_i - (1 - eps) onehot(y_i) - eps / V

which is F.cross_entropy(z, y, label_smoothing=eps, reduction="sum") over rows whose target is
not ``ignore_index``; the other rows are never multiplied out. Word-level knowledge
distillation (Kim and Rush, 2016) mixes a teacher's distribution q_i into the targets with
weight alpha:

    loss = sum_i (1 - alpha) smoothed_ce_i + alpha (lse(z_i) - q_i . z_i)
    dloss/dz_i = p_i - (1 - alpha) ((1 - eps) onehot(y_i) + eps / V) - alpha q_i

the cross-entropy against the mixed targets (the teacher's term is KL(q_i || p_i) plus q_i's
entropy, a constant). The forward pass multiplies the
kept rows in chunks of :data:`CHUNK_ROWS` and turns each chunk's logits into their gradient in
place, in one (rows x V) buffer in the product's dtype: the only one kept for the backward pass,
which multiplies it whole and applies the loss's gradient to the products' smaller operands and
results. In fp32 each chunk's product writes straight into a buffer whose width is padded to a
multiple of :data:`COLUMN_MULTIPLE` logits, and the (rows x V) view of it is kept (on a 2-core
AMD EPYC with AVX2 a 512-row product with the 8,001 x 512 weight ran at 102-112 GFLOP/s, with
8,016 rows at 145-156); under autocast the product runs in the autocast dtype and the softmax in
fp32, and each chunk is copied into the buffer. So the fp32 logits of all rows, their
log-probabilities and a scaled copy of the gradient never exist at once (a distillation
teacher's logits, one row per kept row, are the exception; their softmax is taken a chunk at a
time).

Where the products run in bf16 or fp16 on a CPU (oneDNN), the kept rows are padded with zero
rows to a multiple of :data:`ROW_MULTIPLE`. oneDNN compiles a kernel for each distinct product
shape and caches the last 1,024, and the row count follows each batch's number of target
tokens, so without the padding nearly every batch compiles three new kernels, the weight
gradient's holding about a copy of the weight: on a Xeon with AMX, 300 distinct counts for an
8,001 x 512 layer kept 2.4 GB (a microbenchmark made by hand). Zero rows add nothing to the
loss or to any gradient.

:func:`token_nll` and :func:`training_nll` are the summed token-level losses the training module
and the benchmarks use; :func:`rdrop_training_nll` is R-Drop's, over a batch run twice.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seq2attn.data.tokenizer import PAD_ID
from seq2attn.models.seq2seq import Seq2Seq, Seq2SeqOutput

ROW_MULTIPLE = 64
CHUNK_ROWS = 512  # a multiple of ROW_MULTIPLE
COLUMN_MULTIPLE = 16


class SoftTargets(NamedTuple):
    """A teacher's logits (..., V), whose softmax over the non-padding rows is its next-piece
    distributions, and the weight those get in the targets."""

    logits: Tensor
    weight: float


def _product_dtype(rows: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype ``F.linear(rows, weight)`` multiplies in: autocast's if it is on, else the
    weight's."""
    device = rows.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return weight.dtype


def _rows_padding(rows: Tensor, weight: Tensor) -> int:
    """Zero rows to add so that a CPU's low-precision products see few distinct shapes."""
    low_precision = _product_dtype(rows, weight) in (torch.bfloat16, torch.float16)
    if rows.device.type != "cpu" or not low_precision:
        return 0
    return -rows.size(0) % ROW_MULTIPLE


def padded_columns(weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """The layer with zero output rows appended, so that it has a multiple of
    :data:`COLUMN_MULTIPLE` outputs (the extra logits are zero and never read)."""
    padding = -weight.size(0) % COLUMN_MULTIPLE
    if not padding:
        return weight, bias
    return F.pad(weight, (0, 0, 0, padding)), None if bias is None else F.pad(bias, (0, padding))


def _linear_into(out: Tensor, rows: Tensor, weight: Tensor, bias: Tensor | None) -> None:
    """``out = rows @ weight.T + bias``, written into ``out``."""
    if bias is None:
        torch.mm(rows, weight.t(), out=out)
    else:
        torch.addmm(bias, rows, weight.t(), out=out)


def _target_logits(
    z: Tensor, gold: Tensor, label_smoothing: float, soft: Tensor | None, alpha: float
) -> Tensor:
    """t_i . z_i for fp32 logits ``z`` (N, V), t_i the mixed targets: the one-hot ``gold``
    smoothed by ``label_smoothing``, mixed with ``soft`` (rows' distributions) at weight
    ``alpha``. As t_i sums to one, row i's cross-entropy is lse(z_i) - t_i . z_i."""
    target = z.gather(1, gold.unsqueeze(1)).squeeze(1)
    if label_smoothing:
        target = (1 - label_smoothing) * target + label_smoothing * z.mean(dim=-1)
    if soft is None:
        return target
    return (1 - alpha) * target + alpha * (soft * z).sum(dim=-1)


def _softmax_(z: Tensor) -> Tensor:
    """Turn fp32 logits ``z`` (N, V) into their softmax in place, with one exp per logit:
    p = exp(z - m) / s, s = sum exp(z - m), m = max z; returns the log-sum-exps m + log s (N,)."""
    top = z.amax(dim=-1, keepdim=True)
    total = z.sub_(top).exp_().sum(dim=-1, keepdim=True)
    z.div_(total)
    return (top + total.log()).squeeze(1)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        features: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        targets: Tensor,
        label_smoothing: float,
        ignore_index: int,
        teacher_logits: Tensor | None,
        alpha: float,
    ) -> Tensor:
        keep = targets != ignore_index
        rows, gold = features[keep], targets[keep]
        soft = None if teacher_logits is None else teacher_logits[keep]
        hard = 1 - alpha if soft is not None else 1.0  # the one-hot targets' share
        kept = rows.size(0)
        padding = _rows_padding(rows, weight)
        if padding:
            rows = torch.cat([rows, rows.new_zeros(padding, rows.size(1))])
        product_dtype = _product_dtype(rows, weight)
        # in fp32 the product writes its logits straight into the gradient's buffer, whose width
        # is padded to a multiple of COLUMN_MULTIPLE; the other dtypes' softmax runs in fp32
        in_place = product_dtype == rows.dtype == torch.float32
        if in_place:
            padded_weight, padded_bias = padded_columns(weight, bias)
            buffer = rows.new_empty(rows.size(0), padded_weight.size(0))
            grad_logits = buffer[:, : weight.size(0)]
        else:
            grad_logits = rows.new_empty(rows.size(0), weight.size(0), dtype=product_dtype)
        loss = rows.new_zeros((), dtype=torch.float32)
        for start in range(0, rows.size(0), CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, rows.size(0))
            real = max(min(stop, kept) - start, 0)  # the chunk's rows that are not padding
            if in_place:
                _linear_into(buffer[start:stop], rows[start:stop], padded_weight, padded_bias)
                z = grad_logits[start:stop]
            else:
                z = F.linear(rows[start:stop], weight, bias).float()  # in autocast's dtype
            chunk_gold = gold[start : start + real]
            chunk_soft = None
            if soft is not None:  # the teacher's distributions, a chunk of rows at a time
                chunk_soft = soft[start : start + real].float().softmax(dim=-1)
            target = _target_logits(z[:real], chunk_gold, label_smoothing, chunk_soft, alpha)
            lse = _softmax_(z)  # the logits become their softmax, then their gradient
            loss += (lse[:real] - target).sum()
            grad = z
            grad[real:] = 0  # the padding rows
            grad[:real].scatter_add_(
                1, chunk_gold.unsqueeze(1), grad.new_full((real, 1), hard * (label_smoothing - 1))
            )
            if label_smoothing:
                grad[:real].sub_(hard * label_smoothing / z.size(1))
            if chunk_soft is not None:
                grad[:real].sub_(alpha * chunk_soft)
            if not in_place:
                grad_logits[start:stop] = grad
        ctx.save_for_backward(rows, weight, grad_logits, keep)
        ctx.has_bias = bias is not None
        ctx.kept = kept
        ctx.features_dtype = features.dtype
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        rows, weight, grad_logits, keep = ctx.saved_tensors
        # the loss's gradient scales the products' smaller operands and results, not the
        # (rows x V) buffer, which stays as the forward left it
        scale = grad_loss.to(grad_logits.dtype)
        grad_rows = (grad_logits @ weight.to(grad_logits.dtype)).mul_(scale)
        grad_features = grad_rows.new_zeros(keep.shape + grad_rows.shape[-1:])
        grad_features[keep] = grad_rows[: ctx.kept]
        grad_weight = (grad_logits.t() @ (rows.to(grad_logits.dtype) * scale)).to(weight.dtype)
        grad_bias = (grad_logits.sum(dim=0) * scale).to(weight.dtype) if ctx.has_bias else None
        return (
            grad_features.to(ctx.features_dtype),
            grad_weight,
            grad_bias,
            None,
            None,
            None,
            None,
            None,
        )


def linear_cross_entropy(
    features: Tensor,
    layer: nn.Linear,
    targets: Tensor,
    label_smoothing: float = 0.0,
    ignore_index: int = 0,
    soft: SoftTargets | None = None,
) -> Tensor:
    """Summed cross-entropy of ``layer(features)`` (..., H) against targets (...), mixed with
    ``soft`` targets when given."""
    return _LinearCrossEntropy.apply(
        features.reshape(-1, features.size(-1)),
        layer.weight,
        layer.bias,
        targets.reshape(-1),
        label_smoothing,
        ignore_index,
        None if soft is None else soft.logits.reshape(-1, soft.logits.size(-1)),
        0.0 if soft is None else soft.weight,
    )


def token_nll(
    logits: Tensor,
    targets: Tensor,
    label_smoothing: float = 0.0,
    soft: SoftTargets | None = None,
) -> Tensor:
    """Summed cross-entropy over non-padding target positions: logits (B, T, V), targets
    (B, T); mixed with ``soft`` targets (B, T, V) when given, as :func:`linear_cross_entropy`."""
    z, gold = logits.flatten(0, 1).float(), targets.flatten()
    loss = F.cross_entropy(
        z, gold, ignore_index=PAD_ID, label_smoothing=label_smoothing, reduction="sum"
    )
    if soft is None:
        return loss
    keep = gold != PAD_ID
    probs = soft.logits.flatten(0, 1)[keep].float().softmax(dim=-1)
    teacher_term = -(probs * z[keep].log_softmax(dim=-1)).sum()
    return (1 - soft.weight) * loss + soft.weight * teacher_term


class RDropLoss(NamedTuple):
    """R-Drop's loss summed over positions, and its consistency term's share before alpha."""

    total: Tensor
    symmetric_kl: Tensor


def rdrop_nll(
    logits: Tensor,
    targets: Tensor,
    alpha: float,
    label_smoothing: float = 0.0,
    soft: SoftTargets | None = None,
) -> RDropLoss:
    """R-Drop (Liang et al., 2021): N target positions run twice with independent dropout
    masks, logits (2N, V) whose rows i and N + i are position i's two passes, targets (2N,)
    (no padding). With p_i and q_i the two passes' distributions:

        total = sum_i ce_i(p) + ce_i(q) + alpha / 2 (KL(p_i || q_i) + KL(q_i || p_i))
        KL(p || q) + KL(q || p) = sum_v (p_v - q_v) (log p_v - log q_v)

    each ce as :func:`token_nll` (smoothed, mixed with ``soft`` targets (2N, V) when given).
    fairseq's ``label_smoothed_cross_entropy_with_rdrop`` divides this sum by N (its ``--rdrop-
    alpha`` is this alpha); the training module divides it by the 2N tokens of both passes, so
    that without dropout the loss is the single pass's cross-entropy. The KL term's gradient
    reaches both passes."""
    positions = logits.size(0) // 2
    if soft is not None:  # token_nll's (batch, length, V) shape
        soft = SoftTargets(soft.logits.unsqueeze(0), soft.weight)
    ce = token_nll(logits.unsqueeze(0), targets.unsqueeze(0), label_smoothing, soft)
    log_probs = logits.float().log_softmax(dim=-1)
    first, second = log_probs[:positions], log_probs[positions:]
    symmetric_kl = ((first.exp() - second.exp()) * (first - second)).sum()
    return RDropLoss(ce + alpha / 2 * symmetric_kl, symmetric_kl)


def rdrop_training_nll(
    model: Seq2Seq,
    output: Seq2SeqOutput,
    targets: Tensor,
    alpha: float,
    label_smoothing: float,
    soft: SoftTargets | None = None,
) -> RDropLoss:
    """:func:`rdrop_nll` of a training forward over a batch run twice (rows b and B + b of
    ``targets`` (2B, T) are the same sentence; ``compute_logits=False``): the output layer
    multiplies only the non-padding positions, padded with zero rows as the fused loss pads
    them under a CPU's low-precision products; ``soft`` holds the teacher's logits (2B, T, V)."""
    assert output.features is not None
    keep = targets != PAD_ID
    rows, gold = output.features[keep], targets[keep]
    layer = model.output_layer
    padding = _rows_padding(rows, layer.weight)
    if padding:
        rows = torch.cat([rows, rows.new_zeros(padding, rows.size(1))])
    logits = layer(rows)[: gold.size(0)]
    if soft is not None:
        soft = SoftTargets(soft.logits[keep], soft.weight)
    return rdrop_nll(logits, gold, alpha, label_smoothing, soft)


def training_nll(
    model: Seq2Seq,
    output: Seq2SeqOutput,
    targets: Tensor,
    label_smoothing: float,
    soft: SoftTargets | None = None,
) -> Tensor:
    """Summed cross-entropy of a training forward: fused with the output layer when the forward
    left the logits to the loss (``compute_logits=False``), else from the logits; mixed with a
    teacher's ``soft`` targets when given."""
    if output.logits is not None:
        return token_nll(output.logits, targets, label_smoothing, soft)
    assert output.features is not None
    return linear_cross_entropy(
        output.features, model.output_layer, targets, label_smoothing, PAD_ID, soft
    )
