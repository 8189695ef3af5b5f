"""The output layer prepared for a search. Padded: its products are a multiple of 16 wide, in
the layer's dtype, and its top logits are the layer's. The bf16 shortlist: its rounding bound
holds, its tokens and logits are fp32's, rows the bound cannot certify are scored in fp32, bans
are kept, the searches find the same hypotheses, and ``output_precision=auto`` follows the
machine. Both are kept per layer until its weights change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from seq2attn import search as search_module
from seq2attn import shortlist as shortlist_module
from seq2attn.config import DecodingSchema
from seq2attn.config.run import LengthPenaltyType, OutputPrecision, SearchStrategy
from seq2attn.ensemble import Ensemble
from seq2attn.models.scorers import AdditiveScorer, GeneralScorer
from seq2attn.models.seq2seq import Seq2Seq
from seq2attn.precision import Cpu
from seq2attn.search import beam_search, decode, greedy_decode
from seq2attn.shortlist import (
    BOUND_FACTOR,
    ROW_MULTIPLE,
    SPARE,
    UNIT_ROUNDOFF,
    Bf16Shortlist,
    PaddedOutput,
    choose_output_precision,
    exact_top_logits,
    prepared,
    resolve_output_precision,
    shortlist_for,
)
from tests.unit.operations import recorded
from tests.unit.test_seq2seq import make_model as make_seq2seq

PAD, BOS, EOS = 0, 2, 3
V, D = 300, 32
SRC = torch.tensor([[4, 5, 6, 7, 8, 9], [6, 7, 4, 11, PAD, PAD], [5, 12, PAD, PAD, PAD, PAD]])
LENGTHS = torch.tensor([6, 4, 2])
LIMIT = {"max_length_a": 1.0, "max_length_b": 4}


def output_layer(seed: int = 0, vocabulary: int = V) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(D, vocabulary)
    with torch.no_grad():
        layer.weight.mul_(4.0)  # logits of a few units, as a trained model's
    return layer


def features(rows: int, seed: int = 1, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(rows, D, generator=torch.Generator().manual_seed(seed)) * scale


def make_model(wiring: str = "bahdanau") -> Seq2Seq:
    model = make_seq2seq(
        src_vocab_size=V,
        tgt_vocab_size=V,
        attention=wiring,
        scorer=AdditiveScorer if wiring == "bahdanau" else GeneralScorer,
        embedding_size=16,
        hidden_size=D,
        decoder_layers=1,
    )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(3.0)
        model.output_layer.bias[EOS] = 2.0
    return model.eval()


def assert_normaliser_within_bound(
    layer: nn.Linear, h: torch.Tensor, got: torch.Tensor, exact: torch.Tensor, k: int
) -> None:
    """|lse~ - lse| <= delta * (the probability outside the shortlist's k + SPARE tokens)."""
    shortlist = Bf16Shortlist(layer)
    approximate = shortlist._product(h.to(torch.bfloat16)).float() + layer.bias.detach()
    listed = approximate.topk(k + SPARE, dim=-1).indices
    probs = layer(h).detach().softmax(dim=-1)
    tail = (1 - probs.gather(1, listed).sum(dim=-1, keepdim=True)).clamp(min=0)
    delta = BOUND_FACTOR * UNIT_ROUNDOFF * shortlist.max_row_norm * h.norm(dim=-1, keepdim=True)
    assert bool(((got - exact).abs() <= delta * tail + 1e-5).all())
    assert float((got - exact).abs().max()) > 0  # bf16 logits really entered the normaliser


def test_bf16_logits_lie_within_the_bound_of_fp32_logits() -> None:
    """|z~ - z| <= 4 u ||h|| max ||W_j|| for the packed (or plain) bf16 product, with features
    and weights over several scales."""
    for scale in (0.1, 3.0, 50.0):
        layer = output_layer()
        shortlist = Bf16Shortlist(layer)
        h = features(64, scale=scale)
        approximate = shortlist._product(h.to(torch.bfloat16)).float() + layer.bias.detach()
        exact = layer(h).detach()
        delta = BOUND_FACTOR * UNIT_ROUNDOFF * shortlist.max_row_norm * h.norm(dim=-1)
        error = (approximate - exact).abs().max(dim=-1).values
        assert bool((error <= delta).all())
        assert float(error.max()) > 0  # the product really ran in bf16


def test_the_packed_product_sees_rows_padded_to_a_multiple_and_drops_the_padding() -> None:
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: list[int] = []

    class PackedRows(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket.__name__ == "_linear_pointwise":
                seen.append(args[0].size(0))
            return func(*args, **(kwargs or {}))

    shortlist = Bf16Shortlist(output_layer())
    h = features(2 * ROW_MULTIPLE + 8).to(torch.bfloat16)
    counts = (1, 5, ROW_MULTIPLE, ROW_MULTIPLE + 1, h.size(0))
    with PackedRows():
        products = {rows: shortlist._product(h[:rows]) for rows in counts}
    if not seen:
        pytest.skip("this CPU has no packed bf16 product (oneDNN), only the plain one")
    assert set(seen) == {ROW_MULTIPLE, 2 * ROW_MULTIPLE, 3 * ROW_MULTIPLE}
    exact = h.float() @ shortlist.weight.t()
    delta = BOUND_FACTOR * UNIT_ROUNDOFF * shortlist.max_row_norm * h.float().norm(dim=-1)
    for rows, product in products.items():
        assert product.shape == (rows, V)  # the padding's rows are dropped
        error = (product.float() - exact[:rows]).abs().max(dim=-1).values
        assert bool((error <= delta[:rows]).all())


@pytest.mark.parametrize("k", [1, 5])
def test_top_logits_are_those_of_the_fp32_logits(k: int) -> None:
    layer = output_layer()
    h = features(200)
    exact = exact_top_logits(layer(h).detach(), k, None, EOS)
    got = Bf16Shortlist(layer).top_logits(h, k, None, EOS)
    assert torch.equal(got.tokens, exact.tokens)
    torch.testing.assert_close(got.logits, exact.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.eos, exact.eos, rtol=0, atol=1e-5)
    # the normaliser mixes exact and bf16 logits: off by at most delta times the tail's mass
    assert_normaliser_within_bound(layer, h, got.normaliser, exact.normaliser, k)


def test_rows_the_bound_cannot_certify_are_scored_in_fp32() -> None:
    """Twenty tokens whose logits differ by less than the bound: the shortlist cannot tell its
    best from the best outside it, so the row falls back, and its token is fp32's argmax."""
    layer = output_layer()
    with torch.no_grad():
        base = layer.weight[10].clone()
        for j in range(10, 30):
            layer.weight[j] = base + 1e-4 * (j - 10) / 20 * base.sign()
            layer.bias[j] = 100.0  # far above every other token
    h = features(8)
    shortlist = Bf16Shortlist(layer)
    got = shortlist.top_logits(h, 1, None, EOS)
    exact = exact_top_logits(layer(h).detach(), 1, None, EOS)
    assert shortlist.fallback_rows == 8 and shortlist.rows == 8
    assert torch.equal(got.tokens, exact.tokens)
    torch.testing.assert_close(got.normaliser, exact.normaliser, rtol=0, atol=1e-5)


def test_well_separated_rows_need_no_fallback() -> None:
    layer = output_layer()
    shortlist = Bf16Shortlist(layer)
    shortlist.top_logits(features(200), 5, None, EOS)
    assert shortlist.rows == 200
    assert shortlist.fallback_rows < 20


def test_bans_are_kept_and_leave_the_normaliser_alone() -> None:
    layer = output_layer()
    h = features(6)
    best = exact_top_logits(layer(h).detach(), 3, None, EOS).tokens
    bans = (
        torch.tensor([0, 0, 3, 5]),
        torch.stack([best[0, 0], best[0, 1], best[3, 0], best[5, 2]]),
    )
    exact = exact_top_logits(layer(h).detach(), 3, bans, EOS)
    got = Bf16Shortlist(layer).top_logits(h, 3, bans, EOS)
    assert torch.equal(got.tokens, exact.tokens)
    assert int(best[0, 0]) not in got.tokens[0].tolist()
    assert_normaliser_within_bound(layer, h, got.normaliser, exact.normaliser, 3)


def test_banned_rows_that_fall_back_keep_their_own_bans() -> None:
    """Rows 1 and 2 fall back (twenty tokens 1e-4 apart on top, closer than the bound); row 2,
    the second of them, may not take the best of the twenty, and its ban must follow it."""
    layer = output_layer()
    with torch.no_grad():
        base = layer.weight[10].clone()
        for j in range(10, 30):
            layer.weight[j] = base
            layer.bias[j] = -1e-4 * (j - 10)
    direction = base / base.norm()
    h = torch.stack([-direction, direction, direction, -direction]) * 5.0
    bans = (torch.tensor([2]), torch.tensor([10]))
    shortlist = Bf16Shortlist(layer)
    got = shortlist.top_logits(h, 1, bans, EOS)
    exact = exact_top_logits(layer(h).detach(), 1, bans, EOS)
    assert shortlist.fallback_rows == 2
    assert torch.equal(got.tokens, exact.tokens)
    assert got.tokens[1:3, 0].tolist() == [10, 11]


def test_the_normaliser_takes_the_shortlists_fp32_scores() -> None:
    """Peaked rows, whose mass lies in the shortlist: the normaliser is fp32's to 1e-4, where
    one over bf16 scores alone would be off by far more."""
    layer = output_layer()
    h = features(64, scale=30.0)
    shortlist = Bf16Shortlist(layer)
    got = shortlist.top_logits(h, 1, None, EOS)
    exact = exact_top_logits(layer(h).detach(), 1, None, EOS)
    bf16_only = (shortlist._product(h.to(torch.bfloat16)).float() + layer.bias.detach()).logsumexp(
        dim=-1, keepdim=True
    )
    assert float((got.normaliser - exact.normaliser).abs().max()) < 1e-4
    assert float((bf16_only - exact.normaliser).abs().max()) > 1e-3


@pytest.mark.parametrize("wiring", ["bahdanau", "luong"])
def test_searches_find_the_fp32_hypotheses(wiring: str) -> None:
    model = make_model(wiring)
    shortlist = Bf16Shortlist(model.output_layer)
    for search, extra in ((greedy_decode, {}), (beam_search, {"beam_size": 4})):
        plain = search(model, SRC, LENGTHS, BOS, EOS, **extra, **LIMIT)
        listed = search(model, SRC, LENGTHS, BOS, EOS, **extra, **LIMIT, output_layer=shortlist)
        flat = [h for s in plain for h in (s if isinstance(s, list) else [s])]
        flat_listed = [h for s in listed for h in (s if isinstance(s, list) else [s])]
        assert [h.tokens for h in flat_listed] == [h.tokens for h in flat]
        for a, b in zip(flat_listed, flat, strict=True):
            assert abs(a.score - b.score) < 1e-3
    assert shortlist.rows > 0


PADDED_WIDTH = -(-V // 16) * 16  # 304 outputs for the layer's 300


def test_the_padded_output_multiplies_a_multiple_of_16_outputs_and_gives_the_layers_logits() -> (
    None
):
    layer, h = output_layer(), features(16)
    bans = (torch.tensor([0, 0, 5]), torch.tensor([7, EOS, 11]))
    with recorded() as operations:
        got = PaddedOutput(layer).top_logits(h, 3, bans, EOS)
    products = [op.shape for op in operations if op.name in ("mm", "addmm")]
    assert products == [(16, PADDED_WIDTH)]
    expected = exact_top_logits(layer(h).detach(), 3, bans, EOS)
    assert torch.equal(got.tokens, expected.tokens)
    for a, b in ((got.logits, expected.logits), (got.normaliser, expected.normaliser)):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(got.eos, expected.eos)


def test_decode_pads_the_output_in_fp32_and_takes_the_shortlist_for_bf16() -> None:
    model = make_model()
    layer = model.output_layer
    for precision, used in ((OutputPrecision.fp32, False), (OutputPrecision.bf16, True)):
        before = shortlist_for(layer).rows
        decoding = DecodingSchema(SearchStrategy.beam, 3, 0.0, **LIMIT, output_precision=precision)
        with recorded() as operations:
            decode(model, SRC, LENGTHS, decoding, BOS, EOS)
        assert (shortlist_for(layer).rows > before) is used
        widths = {op.shape[1] for op in operations if op.name in ("mm", "addmm") and op.shape}
        if not used:  # every step's product is the padded layer's, none the layer's own
            assert PADDED_WIDTH in widths and V not in widths


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_padded_output_finds_the_hypotheses_of_the_models_own_step(dtype) -> None:
    model = make_model().to(dtype)
    fp32 = {"length_penalty_type": LengthPenaltyType.avg, "output_precision": OutputPrecision.fp32}
    for decoding in (
        DecodingSchema(**LIMIT, output_precision=OutputPrecision.fp32),
        DecodingSchema(SearchStrategy.beam, 3, 0.0, 2, **LIMIT, **fp32),
    ):
        assert isinstance(search_module._output_layer(model, decoding, SRC.device), PaddedOutput)
        got = decode(model, SRC, LENGTHS, decoding, BOS, EOS)
        if decoding.strategy == SearchStrategy.greedy:
            own = [[h] for h in greedy_decode(model, SRC, LENGTHS, BOS, EOS, **LIMIT)]
        else:
            own = beam_search(
                model, SRC, LENGTHS, BOS, EOS, 3, 0.0, 2, **LIMIT, length_penalty_type="avg"
            )
        assert [[h.tokens for h in n] for n in got] == [[h.tokens for h in n] for n in own]
        scores = [h.score for n in got for h in n], [h.score for n in own for h in n]
        assert scores[0] == pytest.approx(scores[1], rel=1e-5)


def test_a_padded_copy_is_made_again_when_the_layer_changes_dtype() -> None:
    layer, h = output_layer(), features(4)
    kept = prepared(PaddedOutput, layer)
    layer.double()  # the same layer and parameters, new data
    fresh = prepared(PaddedOutput, layer)
    assert fresh is not kept and fresh.weight.dtype == torch.float64
    got = fresh.top_logits(h.double(), 2, None, EOS)
    assert torch.equal(
        got.tokens, exact_top_logits(layer(h.double()).detach(), 2, None, EOS).tokens
    )


def test_a_layer_of_a_multiple_of_16_outputs_is_multiplied_as_it_is() -> None:
    model = make_seq2seq(
        src_vocab_size=V, tgt_vocab_size=PADDED_WIDTH, embedding_size=16, hidden_size=D
    ).eval()
    decoding = DecodingSchema(**LIMIT, output_precision=OutputPrecision.fp32)
    assert not PaddedOutput.pays(model.output_layer)
    assert search_module._output_layer(model, decoding, SRC.device) is None
    assert PaddedOutput.pays(make_model().output_layer)


def test_an_ensemble_scores_its_averaged_distribution_in_fp32() -> None:
    models = [make_model(), make_model("luong")]
    ensemble = Ensemble(models)
    decoding = DecodingSchema(
        SearchStrategy.beam,
        3,
        0.0,
        **LIMIT,
        length_penalty_type=LengthPenaltyType.avg,
        output_precision=OutputPrecision.bf16,
    )
    fp32 = DecodingSchema(
        SearchStrategy.beam, 3, 0.0, **LIMIT, length_penalty_type=LengthPenaltyType.avg
    )
    got = decode(ensemble, SRC, LENGTHS, decoding, BOS, EOS)
    expected = decode(ensemble, SRC, LENGTHS, fp32, BOS, EOS)
    assert [[(h.tokens, h.score) for h in s] for s in got] == [
        [(h.tokens, h.score) for h in s] for s in expected
    ]


@pytest.mark.parametrize("kind", [PaddedOutput, Bf16Shortlist])
def test_a_layer_keeps_its_prepared_output_until_its_weights_change(kind) -> None:
    layer = output_layer()
    kept = prepared(kind, layer)
    assert prepared(kind, layer) is kept
    with torch.no_grad():
        layer.weight.add_(0.0)  # a new version, the same weights
    assert prepared(kind, layer) is kept
    for parameter in layer.parameters():
        parameter.grad = torch.randn_like(parameter)
    fused_adam = torch.optim.Adam(layer.parameters(), lr=1e-2, fused=True)
    changes = [
        lambda: layer.weight.add_(1.0),  # an optimizer step
        fused_adam.step,  # in place without a version bump: what training runs
        lambda: layer.bias.add_(0.5),
        lambda: layer.weight.data.copy_(layer.weight.data.flip(0)),  # unseen by autograd
        lambda: setattr(layer.weight, "data", layer.weight.data * 2),  # new storage
        lambda: layer.load_state_dict(output_layer(seed=3).state_dict(), assign=True),
        lambda: layer.load_state_dict(output_layer(seed=4).state_dict()),  # copied in place
    ]
    h = features(16)
    for change in changes:
        with torch.no_grad():
            change()
        fresh = prepared(kind, layer)
        assert fresh is not kept
        assert torch.equal(
            fresh.top_logits(h, 1, None, EOS).tokens,
            exact_top_logits(layer(h).detach(), 1, None, EOS).tokens,
        )
        kept = fresh


AMX = Cpu("a CPU with AMX", frozenset({"avx512f", "amx_bf16"}))
NO_BF16 = Cpu("a CPU without bf16", frozenset({"avx2", "fma"}))


def test_auto_is_fp32_without_a_probe_where_bf16_is_emulated(tmp_path: Path) -> None:
    def probe() -> float:
        raise AssertionError("a CPU without bf16 instructions was probed")

    assert choose_output_precision(tmp_path, NO_BF16, probe)[0] == "fp32"


@pytest.mark.parametrize("speedup, chosen", [(5.5, "bf16"), (2.0, "bf16"), (1.4, "fp32")])
def test_auto_follows_the_cached_probe(tmp_path: Path, speedup: float, chosen: str) -> None:
    calls = []

    def probe() -> float:
        calls.append(1)
        return speedup

    for _ in range(2):
        got, reason = choose_output_precision(tmp_path, AMX, probe)
        assert got == chosen and f"{speedup:.2f}x" in reason
    assert len(calls) == 1  # the second call read the cache
    (cached,) = tmp_path.glob("precision-*.json")
    assert json.loads(cached.read_text())["speedup"] == speedup


def test_resolving_replaces_auto_and_leaves_a_choice_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        shortlist_module,
        "choose_output_precision",
        lambda cache_dir: choose_output_precision(cache_dir, AMX, lambda: 3.0),
    )
    auto = DecodingSchema(output_precision=OutputPrecision.auto)
    assert resolve_output_precision(auto, tmp_path).output_precision == OutputPrecision.bf16
    fp32 = DecodingSchema(output_precision=OutputPrecision.fp32)
    assert resolve_output_precision(fp32, tmp_path) is fp32
