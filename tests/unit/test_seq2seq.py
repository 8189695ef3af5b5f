"""Seq2Seq wiring: output shapes, embedding tying, sizes and argument errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seq2attn.loss import training_nll
from seq2attn.models.decoders import BahdanauDecoder, LuongDecoder, NoAttentionDecoder
from seq2attn.models.scorers import DotScorer, GeneralScorer
from seq2attn.models.seq2seq import Seq2Seq, Seq2SeqOutput

PAD, BOS, EOS = 0, 2, 3


def make_model(**overrides) -> Seq2Seq:
    torch.manual_seed(0)
    args = dict(
        src_vocab_size=11,
        tgt_vocab_size=13,
        cell="gru",
        attention="luong",
        scorer=GeneralScorer,
        input_feeding=False,
        embedding_size=5,
        hidden_size=6,
        encoder_hidden_size=None,
        encoder_layers=1,
        decoder_layers=2,
        bidirectional=True,
        dropout=0.0,
        bridge="linear",
        tie_embeddings=False,
        reverse_source=False,
        pad_id=PAD,
    )
    return Seq2Seq(**(args | overrides))


SRC = torch.tensor([[4, 5, 6, 7], [8, 9, PAD, PAD]])
LENGTHS = torch.tensor([4, 2])
TGT_IN = torch.tensor([[BOS, 4, 5], [BOS, 6, PAD]])


@pytest.mark.parametrize(
    ("attention", "decoder_class"),
    [("none", NoAttentionDecoder), ("bahdanau", BahdanauDecoder), ("luong", LuongDecoder)],
)
def test_output_shapes(attention: str, decoder_class: type) -> None:
    model = make_model(attention=attention)
    assert isinstance(model.decoder, decoder_class)
    out = model(SRC, LENGTHS, TGT_IN)
    assert out.logits.shape == (2, 3, 13)
    assert out.decoder_inputs.shape == (2, 3)
    assert out.attention is None if attention == "none" else out.attention.shape == (2, 3, 4)
    memory, state = model.encode(SRC, LENGTHS)
    assert memory.keys.shape == (2, 4, 6) and state.hidden.shape == (2, 2, 6)
    logits, _, attention_row = model.step(TGT_IN[:, 0], state, memory)
    assert logits.shape == (2, 13)
    assert attention_row is None if attention == "none" else attention_row.shape == (2, 4)


def test_tie_embeddings_shares_storage() -> None:
    model = make_model(tie_embeddings=True, embedding_size=6)
    assert model.output_layer.weight is model.tgt_embedding.weight
    assert model.output_layer.weight.data_ptr() == model.tgt_embedding.weight.data_ptr()
    assert isinstance(model.output_projection, nn.Identity)
    assert model(SRC, LENGTHS, TGT_IN).logits.shape == (2, 3, 13)


def test_tie_embeddings_projects_when_sizes_differ() -> None:
    model = make_model(tie_embeddings=True, embedding_size=5, hidden_size=6)
    assert model.output_layer.weight.data_ptr() == model.tgt_embedding.weight.data_ptr()
    assert model.output_projection.weight.shape == (5, 6)  # hidden 6 -> embedding 5
    assert model(SRC, LENGTHS, TGT_IN).logits.shape == (2, 3, 13)


def test_tied_embeddings_start_at_a_linear_layers_scale() -> None:
    # nn.Embedding's N(0, 1) rows as output weights would make the first logits ~30x larger
    torch.manual_seed(0)
    tied = make_model(tie_embeddings=True, embedding_size=64, hidden_size=64, tgt_vocab_size=500)
    weight = tied.tgt_embedding.weight
    assert weight[PAD].abs().sum() == 0  # the padding row stays zero
    assert weight[PAD + 1 :].std().item() == pytest.approx(64**-0.5, rel=0.05)
    untied = make_model(embedding_size=64, hidden_size=64, tgt_vocab_size=500)
    assert untied.tgt_embedding.weight[PAD + 1 :].std().item() == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("tie", [False, True])
def test_param_init_draws_every_weight_but_the_tables_from_one_uniform(tie: bool) -> None:
    model = make_model(param_init=0.1, tie_embeddings=tie, embedding_size=64, hidden_size=64)
    tables = {id(model.src_embedding.weight), id(model.tgt_embedding.weight)}
    drawn = torch.cat([p.flatten() for p in model.parameters() if id(p) not in tables])
    assert drawn.abs().max().item() <= 0.1
    assert drawn.std().item() == pytest.approx(0.1 / 3**0.5, rel=0.05)  # U(-a, a): a / sqrt(3)
    default = make_model(tie_embeddings=tie, embedding_size=64, hidden_size=64)
    for name in ("src_embedding", "tgt_embedding"):  # the tables keep their own start
        torch.testing.assert_close(
            getattr(model, name).weight.std(), getattr(default, name).weight.std()
        )
    # PyTorch's own bound for this GRU is 1 / sqrt(64) = 0.125
    assert default.decoder.rnn.weight_hh_l0.abs().max().item() > 0.1


def test_share_embeddings_with_tying_is_one_matrix_three_ways() -> None:
    model = make_model(
        share_embeddings=True, tie_embeddings=True, src_vocab_size=13, embedding_size=6
    )
    assert model.src_embedding.weight is model.tgt_embedding.weight is model.output_layer.weight
    assert model(SRC, LENGTHS, TGT_IN).logits.shape == (2, 3, 13)
    with torch.no_grad():
        model.src_embedding.weight.add_(torch.randn_like(model.src_embedding.weight))
    reloaded = make_model(
        share_embeddings=True, tie_embeddings=True, src_vocab_size=13, embedding_size=6
    )
    reloaded.load_state_dict(model.state_dict())  # a checkpoint round trip keeps one matrix
    assert reloaded.src_embedding.weight is reloaded.tgt_embedding.weight
    torch.testing.assert_close(reloaded.output_layer.weight, model.src_embedding.weight)


def test_share_embeddings_needs_equal_vocabularies() -> None:
    with pytest.raises(ValueError, match="source 11 and target 13 pieces"):
        make_model(share_embeddings=True)


def test_untied_output_layer_is_separate() -> None:
    model = make_model()
    assert model.output_layer.weight.shape == (13, 6)
    assert model.output_layer.weight.data_ptr() != model.tgt_embedding.weight.data_ptr()


@pytest.mark.parametrize(
    ("bidirectional", "encoder_hidden_size", "memory_size"),
    [(True, None, 6), (False, None, 6), (True, 5, 10), (False, 4, 4)],
)
def test_encoder_size_defaults(
    bidirectional: bool, encoder_hidden_size: int | None, memory_size: int
) -> None:
    model = make_model(bidirectional=bidirectional, encoder_hidden_size=encoder_hidden_size)
    assert model.encoder.output_size == memory_size
    assert model.encode(SRC, LENGTHS)[0].keys.shape == (2, 4, memory_size)


def test_padding_embeddings_are_zero() -> None:
    model = make_model()
    assert (model.src_embedding.weight[PAD] == 0).all()
    assert (model.tgt_embedding.weight[PAD] == 0).all()


def test_input_feeding_needs_luong() -> None:
    with pytest.raises(ValueError, match="input_feeding=True needs attention=luong"):
        make_model(attention="bahdanau", input_feeding=True)


def test_dot_scorer_size_error_surfaces() -> None:
    with pytest.raises(ValueError, match="query_size=6 and key_size=10"):
        make_model(scorer=DotScorer, encoder_hidden_size=5)


@pytest.mark.parametrize("attention", ["luong", "none"])
def test_two_pass_feeds_the_first_pass_predictions(attention: str) -> None:
    model = make_model(attention=attention).eval()
    tgt_in = torch.tensor([[BOS, 4, 5, 6], [BOS, 6, 7, 8]])
    first = model(SRC, LENGTHS, tgt_in)
    out = model(SRC, LENGTHS, tgt_in, teacher_forcing_ratio=0.0, two_pass=True)
    assert torch.equal(out.decoder_inputs[:, 0], tgt_in[:, 0])
    assert torch.equal(out.decoder_inputs[:, 1:], first.logits.argmax(-1)[:, :-1])
    second = model(SRC, LENGTHS, out.decoder_inputs)
    torch.testing.assert_close(out.logits, second.logits)


@pytest.mark.parametrize("attention", ["bahdanau", "luong", "none"])
def test_free_running_feeds_its_own_argmax_and_draws_no_random_numbers(attention: str) -> None:
    model = make_model(attention=attention).eval()
    tgt_in = torch.tensor([[BOS, 4, 5, 6], [BOS, 6, 7, 8]])
    before = torch.get_rng_state()
    out = model(SRC, LENGTHS, tgt_in, teacher_forcing_ratio=0.0)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(out.decoder_inputs[:, 0], tgt_in[:, 0])
    assert torch.equal(out.decoder_inputs[:, 1:], out.logits.argmax(-1)[:, :-1])
    # the same as running the model teacher-forced on the tokens it fed itself
    torch.testing.assert_close(model(SRC, LENGTHS, out.decoder_inputs).logits, out.logits)


def test_two_pass_mixes_gold_and_predicted_tokens() -> None:
    model = make_model().eval()
    tgt_in = torch.randint(4, 13, (64, 6))
    tgt_in[:, 0] = BOS
    src = torch.randint(4, 11, (64, 4))
    predicted = model(src, torch.full((64,), 4), tgt_in).logits.argmax(-1)[:, :-1]
    torch.manual_seed(1)
    fed = model(src, torch.full((64,), 4), tgt_in, 0.5, two_pass=True).decoder_inputs[:, 1:]
    from_gold = fed == tgt_in[:, 1:]
    from_model = fed == predicted
    assert bool((from_gold | from_model).all())
    assert 0.3 < from_gold.float().mean().item() < 0.8


def test_two_pass_needs_a_parallel_decoder() -> None:
    with pytest.raises(ValueError, match="two-pass scheduled sampling needs a parallel decoder"):
        make_model(attention="bahdanau")(SRC, LENGTHS, TGT_IN, 0.5, two_pass=True)


@pytest.mark.parametrize(
    "overrides",
    [{"attention": "bahdanau"}, {"attention": "luong"}, {"tie_embeddings": True}],
    ids=["bahdanau", "luong", "tied"],
)
def test_fused_training_loss_equals_the_loss_of_the_logits(overrides: dict) -> None:
    model = make_model(**overrides)
    tgt_out = torch.tensor([[4, 5, EOS], [6, EOS, PAD]])
    fused = training_nll(model, model(SRC, LENGTHS, TGT_IN, compute_logits=False), tgt_out, 0.1)
    logits = model(SRC, LENGTHS, TGT_IN).logits
    reference = training_nll(model, Seq2SeqOutput(logits, None, TGT_IN), tgt_out, 0.1)
    torch.testing.assert_close(fused, reference)
    params = [p for p in model.parameters() if p.requires_grad]
    for got, want in zip(
        torch.autograd.grad(fused, params), torch.autograd.grad(reference, params), strict=True
    ):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("side", ["source", "target"])
def test_word_dropout_drops_whole_input_embeddings_while_training(side: str) -> None:
    model = make_model(**{f"{side}_word_dropout": 0.5})
    seen: list[torch.Tensor] = []
    module = model.encoder if side == "source" else model.decoder
    module.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0]))
    tokens = SRC if side == "source" else TGT_IN
    table = model.src_embedding if side == "source" else model.tgt_embedding
    torch.manual_seed(3)
    model.train()(SRC, LENGTHS, TGT_IN)
    dropped = (seen[0] == 0).all(dim=-1) & (tokens != PAD)
    kept = (seen[0] != 0).all(dim=-1)
    assert dropped.any() and kept.any() and (dropped | kept | (tokens == PAD)).all()
    torch.testing.assert_close(seen[0][kept], table(tokens)[kept] * 2.0)
    reference = make_model()  # the same draws of parameters: word dropout has none
    model.eval()
    reference.eval()
    torch.testing.assert_close(
        model(SRC, LENGTHS, TGT_IN).logits, reference(SRC, LENGTHS, TGT_IN).logits
    )


def test_target_word_dropout_reaches_every_step_of_the_sampling_loop() -> None:
    model = make_model(target_word_dropout=0.5).train()
    inputs: list[torch.Tensor] = []
    model.target_word_dropout.register_forward_hook(lambda _, args, out: inputs.append(out))
    torch.manual_seed(4)
    model(SRC, LENGTHS, TGT_IN, teacher_forcing_ratio=0.5)
    assert [x.shape for x in inputs] == [(2, 5)] * TGT_IN.size(1)  # one (B, E) draw a step
    rows = torch.cat(inputs)
    assert (rows == 0).all(dim=1).any() and (rows != 0).all(dim=1).any()
