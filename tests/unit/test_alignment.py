from __future__ import annotations

import gzip
import math
from pathlib import Path

import pytest
import torch

from seq2attn.alignment import (
    AERCounts,
    Alignment,
    AlignmentFileError,
    AttentionAsAlignment,
    PieceAlignment,
    aer,
    argmax_links,
    attention_entropy,
    parse_pharaoh,
    project_to_pieces,
    read_pharaoh,
    word_of_pieces,
)


def alignment(sure: set[tuple[int, int]], possible_only: set[tuple[int, int]]) -> Alignment:
    return Alignment(frozenset(sure), frozenset(sure | possible_only))


def test_parse_pharaoh_sure_and_possible() -> None:
    parsed = parse_pharaoh("0-0 1-2 2?1")
    assert parsed.sure == {(0, 0), (1, 2)}
    assert parsed.possible == {(0, 0), (1, 2), (2, 1)}


def test_parse_pharaoh_empty_line() -> None:
    assert parse_pharaoh("") == Alignment(frozenset(), frozenset())


@pytest.mark.parametrize("line", ["0-x", "0-0 1:2", "1-", "-1-2"])
def test_parse_pharaoh_malformed(line: str) -> None:
    with pytest.raises(ValueError, match="malformed link"):
        parse_pharaoh(line)


def test_alignment_requires_sure_within_possible() -> None:
    with pytest.raises(ValueError, match="missing from the possible"):
        Alignment(frozenset({(0, 0), (1, 1)}), frozenset({(0, 0)}))


REFERENCE = alignment({(0, 0), (1, 1)}, {(2, 1)})


def test_aer_perfect_prediction() -> None:
    assert aer(frozenset({(0, 0), (1, 1)}), REFERENCE) == 0.0


def test_aer_empty_prediction() -> None:
    assert aer(frozenset(), REFERENCE) == 1.0


def test_aer_partial() -> None:
    # |A ∩ S| = 1, |A ∩ P| = 2, |A| = 3, |S| = 2: 1 - 3 / 5
    assert aer(frozenset({(0, 0), (2, 1), (2, 2)}), REFERENCE) == pytest.approx(0.4)


def test_aer_undefined_without_links() -> None:
    assert math.isnan(aer(frozenset(), alignment(set(), {(0, 0)})))


def test_corpus_aer_sums_counts() -> None:
    first = (frozenset({(0, 0), (2, 1), (2, 2)}), REFERENCE)  # AER 0.4
    second = (frozenset[tuple[int, int]](), alignment({(0, 0)}, set()))  # AER 1.0
    counts = AERCounts()
    for predicted, reference in (first, second):
        counts.add(predicted, reference)
    assert counts == AERCounts(predicted=3, sure=3, predicted_and_sure=1, predicted_and_possible=2)
    # 1 - (1 + 2) / (3 + 3) = 0.5, not the sentence mean (0.4 + 1.0) / 2 = 0.7
    assert counts.aer == pytest.approx(0.5)
    assert (aer(*first) + aer(*second)) / 2 == pytest.approx(0.7)


def test_word_of_pieces() -> None:
    assert word_of_pieces(["▁the", "▁big", "▁do", "gs"]) == [0, 1, 2, 2]
    assert word_of_pieces(["do", "gs", "▁ran"]) == [0, 0, 1]
    assert word_of_pieces([]) == []


def test_project_to_pieces() -> None:
    source = word_of_pieces(["▁the", "▁big", "▁do", "gs"])  # [0, 1, 2, 2]
    target = word_of_pieces(["▁die", "▁gro", "ßen", "▁Hunde"])  # [0, 1, 1, 2]
    projected = project_to_pieces(alignment({(0, 0), (2, 2)}, {(1, 1)}), source, target)
    assert projected.sure == {(0, 0), (2, 3), (3, 3)}
    assert projected.possible == {(0, 0), (2, 3), (3, 3), (1, 1), (1, 2)}


def test_project_to_pieces_rejects_word_without_pieces() -> None:
    with pytest.raises(ValueError, match="no pieces"):
        project_to_pieces(alignment({(3, 0)}, set()), [0, 1], [0])


def test_argmax_links_ties_go_to_lower_source_index() -> None:
    weights = torch.tensor(
        [
            [0.1, 0.6, 0.2, 0.1],
            [0.1, 0.1, 0.4, 0.4],  # tie between sources 2 and 3
            [0.0, 0.2, 0.3, 0.5],
        ]
    )
    assert argmax_links(weights) == {(1, 0), (2, 1), (3, 2)}


def entropy_inputs(garbage: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    weights = torch.tensor(
        [
            [[0.25, 0.25, 0.25, 0.25], [0.0, 1.0, 0.0, 0.0]],
            [[1 / 3, 1 / 3, 1 / 3, 0.0], garbage],  # last source position is padding
        ]
    )
    mask = torch.tensor([[True, True], [True, False]])
    return weights, mask


def test_attention_entropy_values() -> None:
    weights, mask = entropy_inputs([0.0, 0.0, 0.0, 0.0])
    per_row = attention_entropy(weights[:1, :1], mask[:1, :1])
    assert per_row.dim() == 0
    assert per_row.item() == pytest.approx(math.log(4))
    assert attention_entropy(weights[:1, 1:], mask[:1, 1:]).item() == 0.0
    expected = (math.log(4) + 0.0 + math.log(3)) / 3
    assert attention_entropy(weights, mask).item() == pytest.approx(expected)


@pytest.mark.parametrize("garbage", [[5.0, -1.0, float("nan"), 2.0], [0.9, 0.05, 0.05, 0.0]])
def test_attention_entropy_ignores_padded_target_rows(garbage: list[float]) -> None:
    weights, mask = entropy_inputs(garbage)
    expected = (math.log(4) + 0.0 + math.log(3)) / 3
    assert attention_entropy(weights, mask).item() == pytest.approx(expected)


def test_attention_entropy_gradient_is_finite_at_zero_weights() -> None:
    weights, mask = entropy_inputs([0.0, 0.0, 0.0, 0.0])
    weights.requires_grad_(True)
    attention_entropy(weights, mask).backward()
    assert weights.grad is not None
    assert torch.isfinite(weights.grad).all()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "align.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_read_pharaoh_round_trip(tmp_path: Path) -> None:
    path = write(tmp_path, "0-0 1-1\n\n0?1 1-0\n")
    assert read_pharaoh(path, [2, 1, 2], [2, 1, 2]) == [
        alignment({(0, 0), (1, 1)}, set()),
        alignment(set(), set()),
        alignment({(1, 0)}, {(0, 1)}),
    ]


def test_read_pharaoh_link_out_of_range(tmp_path: Path) -> None:
    path = write(tmp_path, "0-0\n0-0 1-5\n")
    with pytest.raises(AlignmentFileError) as error:
        read_pharaoh(path, [2, 2], [3, 3])
    assert str(error.value) == (
        f"{path}, line 2: link 1-5 is outside the sentence pair (2 source words, 3 target words)"
    )


def test_read_pharaoh_malformed_token(tmp_path: Path) -> None:
    path = write(tmp_path, "0-0\n0-0\n0-x\n")
    with pytest.raises(AlignmentFileError, match="line 3: malformed link '0-x'"):
        read_pharaoh(path, [1, 1, 1], [1, 1, 1])


def test_read_pharaoh_wrong_line_count(tmp_path: Path) -> None:
    path = write(tmp_path, "0-0\n0-0\n")
    with pytest.raises(AlignmentFileError) as error:
        read_pharaoh(path, [1, 1, 1], [1, 1, 1])
    assert str(error.value) == f"{path} has 2 lines, the corpus split has 3 sentence pairs"


def test_read_pharaoh_gzip_crlf_and_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "gold.align.gz"
    path.write_bytes(gzip.compress(b"0-0\r\n0?0\r\n"))
    assert read_pharaoh(path, [1, 1], [1, 1]) == [
        alignment({(0, 0)}, set()),
        alignment(set(), {(0, 0)}),
    ]
    bad = tmp_path / "bad.align"
    bad.write_bytes(b"0-0\n0-\xff0\n")
    with pytest.raises(AlignmentFileError, match=r"bad\.align, line 2: bytes that are not UTF-8"):
        read_pharaoh(bad, [1, 1], [1, 1])


def test_uniform_attention_has_maximal_entropy_and_the_aer_of_its_ties() -> None:
    """Rows uniform over each sentence's real source pieces: entropy log S_b per row, and every
    argmax tie goes to source 0, so the predicted links are {(0, t)}."""
    src_lengths = torch.tensor([3, 2])
    target_mask = torch.tensor([[True, True, True], [True, True, False]])  # 2 and 1 pieces + EOS
    weights = torch.zeros(2, 3, 3)
    weights[0, :, :3] = 1 / 3
    weights[1, :, :2] = 1 / 2
    weights[1, 2] = torch.tensor([0.9, 0.1, 0.0])  # a padding row: never counted
    words = Alignment(frozenset({(0, 0), (2, 1)}), frozenset({(0, 0), (2, 1), (0, 1)}))
    gold = [
        PieceAlignment(words, [0, 1, 2], [0, 1]),  # a piece per word
        None,  # no gold alignment for the second sentence
    ]
    scores = AttentionAsAlignment()
    scores.add(weights, target_mask, src_lengths, gold)
    assert scores.rows == 5
    assert scores.entropy == pytest.approx((3 * math.log(3) + 2 * math.log(2)) / 5)
    # A = {(0, 0), (0, 1)}: |A∩S| = 1, |A∩P| = 2, |A| = 2, |S| = 2 -> 1 - 3/4
    assert scores.counts.aer == pytest.approx(0.25)
    again = AttentionAsAlignment.from_totals(scores.totals())
    assert again == scores


def test_aer_reads_piece_links_as_word_links_so_perfect_attention_scores_zero() -> None:
    """Source words [0 0 1] and target words [0 0 1] by piece; both pieces of target word 0
    attend to a piece of source word 0, the piece of target word 1 to source word 1."""
    gold = PieceAlignment(alignment({(0, 0), (1, 1)}, set()), [0, 0, 1], [0, 0, 1])
    weights = torch.tensor([[[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.0, 0.1, 0.9], [1.0, 0, 0]]])
    scores = AttentionAsAlignment()
    scores.add(weights, torch.ones(1, 4, dtype=torch.bool), torch.tensor([3]), [gold])
    assert scores.counts.aer == 0.0
    assert gold.word_links({(1, 0), (0, 1), (2, 2)}) == {(0, 0), (1, 1)}
