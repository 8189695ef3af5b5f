"""The k best next tokens of a decoding step's output layer: through a copy of the layer padded
to a multiple of 16 outputs (:class:`PaddedOutput`), or through a bf16 shortlist of the layer
certified against fp32 (:class:`Bf16Shortlist`).

For decoder features h (N, D) the output layer gives z = W h + b (W: V x D). Its product is the
largest of a decoding step, and CPUs with AMX multiply bf16 several times faster than fp32. So the
product runs in bf16 first, giving z~ with, for every token j,

    |z~_j - z_j| <= delta = 4 u ||h|| max_j ||W_j|| + 2^-22 |z_j|,    u = 2^-8

(u is bf16's unit roundoff. Rounding h and W to bf16 costs at most (2u + u^2) sum_i |h_i W_ji|
<= (2u + u^2) ||h|| ||W_j||, rounding the fp32-accumulated product back to bf16 u (1 + u)^2
||h|| ||W_j|| more, and fp32's own rounding of a 512-term sum, in this path and in the fp32 one,
under 0.01 u each: under 3.1 u in all. Adding the bias in fp32 rounds by 2^-24 |z_j| in each of
the three sums.) Each row's k + SPARE best tokens under z~ are then scored in fp32, and their
exact k best are the vocabulary's k best whenever the k-th of them exceeds delta plus the best z~
outside the shortlist: no token outside can then reach it. Rows that this bound cannot certify are
scored in fp32 over the whole vocabulary. So the tokens are those of the fp32 path, except where
two logits tie within fp32's rounding: the shortlist's fp32 scores come from another kernel than
the full product, which rounds in another order.

The log-probabilities use one logsumexp per row over the exact scores of the shortlist and z~
elsewhere: with P the probability outside the shortlist, the normaliser is off by at most
log(1 + P (e^delta - 1)), about delta P.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seq2attn.loss import COLUMN_MULTIPLE, padded_columns
from seq2attn.precision import Cpu, cached_speedup, probe_speedup, read_cpu

if TYPE_CHECKING:
    from seq2attn.config import DecodingSchema

log = logging.getLogger(__name__)

# the output layer is about half a decoding step's work and the shortlist adds its own, so bf16
# products must be well ahead of fp32's for the whole step to gain
MARGIN = 2.0
UNIT_ROUNDOFF = 2.0**-8
BOUND_FACTOR = 4.0  # the 3.1 u of the module docstring, rounded up
SUM_ROUNDOFF = 2.0**-22  # three fp32 roundings of a sum with the bias, 2^-24 |z| each
SPARE = 8
PACKED_ROWS = 64  # the batch size oneDNN packs the weight for (any batch size works)
ROW_MULTIPLE = 16  # rows of the packed product are padded to it: AMX multiplies 16-row tiles


@dataclass
class TopLogits:
    """Each row's k best allowed tokens (N, k) with their logits (N, k), best first, the
    logsumexp over the whole vocabulary (N, 1) and the EOS logit (N,)."""

    tokens: Tensor
    logits: Tensor
    normaliser: Tensor
    eos: Tensor


def choose_output_precision(
    cache_dir: str | Path | None,
    cpu: Cpu | None = None,
    probe: Callable[[], float] = probe_speedup,
) -> tuple[str, str]:
    """What ``decoding.output_precision=auto`` stands for on this CPU, and the reason: bf16 where
    ``precision=auto``'s probe (cached under ``cache_dir``; None: not cached) finds bf16 products
    at least ``MARGIN`` times as fast as fp32's."""
    cpu = cpu or read_cpu()
    if cpu.has_bf16 is False:
        return "fp32", f"{cpu.model} lists no bf16 instructions, so bf16 products are emulated"
    if cache_dir is None:
        speedup, source = probe(), "probed now"
    else:
        speedup, path, _ = cached_speedup(Path(cache_dir), cpu, probe)
        source = f"cached in {path}"
    measured = f"bf16 products {speedup:.2f}x the speed of fp32 on {cpu.model} ({source})"
    if speedup >= MARGIN:
        return "bf16", measured
    return "fp32", f"{measured}, under the {MARGIN}x that pays for the shortlist"


def resolve_output_precision(decoding: DecodingSchema, cache_dir: str | Path) -> DecodingSchema:
    """``decoding`` with ``output_precision=auto`` replaced by this machine's choice (logged)."""
    if decoding.output_precision != "auto":
        return decoding
    chosen, reason = choose_output_precision(cache_dir)
    log.info("decoding.output_precision=auto: chose %s (%s)", chosen, reason)
    return replace(decoding, output_precision=type(decoding.output_precision)(chosen))


@cache
def process_choice() -> str:
    """:func:`choose_output_precision` once per process, its probe not kept on disk: what a
    search given ``auto`` (not resolved by its entry point) uses."""
    return choose_output_precision(None)[0]


def exact_top_logits(
    logits: Tensor, k: int, bans: tuple[Tensor, Tensor] | None, eos_id: int
) -> TopLogits:
    """:class:`TopLogits` of full logits (N, V); ``bans`` (rows, tokens) are at -inf."""
    logits = logits.float()
    normaliser = logits.logsumexp(dim=-1, keepdim=True)
    allowed = logits if bans is None else logits.index_put(bans, logits.new_tensor(float("-inf")))
    top, tokens = allowed.topk(min(k, logits.size(-1)), dim=-1)
    return TopLogits(tokens, top, normaliser, logits[:, eos_id])


class PaddedOutput:
    """A copy of the output layer ``layer`` (V x D) with zero rows appended up to a multiple of
    16 outputs (:func:`seq2attn.loss.padded_columns`), for :meth:`top_logits`. The width is what
    runs the product fast: on one core of an AMD EPYC with AVX2, 320 rows of features times the
    8,001 x 512 weight took 45-55 ms, times the 8,016-row copy 33-45 ms (medians of 15 calls in
    each of 3 sittings, by hand). The padding's logits are dropped before anything reads them, so
    the logits are the layer's up to the rounding of another kernel (the tokens too, except where
    two logits lie within that rounding)."""

    def __init__(self, layer: nn.Linear) -> None:
        self.vocab = layer.out_features
        bias = None if layer.bias is None else layer.bias.detach()
        self.weight, self.bias = padded_columns(layer.weight.detach(), bias)

    @staticmethod
    def pays(layer: nn.Linear) -> bool:
        """Whether ``layer`` has outputs to pad (not already a multiple of 16)."""
        return layer.out_features % COLUMN_MULTIPLE != 0

    def holds(self, layer: nn.Linear) -> bool:
        """Whether ``layer``'s weight and bias are the ones this copy was made from, in its
        dtype (``model.double()`` keeps the layer and changes its dtype)."""
        bias = None if self.bias is None else self.bias[: self.vocab]
        same_dtype = self.weight.dtype == layer.weight.dtype
        return same_dtype and _made_from(layer, self.weight[: self.vocab], bias)

    def top_logits(
        self, features: Tensor, k: int, bans: tuple[Tensor, Tensor] | None, eos_id: int
    ) -> TopLogits:
        """:func:`exact_top_logits` of the layer's logits for features (N, D), in the layer's
        dtype (or the caller's autocast dtype, as the layer itself would run)."""
        logits = F.linear(features, self.weight, self.bias)[:, : self.vocab]
        return exact_top_logits(logits, k, bans, eos_id)


class Bf16Shortlist:
    """The output layer ``layer`` (V x D) prepared for :meth:`top_logits`: its weight in bf16 and
    the largest row norm. :func:`shortlist_for` keeps one per layer while its weights stay as
    they are. ``rows`` counts the rows scored and ``fallback_rows`` those the bound did not
    certify (under a lock: threads may search with one shortlist side by side)."""

    def __init__(self, layer: nn.Linear) -> None:
        # copies: the shortlist scores with the weights it was made from, whatever the layer
        # becomes
        self.weight = layer.weight.detach().float().clone()
        self.bias = None if layer.bias is None else layer.bias.detach().float().clone()
        self._product = _bf16_product(self.weight)
        self.max_row_norm = float(self.weight.norm(dim=1).max())
        self.fallback_rows = 0
        self.rows = 0
        self._counting = threading.Lock()

    def holds(self, layer: nn.Linear) -> bool:
        """Whether ``layer``'s weight and bias are the ones this shortlist was made from."""
        return _made_from(layer, self.weight, self.bias)

    def exact_logits(self, features: Tensor) -> Tensor:
        """z = W h + b in fp32 for features (N, D)."""
        return torch.nn.functional.linear(features, self.weight, self.bias)

    def top_logits(
        self, features: Tensor, k: int, bans: tuple[Tensor, Tensor] | None, eos_id: int
    ) -> TopLogits:
        """:class:`TopLogits` of the layer's logits for features (N, D), whose tokens are those
        of :func:`exact_top_logits` on the fp32 logits."""
        with torch.autocast(features.device.type, enabled=False):
            return self._top_logits(features.float(), k, bans, eos_id)

    def _top_logits(
        self, h: Tensor, k: int, bans: tuple[Tensor, Tensor] | None, eos_id: int
    ) -> TopLogits:
        listed = min(k + SPARE, self.weight.size(0) - 1)
        if k > listed:
            return exact_top_logits(self.exact_logits(h), k, bans, eos_id)
        approximate = self._product(h.to(torch.bfloat16)).float()
        if self.bias is not None:
            approximate += self.bias
        candidates, tokens = approximate.topk(listed + 1, dim=-1)
        tokens, outside_best = tokens[:, :listed], candidates[:, listed]
        exact = torch.einsum("nd,nkd->nk", h, self.weight[tokens])
        if self.bias is not None:
            exact += self.bias[tokens]
        normaliser = approximate.scatter(1, tokens, exact).logsumexp(dim=-1, keepdim=True)
        if bans is not None:
            banned = torch.zeros_like(approximate, dtype=torch.bool).index_put_(
                bans, torch.tensor(True, device=h.device)
            )
            exact = exact.masked_fill(banned.gather(1, tokens), float("-inf"))
        exact, order = exact.sort(dim=-1, descending=True)
        kth_best = exact[:, k - 1]
        delta = BOUND_FACTOR * UNIT_ROUNDOFF * self.max_row_norm * h.norm(dim=-1)
        delta += SUM_ROUNDOFF * torch.maximum(kth_best, outside_best).abs()
        certified = kth_best > outside_best + delta
        eos = h @ self.weight[eos_id] + (0.0 if self.bias is None else self.bias[eos_id])
        top = TopLogits(tokens.gather(1, order[:, :k]), exact[:, :k], normaliser, eos)
        doubtful = (~certified).nonzero().squeeze(1)
        with self._counting:
            self.rows += h.size(0)
            self.fallback_rows += doubtful.numel()
        if not doubtful.numel():
            return top
        redone = exact_top_logits(
            self.exact_logits(h[doubtful]),
            k,
            None if bans is None else _select_bans(bans, doubtful, h.size(0)),
            eos_id,
        )
        top.tokens[doubtful], top.logits[doubtful] = redone.tokens, redone.logits
        top.normaliser[doubtful], top.eos[doubtful] = redone.normaliser, redone.eos
        return top


Prepared = TypeVar("Prepared", PaddedOutput, Bf16Shortlist)
_PREPARED: weakref.WeakKeyDictionary[nn.Linear, dict[type, PaddedOutput | Bf16Shortlist]] = (
    weakref.WeakKeyDictionary()
)


def prepared(kind: type[Prepared], layer: nn.Linear) -> Prepared:
    """``kind(layer)`` (a :class:`PaddedOutput` or a :class:`Bf16Shortlist`), kept per layer and
    made again when the layer's weight or bias differs from the copy it holds: preparing one
    (copying or packing an 8,001 x 512 weight) takes several milliseconds, as long as a few
    decoding steps, while comparing the weights takes about one. The comparison is of contents,
    so every change counts, including those that leave the tensor's version counter alone (the
    fused Adam update, ``weight.data.copy_``)."""
    kept = _PREPARED.setdefault(layer, {}).get(kind)
    if not isinstance(kept, kind) or not kept.holds(layer):
        kept = kind(layer)
        _PREPARED[layer][kind] = kept
    return kept


def shortlist_for(layer: nn.Linear) -> Bf16Shortlist:
    """The kept :class:`Bf16Shortlist` of ``layer`` (:func:`prepared`)."""
    return prepared(Bf16Shortlist, layer)


def _made_from(layer: nn.Linear, weight: Tensor, bias: Tensor | None) -> bool:
    """Whether ``weight`` and ``bias`` (None: the layer has none) hold ``layer``'s values."""
    if layer.bias is None:
        return bias is None and _same(weight, layer.weight)
    return _same(weight, layer.weight) and _same(bias, layer.bias)


def _same(kept: Tensor | None, parameter: Tensor) -> bool:
    return (
        kept is not None
        and kept.shape == parameter.shape
        and kept.device == parameter.device
        and torch.equal(kept, parameter.detach().to(kept.dtype))
    )


def _bf16_product(weight: Tensor) -> Callable[[Tensor], Tensor]:
    """x (N, D) in bf16 -> x W^T in bf16. The weight is packed once into oneDNN's blocked layout
    (``torch.ops.mkldnn``, what ``torch.compile`` uses when it freezes a model): a plain bf16
    product repacks the whole V x D weight at every call, which costs a decoding step's small
    batches more than the product (0.6 against 1.5 ms for 64 x 512 x 8,001 on a Xeon with AMX).
    Where the packed product is missing or fails a trial, it is a plain product.

    oneDNN compiles and caches a kernel for every row count it sees, and a beam search's live
    rows take most counts up to beam x batch (a beam-5 decode of val with a budget_r2 checkpoint
    peaked at 998 MB unpadded, 964 MB padded). So the rows are padded with zero rows to a
    multiple of :data:`ROW_MULTIPLE` and the padding's products dropped."""
    plain = weight.to(torch.bfloat16)
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(plain, PACKED_ROWS)
        trial = plain.new_zeros(ROW_MULTIPLE, plain.size(1))
        torch.ops.mkldnn._linear_pointwise(trial, packed, None, "none", [], "")
    except (AttributeError, RuntimeError):
        return lambda x: x @ plain.t()

    def product(x: Tensor) -> Tensor:
        rows = x.size(0)
        padding = -rows % ROW_MULTIPLE
        if padding:
            x = torch.cat([x, x.new_zeros(padding, x.size(1))])
        return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")[:rows]

    return product


def _select_bans(bans: tuple[Tensor, Tensor], rows: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """The bans (rows, tokens) of ``rows`` (R,) out of ``count`` rows, renumbered 0..R-1."""
    banned_rows, banned_tokens = bans
    position = torch.full((count,), -1, dtype=torch.long, device=rows.device)
    position[rows] = torch.arange(rows.numel(), device=rows.device)
    new_rows = position[banned_rows]
    kept = new_rows >= 0
    return new_rows[kept], banned_tokens[kept]
