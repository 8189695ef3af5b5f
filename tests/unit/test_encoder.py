"""RNNEncoder: padding invariance, batch invariance, source reversal, direction layout."""

from __future__ import annotations

import pytest
import torch

from seq2attn.models.encoder import RNNEncoder, reverse_padded

CELLS = ["rnn", "gru", "lstm"]


def make_encoder(cell: str, bidirectional: bool, reverse_source: bool = False) -> RNNEncoder:
    torch.manual_seed(0)
    return RNNEncoder(cell, 3, 4, 2, bidirectional, dropout=0.0, reverse_source=reverse_source)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings (B=3, S=4, E=3), zero at padding, and lengths."""
    torch.manual_seed(1)
    lengths = torch.tensor([4, 2, 3])
    pad = torch.arange(4).unsqueeze(0) >= lengths.unsqueeze(1)
    return torch.randn(3, 4, 3).masked_fill(pad.unsqueeze(-1), 0.0), lengths


def test_reverse_padded_hand_example() -> None:
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    assert reverse_padded(x, torch.tensor([3, 2])).tolist() == [[3, 2, 1, 0], [5, 4, 0, 0]]


@pytest.mark.parametrize("reverse_source", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_longer_padding_changes_nothing(
    cell: str, bidirectional: bool, reverse_source: bool
) -> None:
    encoder = make_encoder(cell, bidirectional, reverse_source).eval()
    emb, lengths = batch()
    short = encoder(emb, lengths)
    long = encoder(torch.cat([emb, torch.randn(3, 3, 3)], dim=1), lengths)
    torch.testing.assert_close(long.memory[:, :4], short.memory)
    assert (long.memory[:, 4:] == 0).all()
    assert (short.memory.masked_select(short.src_pad_mask.unsqueeze(-1)) == 0).all()
    torch.testing.assert_close(long.final_hidden, short.final_hidden)
    assert long.src_pad_mask[:, 4:].all()
    assert short.final_hidden.shape == (2, 3, encoder.output_size)
    assert (short.final_cell is None) == (cell != "lstm")


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_sentence_alone_equals_inside_batch(cell: str, bidirectional: bool) -> None:
    encoder = make_encoder(cell, bidirectional).eval()
    emb, lengths = batch()
    together = encoder(emb, lengths)
    alone = encoder(emb[1:2, :2], lengths[1:2])
    torch.testing.assert_close(alone.memory, together.memory[1:2, :2])
    torch.testing.assert_close(alone.final_hidden, together.final_hidden[:, 1:2])


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_reverse_source_equals_plain_encoder_on_reversed_input(
    cell: str, bidirectional: bool
) -> None:
    reversed_encoder = make_encoder(cell, bidirectional, reverse_source=True).eval()
    plain = make_encoder(cell, bidirectional).eval()
    plain.load_state_dict(reversed_encoder.state_dict())
    emb, lengths = batch()
    expected = plain(reverse_padded(emb, lengths), lengths)
    actual = reversed_encoder(emb, lengths)
    torch.testing.assert_close(actual.memory, reverse_padded(expected.memory, lengths))
    torch.testing.assert_close(actual.final_hidden, expected.final_hidden)
    # memory[:, i] belongs to source token i: the first sentence has no padding, so a plain
    # flip of its sequence axis undoes the reversal.
    first = plain(emb[:1].flip(1), lengths[:1]).memory.flip(1)
    torch.testing.assert_close(actual.memory[:1], first)


def test_bidirectional_final_hidden_concatenates_directions_per_layer() -> None:
    encoder = RNNEncoder("gru", 3, 4, 1, True, dropout=0.0, reverse_source=False)
    emb, lengths = batch()
    out = encoder(emb, lengths)
    for b, n in enumerate(lengths.tolist()):
        forward_final = out.memory[b, n - 1, :4]  # forward direction ends at the last token
        backward_final = out.memory[b, 0, 4:]  # backward direction ends at the first token
        torch.testing.assert_close(
            out.final_hidden[0, b], torch.cat([forward_final, backward_final])
        )


def test_summary_is_mean_over_real_positions() -> None:
    encoder = make_encoder("gru", False)
    emb, lengths = batch()
    out = encoder(emb, lengths)
    expected = torch.stack([out.memory[b, :n].mean(0) for b, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(out.summary, expected)


def test_unknown_cell_lists_choices() -> None:
    with pytest.raises(ValueError, match=r"\['gru', 'lstm', 'rnn'\], got 'tanh'"):
        RNNEncoder("tanh", 3, 4, 1, False, 0.0, False)  # type: ignore[arg-type]


@pytest.mark.parametrize("cell", CELLS)
def test_under_cpu_bf16_autocast_the_packed_recurrence_runs_in_fp32(cell: str) -> None:
    # a packed batch's size is its token count: in bf16, oneDNN would keep a kernel per count
    encoder = make_encoder(cell, bidirectional=True).eval()
    emb, lengths = batch()
    reference = encoder(emb, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = encoder(emb, lengths)
    assert mixed.memory.dtype == mixed.final_hidden.dtype == torch.float32
    torch.testing.assert_close(mixed.memory, reference.memory, rtol=0, atol=0)
    torch.testing.assert_close(mixed.final_hidden, reference.final_hidden, rtol=0, atol=0)
