"""Decoders: the parallel paths equal the step loop, teacher forcing feeds the right tokens,
and gradients reach every parameter."""

from __future__ import annotations

import functools

import pytest
import torch
from torch._dynamo.utils import counters

from seq2attn.models.decoders import (
    BahdanauDecoder,
    DecoderOutput,
    DecoderState,
    LuongDecoder,
    Memory,
    NoAttentionDecoder,
)
from seq2attn.models.encoder import EncoderOutput
from seq2attn.models.scorers import (
    AdditiveScorer,
    ConcatScorer,
    DotScorer,
    GeneralScorer,
    LocationScorer,
    MLPScorer,
    ScaledDotScorer,
)
from seq2attn.models.seq2seq import Seq2Seq

PAD, BOS, EOS = 0, 2, 3
E, H, HK = 3, 4, 4
SCORERS = {
    "dot": DotScorer,
    "scaled_dot": ScaledDotScorer,
    "general": GeneralScorer,
    "concat": ConcatScorer,
    "additive": AdditiveScorer,
    "mlp": functools.partial(MLPScorer, hidden_sizes=[3, 2]),
    "location": functools.partial(LocationScorer, max_source_length=8),
}


def encoder_output(cell: str) -> EncoderOutput:
    torch.manual_seed(1)
    lengths = torch.tensor([5, 3, 1])
    src_pad_mask = torch.arange(5).unsqueeze(0) >= lengths.unsqueeze(1)
    memory = torch.randn(3, 5, HK).masked_fill(src_pad_mask.unsqueeze(-1), 0.0)
    final_cell = torch.randn(2, 3, HK) if cell == "lstm" else None
    return EncoderOutput(memory, torch.randn(2, 3, HK), final_cell, src_pad_mask)


def initial_state(cell: str) -> DecoderState:
    torch.manual_seed(2)
    return DecoderState(torch.randn(2, 3, H), torch.randn(2, 3, H) if cell == "lstm" else None)


def step_loop(decoder, tgt_emb: torch.Tensor, state: DecoderState, memory: Memory) -> DecoderOutput:
    features, attention = [], []
    for t in range(tgt_emb.size(1)):
        out = decoder.step(tgt_emb[:, t], state, memory)
        state = out.state
        features.append(out.features)
        attention.append(out.attention)
    stacked = None if attention[0] is None else torch.stack(attention, 1)
    return DecoderOutput(torch.stack(features, 1), stacked, state)


def assert_same(parallel: DecoderOutput, loop: DecoderOutput) -> None:
    torch.testing.assert_close(parallel.features, loop.features, atol=1e-5, rtol=0)
    torch.testing.assert_close(parallel.state.hidden, loop.state.hidden, atol=1e-5, rtol=0)
    if loop.state.cell is not None:
        torch.testing.assert_close(parallel.state.cell, loop.state.cell, atol=1e-5, rtol=0)
    if loop.attention is not None:
        torch.testing.assert_close(parallel.attention, loop.attention, atol=1e-5, rtol=0)


@pytest.mark.parametrize("scorer", sorted(SCORERS))
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_luong_parallel_path_equals_step_loop(cell: str, scorer: str) -> None:
    torch.manual_seed(0)
    decoder = LuongDecoder(cell, E, H, HK, 2, 0.0, SCORERS[scorer], input_feeding=False)
    enc, state = encoder_output(cell), initial_state(cell)
    memory = decoder.init_memory(enc)
    tgt_emb = torch.randn(3, 6, E)
    parallel = decoder(tgt_emb, state, memory)
    assert parallel.attention.shape == (3, 6, 5)
    assert (parallel.attention.masked_select(enc.src_pad_mask.unsqueeze(1)) == 0).all()
    assert_same(parallel, step_loop(decoder, tgt_emb, state, memory))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_no_attention_parallel_path_equals_step_loop(cell: str) -> None:
    torch.manual_seed(0)
    decoder = NoAttentionDecoder(cell, E, H, HK, 2, 0.0)
    enc, state = encoder_output(cell), initial_state(cell)
    memory = decoder.init_memory(enc)
    tgt_emb = torch.randn(3, 6, E)
    parallel = decoder(tgt_emb, state, memory)
    assert parallel.attention is None
    assert_same(parallel, step_loop(decoder, tgt_emb, state, memory))


def test_luong_input_feeding_carries_the_attentional_state() -> None:
    torch.manual_seed(0)
    decoder = LuongDecoder("gru", E, H, HK, 1, 0.0, GeneralScorer, input_feeding=True)
    assert decoder.rnn.input_size == E + H
    enc = encoder_output("gru")
    memory = decoder.init_memory(enc)
    state = DecoderState(torch.randn(1, 3, H))
    first = decoder.step(torch.randn(3, E), state, memory)
    torch.testing.assert_close(first.state.input_feed, first.features)  # h~_t, no dropout
    out = decoder(torch.randn(3, 4, E), state, memory)
    torch.testing.assert_close(out.state.input_feed, out.features[:, -1])


def test_bahdanau_attends_with_the_previous_state() -> None:
    torch.manual_seed(0)
    decoder = BahdanauDecoder("gru", E, H, HK, 2, 0.0, DotScorer)
    enc = encoder_output("gru")
    memory = decoder.init_memory(enc)
    state = initial_state("gru")
    out = decoder.step(torch.randn(3, E), state, memory)
    expected = decoder.attention(
        state.hidden[-1].unsqueeze(1), memory.keys, memory.prepared, memory.src_pad_mask
    )
    torch.testing.assert_close(out.attention, expected.weights[:, 0])


def test_init_memory_prepares_keys_once() -> None:
    decoder = LuongDecoder("gru", E, H, HK, 1, 0.0, GeneralScorer, input_feeding=False)
    enc = encoder_output("gru")
    memory = decoder.init_memory(enc)
    torch.testing.assert_close(memory.prepared, decoder.attention.scorer.W(enc.memory))
    torch.testing.assert_close(memory.summary, enc.summary)
    picked = memory.index_select(torch.tensor([2, 2, 0]))
    assert picked.prepared.shape == (3, 5, H)
    torch.testing.assert_close(picked.keys[0], enc.memory[2])


# Seq2Seq teacher forcing and gradients -------------------------------------------------

WIRINGS = {
    "none": ("none", DotScorer, False),
    "bahdanau": ("bahdanau", AdditiveScorer, False),
    "luong": ("luong", GeneralScorer, False),
    "luong_feed": ("luong", ConcatScorer, True),
    "luong_location": ("luong", functools.partial(LocationScorer, max_source_length=8), False),
}


def make_model(wiring: str, cell: str, bridge: str = "mean") -> Seq2Seq:
    torch.manual_seed(0)
    attention, scorer, input_feeding = WIRINGS[wiring]
    return Seq2Seq(
        src_vocab_size=11,
        tgt_vocab_size=13,
        cell=cell,
        attention=attention,
        scorer=scorer,
        input_feeding=input_feeding,
        embedding_size=5,
        hidden_size=6,
        encoder_hidden_size=None,
        encoder_layers=2,
        decoder_layers=2,
        bidirectional=True,
        dropout=0.0,
        bridge=bridge,
        tie_embeddings=False,
        reverse_source=False,
        pad_id=PAD,
    )


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    src = torch.tensor([[4, 5, 6, 7, 8], [9, 10, 4, PAD, PAD], [5, PAD, PAD, PAD, PAD]])
    tgt_in = torch.tensor([[BOS, 4, 5, 6], [BOS, 7, 8, PAD], [BOS, 9, PAD, PAD]])
    return src, torch.tensor([5, 3, 1]), tgt_in


@pytest.mark.parametrize("wiring", sorted(WIRINGS))
def test_ratio_one_feeds_gold_and_equals_step_loop(wiring: str) -> None:
    model = make_model(wiring, "lstm")
    src, lengths, tgt_in = batch()
    out = model(src, lengths, tgt_in, teacher_forcing_ratio=1.0)
    assert torch.equal(out.decoder_inputs, tgt_in)
    memory, state = model.encode(src, lengths)
    for t in range(tgt_in.size(1)):
        logits, state, attention = model.step(tgt_in[:, t], state, memory)
        torch.testing.assert_close(out.logits[:, t], logits, atol=1e-5, rtol=0)
        if attention is not None:
            torch.testing.assert_close(out.attention[:, t], attention, atol=1e-5, rtol=0)


@pytest.mark.parametrize("wiring", sorted(WIRINGS))
def test_ratio_zero_feeds_back_predictions(wiring: str) -> None:
    model = make_model(wiring, "gru")
    src, lengths, tgt_in = batch()
    out = model(src, lengths, tgt_in, teacher_forcing_ratio=0.0)
    assert torch.equal(out.decoder_inputs[:, 0], tgt_in[:, 0])
    assert torch.equal(out.decoder_inputs[:, 1:], out.logits[:, :-1].argmax(-1))
    assert out.logits.shape == (3, 4, 13)


def test_partial_ratio_mixes_gold_and_predictions() -> None:
    model = make_model("luong", "gru")
    src, lengths, tgt_in = batch()
    torch.manual_seed(3)
    out = model(src, lengths, tgt_in, teacher_forcing_ratio=0.5)
    fed, gold, predicted = out.decoder_inputs[:, 1:], tgt_in[:, 1:], out.logits[:, :-1].argmax(-1)
    assert ((fed == gold) | (fed == predicted)).all()
    assert (fed != predicted).any() and (fed != gold).any()  # both sources occur with this seed


def test_sampling_draws_from_the_softmax() -> None:
    model = make_model("bahdanau", "gru")
    with torch.no_grad():
        model.output_layer.bias.copy_(torch.full((13,), -1e4))
        model.output_layer.bias[7] = 1e4  # the softmax puts all its mass on token 7
    src, lengths, tgt_in = batch()
    out = model(src, lengths, tgt_in, teacher_forcing_ratio=0.0, sample=True)
    assert (out.decoder_inputs[:, 1:] == 7).all()


@pytest.mark.parametrize("ratio", [1.0, 0.5])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("wiring", sorted(WIRINGS))
def test_gradients_reach_every_parameter(wiring: str, cell: str, ratio: float) -> None:
    model = make_model(wiring, cell, bridge="zero")  # the encoder is reached only via memory
    src, lengths, tgt_in = batch()
    out = model(src, lengths, tgt_in, teacher_forcing_ratio=ratio)
    out.logits.logsumexp(-1).sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    if wiring != "none":
        assert any(True for _ in model.decoder.attention.scorer.parameters())


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_single_step_cell_path_equals_the_rnn_module(cell: str) -> None:
    """One position through the cells gives the module's output, state and gradients."""
    torch.manual_seed(0)
    decoder = NoAttentionDecoder(cell, E, H, HK, num_layers=2, dropout=0.0)
    inputs = torch.randn(5, 1, E + HK, requires_grad=True)
    state = DecoderState(torch.randn(2, 5, H), torch.randn(2, 5, H) if cell == "lstm" else None)
    stepped, step_state = decoder._step_rnn(inputs[:, 0], state)
    whole, rnn_state = decoder.rnn(inputs, state.rnn_state)
    module_state = DecoderState.from_rnn(rnn_state)
    torch.testing.assert_close(stepped, whole[:, 0])
    torch.testing.assert_close(step_state.hidden, module_state.hidden)
    if cell == "lstm":
        torch.testing.assert_close(step_state.cell, module_state.cell)
    step_grads = torch.autograd.grad(stepped.sum(), [inputs, *decoder.rnn.parameters()])
    module_grads = torch.autograd.grad(whole.sum(), [inputs, *decoder.rnn.parameters()])
    for a, b in zip(step_grads, module_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_single_step_cell_path_drops_out_between_layers_only_when_training() -> None:
    torch.manual_seed(0)
    decoder = NoAttentionDecoder("gru", E, H, HK, num_layers=2, dropout=0.5)
    inputs, state = torch.randn(64, E + HK), DecoderState(torch.zeros(2, 64, H))
    decoder.eval()
    expected, _ = decoder.rnn(inputs.unsqueeze(1), state.rnn_state)
    torch.testing.assert_close(decoder._step_rnn(inputs, state)[0], expected[:, 0])
    decoder.train()
    torch.manual_seed(1)
    first = decoder._step_rnn(inputs, state)[0]
    torch.manual_seed(2)
    assert not torch.allclose(first, decoder._step_rnn(inputs, state)[0])


def _teacher_forced_with_grads(decoder, batch_size: int, source: int) -> list[torch.Tensor]:
    """Features, final state, attention and every gradient of one teacher-forced pass."""
    torch.manual_seed(batch_size * 10 + source)
    lengths = torch.randint(1, source + 1, (batch_size,))
    lengths[0] = source
    src_pad_mask = torch.arange(source).unsqueeze(0) >= lengths.unsqueeze(1)
    memory = torch.randn(batch_size, source, HK).masked_fill(src_pad_mask.unsqueeze(-1), 0.0)
    enc = EncoderOutput(memory, torch.randn(2, batch_size, HK), None, src_pad_mask)
    state = DecoderState(torch.randn(2, batch_size, H))
    tgt_emb = torch.randn(batch_size, 6, E, requires_grad=True)
    out = decoder(tgt_emb, state, decoder.init_memory(enc))
    loss = out.features.pow(2).sum() + out.state.hidden.sum() + out.attention[:, :, 0].sum()
    grads = torch.autograd.grad(loss, [tgt_emb, *decoder.parameters()])
    return [out.features, out.state.hidden, out.attention, *grads]


@pytest.mark.parametrize(
    "make",
    [
        lambda: BahdanauDecoder("gru", E, H, HK, 2, 0.0, AdditiveScorer),
        lambda: LuongDecoder("gru", E, H, HK, 2, 0.0, ConcatScorer, input_feeding=True),
    ],
    ids=["bahdanau-additive", "luong-concat-input-feeding"],
)
def test_the_compiled_position_loop_equals_the_eager_one(make) -> None:
    """compile_loop changes kernels, not math: outputs and gradients match the eager loop, for
    batches and sources of other sizes, and the position is traced whole; validation (no
    gradients) runs the eager loop."""
    torch.manual_seed(0)
    eager = make()
    compiled = make()
    compiled.load_state_dict(eager.state_dict())
    assert compiled.compile_loop()
    counters.clear()
    for batch_size, source in ((3, 5), (4, 7), (5, 2)):
        expected = _teacher_forced_with_grads(eager, batch_size, source)
        got = _teacher_forced_with_grads(compiled, batch_size, source)
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # the whole position (attention and cell) is traced: no graph break leaves a part eager
    assert counters["frames"]["total"] == counters["frames"]["ok"] > 0
    assert not counters["graph_break"]
    counters.clear()
    compiled.eval()  # validation's loss: the eager loop, no compile for another mode
    with torch.no_grad():
        memory = compiled.init_memory(encoder_output("gru"))
        compiled(torch.randn(3, 6, E), DecoderState(torch.randn(2, 3, H)), memory)
    assert not counters["frames"]


def test_decoders_without_a_position_loop_have_nothing_to_compile() -> None:
    parallel_luong = LuongDecoder("gru", E, H, HK, 1, 0.0, GeneralScorer, input_feeding=False)
    assert not parallel_luong.compile_loop()
    assert not NoAttentionDecoder("gru", E, H, HK, 1, 0.0).compile_loop()
