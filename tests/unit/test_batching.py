from __future__ import annotations

import collections

import numpy as np
import pytest

from seq2attn.data.batching import TokenBudgetBatchSampler

N = 1000


@pytest.fixture(scope="module")
def lengths():
    rng = np.random.default_rng(0)
    src = rng.integers(1, 40, size=N)
    return src, np.maximum(1, src + rng.integers(-3, 4, size=N))


def make(lengths, **overrides):
    args = {"max_tokens": 300, "max_sentences": None, "shuffle": True, "seed": 1}
    return TokenBudgetBatchSampler(*lengths, **(args | overrides))


def epoch(sampler, number):
    sampler.set_epoch(number)
    return list(sampler)


def padded_cost(batch, src, tgt):
    return len(batch) * max(max(src[i], tgt[i] + 1) for i in batch)


def test_hand_computed_batches():
    # sizes max(s, t + 1) = 1, 2, 3, 4: [0, 1] costs 2 * 2; adding 2 would cost 3 * 3 > 6.
    sampler = TokenBudgetBatchSampler([1, 2, 3, 4], [0, 0, 0, 0], 6, None, False, 0)
    assert list(sampler) == [[0, 1], [2], [3]]
    assert len(sampler) == 3


def test_budget_respected_and_padding_small(lengths):
    src, tgt = lengths
    batches = epoch(make(lengths), 0)
    costs = [padded_cost(b, src, tgt) for b in batches]
    assert max(costs) <= 300
    real = np.maximum(src, tgt + 1).sum()
    assert sum(costs) < 1.1 * real  # length buckets: under 10 % padding


def test_max_sentences_alone_and_together(lengths):
    assert max(len(b) for b in epoch(make(lengths, max_tokens=None, max_sentences=7), 0)) == 7
    both = epoch(make(lengths, max_tokens=10_000, max_sentences=7), 0)
    assert max(len(b) for b in both) == 7


def test_oversized_example_is_a_batch_of_its_own():
    sampler = TokenBudgetBatchSampler([2, 2, 50, 2], [2, 2, 2, 2], 9, None, False, 0)
    assert sorted(map(sorted, sampler)) == [[0, 1, 3], [2]]


def test_each_example_exactly_once_per_epoch(lengths):
    sampler = make(lengths)
    for number in range(3):
        batches = epoch(sampler, number)
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(N))


def test_order_reproducible_per_epoch_and_different_across_epochs(lengths):
    first, second = make(lengths), make(lengths)
    assert epoch(first, 0) == epoch(second, 0)
    assert epoch(first, 1) == epoch(second, 1)
    assert epoch(first, 0) != epoch(first, 1)
    assert epoch(first, 0) != epoch(make(lengths, seed=2), 0)


def test_without_shuffle_batches_are_length_sorted(lengths):
    src, tgt = lengths
    sizes = [
        max(max(src[i], tgt[i] + 1) for i in b) for b in epoch(make(lengths, shuffle=False), 0)
    ]
    assert sizes == sorted(sizes)


@pytest.mark.parametrize("replicas", [2, 4])
@pytest.mark.parametrize("shuffle", [True, False])
def test_ranks_get_equal_counts_and_disjoint_shares(lengths, replicas, shuffle):
    src, tgt = lengths
    for number in range(2):
        shares = [
            epoch(make(lengths, shuffle=shuffle, num_replicas=replicas, rank=r), number)
            for r in range(replicas)
        ]
        counts = {len(share) for share in shares}
        assert counts == {len(make(lengths, num_replicas=replicas))}
        indices = [i for share in shares for b in share for i in b]
        assert sorted(indices) == list(range(N))  # union is everything, nothing twice
        assert max(padded_cost(b, src, tgt) for share in shares for b in share) <= 300


@pytest.mark.parametrize(("n", "replicas", "repeats"), [(3, 4, 1), (1, 2, 1), (2, 4, 2), (5, 4, 0)])
def test_batches_repeat_only_with_fewer_examples_than_ranks(n, replicas, repeats):
    shares = [
        list(TokenBudgetBatchSampler([1] * n, [1] * n, 1000, None, True, 0, replicas, r))
        for r in range(replicas)
    ]
    assert {len(share) for share in shares} == {1}  # one batch of 5 is halved into 4, not repeated
    seen = collections.Counter(i for share in shares for b in share for i in b)
    assert set(seen) == set(range(n))
    assert sum(seen.values()) - n == repeats


def test_invalid_arguments():
    with pytest.raises(ValueError, match="max_tokens or max_sentences"):
        TokenBudgetBatchSampler([1], [1], None, None, True, 0)
    with pytest.raises(ValueError, match="rank"):
        TokenBudgetBatchSampler([1], [1], 10, None, True, 0, num_replicas=2, rank=2)
