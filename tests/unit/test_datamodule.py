from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from seq2attn.data import datamodule
from seq2attn.data.datamodule import Batch, TranslationDataModule
from seq2attn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from seq2attn.data.toy import ToyCorpus


def make(cache_dir, **overrides) -> TranslationDataModule:
    args = {
        "corpus": ToyCorpus(num_train=500, num_val=40, num_test=30, seed=11),
        "vocab_size": 300,
        "joint_vocab": True,
        "sp_model_type": "unigram",
        "character_coverage": 1.0,
        "max_tokens": 400,
        "max_sentences": None,
        "max_length": 64,
        "cache_dir": str(cache_dir),
        "seed": 0,
        "num_workers": 0,
    }
    dm = TranslationDataModule(**(args | overrides))
    dm.setup("fit")
    return dm


@pytest.fixture
def dm(tmp_path):
    return make(tmp_path)


def target_lengths(batch: Batch) -> torch.Tensor:
    return (batch.tgt_out != PAD_ID).sum(1) - 1  # without EOS


def test_batch_shapes_padding_and_bos_eos(dm):
    for batch in dm.train_dataloader():
        b, s = batch.src.shape
        assert batch.src_lengths.shape == batch.indices.shape == (b,)
        assert batch.tgt_in.shape == batch.tgt_out.shape and batch.tgt_in.shape[0] == b
        assert s == int(batch.src_lengths.max())
        positions = torch.arange(s)
        assert torch.equal(batch.src == PAD_ID, positions >= batch.src_lengths[:, None])
        n = target_lengths(batch)
        assert torch.all(batch.tgt_in[:, 0] == BOS_ID)
        assert torch.all(batch.tgt_out.gather(1, n[:, None]).squeeze(1) == EOS_ID)
        shifted = batch.tgt_out[:, :-1]
        assert torch.equal(batch.tgt_in[:, 1:], shifted.masked_fill(shifted == EOS_ID, PAD_ID))
        assert batch.num_target_tokens == int((n + 1).sum())
        assert batch.tgt_in.numel() <= 400 and batch.src.numel() <= 400


def test_batches_decode_to_the_references(dm):
    references, sources = dm.references("val"), dm.sources("val")
    for batch in dm.val_dataloader():
        for row, n, index in zip(batch.tgt_out, target_lengths(batch), batch.indices, strict=True):
            assert dm.tgt_tokenizer.decode([row[:n].tolist()]) == [references[index]]
        for row, n, index in zip(batch.src, batch.src_lengths, batch.indices, strict=True):
            assert dm.src_tokenizer.decode([row[:n].tolist()]) == [sources[index]]


def test_each_training_example_once_per_epoch_in_a_new_order(dm):
    loader = dm.train_dataloader()
    orders = []
    for number in range(2):
        loader.batch_sampler.set_epoch(number)
        orders.append([int(i) for batch in loader for i in batch.indices])
        assert sorted(orders[-1]) == list(range(500))
    assert orders[0] != orders[1]


def test_eval_shares_are_disjoint_and_cover_the_split(dm):
    for name, size in (("val", 40), ("test", 30)):
        seen = []
        for rank in range(2):
            dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
            seen += [int(i) for batch in getattr(dm, f"{name}_dataloader")() for i in batch.indices]
        assert sorted(seen) == list(range(size))


def test_second_setup_reuses_the_cache(tmp_path, monkeypatch, caplog):
    first = make(tmp_path)

    def fail(*args):
        raise AssertionError("train_sentencepiece called despite a cached tokenizer")

    monkeypatch.setattr(datamodule, "train_sentencepiece", fail)
    with caplog.at_level(logging.INFO, logger=datamodule.__name__):
        second = make(tmp_path)
    assert "reusing cached tokenizer" in caplog.text
    assert "encoding" not in caplog.text
    assert second.src_tokenizer.proto == first.src_tokenizer.proto
    assert [b.indices.tolist() for b in second.val_dataloader()] == [
        b.indices.tolist() for b in first.val_dataloader()
    ]


def test_other_tokenizer_settings_retrain(tmp_path, caplog):
    make(tmp_path)
    with caplog.at_level(logging.INFO, logger=datamodule.__name__):
        make(tmp_path, vocab_size=200)
    assert "training joint tokenizer" in caplog.text


def test_separate_vocabularies(tmp_path):
    dm = make(tmp_path, joint_vocab=False)
    assert dm.src_tokenizer is not dm.tgt_tokenizer
    assert dm.src_tokenizer.proto != dm.tgt_tokenizer.proto
    assert dm.src_tokenizer.pieces(dm.src_tokenizer.encode(["the dogs"])[0]) == ["▁the", "▁dogs"]


def test_joint_vocabulary_is_one_object(dm):
    assert dm.src_tokenizer is dm.tgt_tokenizer


def test_max_length_drops_long_training_pairs_only(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger=datamodule.__name__):
        dm = make(tmp_path, max_length=12)
    kept = [i for batch in dm.train_dataloader() for i in batch.indices.tolist()]
    lengths = [len(ids) for ids in dm.src_tokenizer.encode(dm.sources("train"))]
    lengths = [
        max(s, len(t))
        for s, t in zip(lengths, dm.tgt_tokenizer.encode(dm.references("train")), strict=True)
    ]
    assert sorted(kept) == [i for i, n in enumerate(lengths) if n <= 12]
    assert f"dropped {500 - len(kept)} of 500 training pairs" in caplog.text
    assert 0 < len(kept) < 500
    assert sum(len(b.indices) for b in dm.val_dataloader()) == 40


def test_workers_give_the_same_batches(tmp_path):
    serial = [b.indices.tolist() for b in make(tmp_path).train_dataloader()]
    parallel = [b.indices.tolist() for b in make(tmp_path, num_workers=2).train_dataloader()]
    assert parallel == serial


def test_split_access_errors(tmp_path, dm):
    with pytest.raises(KeyError, match="unknown split 'dev'"):
        dm.sources("dev")
    corpus = ToyCorpus(10, 2, 2)
    fresh = TranslationDataModule(
        corpus, 100, True, "unigram", 1.0, 100, None, 64, str(tmp_path), 0, 0
    )
    with pytest.raises(RuntimeError, match="setup"):
        fresh.references("val")
