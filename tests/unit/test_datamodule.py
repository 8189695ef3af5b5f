from __future__ import annotations

import itertools
import logging
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from seq2attn.alignment import Alignment
from seq2attn.callbacks import ResumeCheckpoint
from seq2attn.config import ConfigError, validate
from seq2attn.data import datamodule
from seq2attn.data.corpus import CorpusError
from seq2attn.data.datamodule import TranslationDataModule, build_datamodule
from seq2attn.data.dataset import Batch
from seq2attn.data.readers import TextPairsCorpus
from seq2attn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, train_sentencepiece
from seq2attn.data.toy import ToyCorpus
from seq2attn.tasks import train
from tests.conftest import Compose


def make(cache_dir, **overrides) -> TranslationDataModule:
    args = {
        "corpus": ToyCorpus(num_train=500, num_val=40, num_test=30, seed=11),
        "normalization": "NFKC",
        "drop_empty": True,
        "max_chars": 1000,
        "min_length": 1,
        "max_length": 64,
        "max_length_ratio": None,
        "spm_model": None,
        "vocab_size": 300,
        "joint_vocab": True,
        "sp_model_type": "unigram",
        "character_coverage": 1.0,
        "max_tokens": 400,
        "max_sentences": None,
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
    for number in range(2):  # each pass over the loader is the next epoch
        orders.append([int(i) for batch in loader for i in batch.indices])
        assert sorted(orders[-1]) == list(range(500))
        assert loader.batch_sampler.epoch == number
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
    with caplog.at_level(logging.INFO, logger="seq2attn.data"):
        second = make(tmp_path)
    assert "reusing cached tokenizer" in caplog.text
    assert "train split fully cached: no tokenizer training and no re-tokenising" in caplog.text
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


def test_given_sentencepiece_model_is_used_for_both_sides(tmp_path, dm, caplog):
    model = tmp_path / "given.model"
    model.write_bytes(dm.src_tokenizer.proto)
    with caplog.at_level(logging.INFO, logger=datamodule.__name__):
        given = make(tmp_path / "other-cache", spm_model=str(model))
    assert "training" not in caplog.text and f"using the SentencePiece model {model}" in caplog.text
    assert given.src_tokenizer is given.tgt_tokenizer
    assert given.src_tokenizer.proto == dm.src_tokenizer.proto
    assert (
        next(iter(given.val_dataloader())).src.tolist()
        == next(iter(dm.val_dataloader())).src.tolist()
    )


def test_subword_sampling_refuses_a_model_that_cannot_sample(tmp_path, dm):
    model = tmp_path / "char.model"
    model.write_bytes(train_sentencepiece(dm.sources("train"), 300, "char", 1.0))
    with pytest.raises(CorpusError, match=r"data\.subword_alpha=0\.1: .*cannot sample"):
        make(tmp_path / "other-cache", spm_model=str(model), subword_alpha=0.1)


def test_given_sentencepiece_model_must_exist_and_be_one(tmp_path):
    with pytest.raises(CorpusError, match=r"data.spm_model=.*missing.model: file not found"):
        make(tmp_path, spm_model=str(tmp_path / "missing.model"))
    (tmp_path / "bad.model").write_text("not a model")
    with pytest.raises(CorpusError, match=r"bad.model: not a usable SentencePiece model"):
        make(tmp_path, spm_model=str(tmp_path / "bad.model"))


def test_joint_vocabulary_is_one_object(dm):
    assert dm.src_tokenizer is dm.tgt_tokenizer


def test_max_length_drops_long_training_pairs_only(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="seq2attn.data"):
        dm = make(tmp_path, max_length=12)
    kept = [i for batch in dm.train_dataloader() for i in batch.indices.tolist()]
    lengths = [len(ids) for ids in dm.src_tokenizer.encode(dm.sources("train"))]
    lengths = [
        max(s, len(t))
        for s, t in zip(lengths, dm.tgt_tokenizer.encode(dm.references("train")), strict=True)
    ]
    assert sorted(kept) == [i for i, n in enumerate(lengths) if n <= 12]
    assert (
        f"kept {len(kept)} of 500 pairs (min_length=1 removed 0, max_length=12 removed"
        in caplog.text
    )
    assert 0 < len(kept) < 500
    assert sum(len(b.indices) for b in dm.val_dataloader()) == 40


def test_workers_give_the_same_batches(tmp_path):
    serial = [b.indices.tolist() for b in make(tmp_path).train_dataloader()]
    parallel = [b.indices.tolist() for b in make(tmp_path, num_workers=2).train_dataloader()]
    assert parallel == serial


def pieces_by_index(loader) -> dict[int, tuple[list[int], list[int]]]:
    """Source and target ids (without padding, BOS and EOS) of every example a loader yields."""
    pieces = {}
    for batch in loader:
        for row, index in enumerate(batch.indices.tolist()):
            n = int(target_lengths(batch)[row])
            source = batch.src[row, : int(batch.src_lengths[row])].tolist()
            pieces[index] = source, batch.tgt_out[row, :n].tolist()
    return pieces


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_subword_sampling_segments_training_pairs_anew_each_epoch(tmp_path, model_type):
    plain = make(tmp_path, sp_model_type=model_type)
    sampled = make(tmp_path, sp_model_type=model_type, subword_alpha=0.5)
    tokenizer, texts = sampled.src_tokenizer, sampled.sources("train")
    best = pieces_by_index(plain.train_dataloader())
    loader = sampled.train_dataloader()
    epochs = [pieces_by_index(loader), pieces_by_index(loader)]  # epochs 0 and 1
    epochs.append(pieces_by_index(sampled.train_dataloader()))  # epoch 0 of a new loader
    assert sorted(epochs[0]) == sorted(best) == list(range(500))
    for pieces in epochs[:2]:
        # every draw spells the same sentence, and most differ from the one best segmentation
        assert all(tokenizer.decode([pieces[i][0]]) == [texts[i]] for i in pieces)
        assert sum(pieces[i] != best[i] for i in best) > 250
    assert sum(epochs[0][i] != epochs[1][i] for i in best) > 250  # a new draw each epoch
    assert epochs[2] == epochs[0]  # the draw is a function of (seed, epoch, example)
    # a loader resumed in epoch 1 gives what the uninterrupted epoch gave from its 4th batch on
    loader = sampled.train_dataloader()
    next(iter(loader))
    whole = [pieces_by_index([batch]) for batch in loader]
    loader.load_state_dict({"epoch": 1, "batches_done": 3})
    assert [pieces_by_index([batch]) for batch in loader] == whole[3:]
    # evaluation keeps the one best segmentation
    for split in ("val", "test"):
        assert pieces_by_index(sampled._loader(split, False)) == pieces_by_index(
            plain._loader(split, False)
        )


def test_subword_sampling_from_the_n_best_and_per_seed(tmp_path):
    def drawn(**settings) -> dict[int, tuple[list[int], list[int]]]:
        return pieces_by_index(make(tmp_path, **settings).train_dataloader())

    best, two_best, all_seg = (
        drawn(),
        drawn(subword_alpha=1.0, subword_nbest=2),
        drawn(subword_alpha=1.0),
    )
    other_seed = drawn(subword_alpha=1.0, seed=1)
    # the 2 best segmentations are closer to the best than draws from all of them
    changed = [sum(d[i] != best[i] for i in best) for d in (two_best, all_seg)]
    assert 0 < changed[0] < changed[1]
    assert sum(other_seed[i] != all_seg[i] for i in best) > 100


class Recorder(L.LightningModule):
    """Records what a real fit feeds it: each step's (index, source pieces) per example."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.steps: list[list[tuple[int, list[int]]]] = []
        self.epoch_starts: list[int] = []

    def on_train_epoch_start(self) -> None:
        self.epoch_starts.append(len(self.steps))

    def training_step(self, batch: Batch, _: int) -> torch.Tensor:
        examples = zip(batch.indices.tolist(), batch.src, batch.src_lengths.tolist(), strict=True)
        self.steps.append([(i, row[:n].tolist()) for i, row, n in examples])
        return self.weight.sum() * 0.0

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def fit(
    datamodule: TranslationDataModule,
    callbacks: list[L.Callback] | None = None,
    ckpt_path: Path | None = None,
    **limits: int,
) -> Recorder:
    """A real fit of the recorder (``limits``: max_epochs or max_steps), resumed if given a
    checkpoint."""
    recorder = Recorder()
    callbacks = callbacks or []
    trainer = L.Trainer(
        **({"max_epochs": -1} | limits),
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        use_distributed_sampler=False,
        callbacks=callbacks,
    )
    trainer.fit(recorder, datamodule=datamodule, ckpt_path=ckpt_path)
    return recorder


@pytest.mark.timeout(120)
def test_a_real_fit_reorders_and_resegments_every_epoch(tmp_path):
    recorder = fit(make(tmp_path, subword_alpha=0.5), max_epochs=3)
    starts = [*recorder.epoch_starts, len(recorder.steps)]
    epochs = [
        [pair for step in recorder.steps[a:b] for pair in step]
        for a, b in itertools.pairwise(starts)
    ]
    orders = [[index for index, _ in epoch] for epoch in epochs]
    assert len(orders) == 3 and all(sorted(order) == list(range(500)) for order in orders)
    assert orders[0] != orders[1] != orders[2] != orders[0]  # each epoch its own batch order
    pieces = [dict(epoch) for epoch in epochs]
    assert sum(pieces[0][i] != pieces[1][i] for i in range(500)) > 250  # and its own draw


@pytest.mark.timeout(120)
@pytest.mark.parametrize("stops", [(0.5, 1.5), (0.25, 0.75), (1.0, 2.0), (1.5, 2.0)])
def test_runs_stopped_and_given_more_steps_train_the_uninterrupted_batches(tmp_path, stops):
    per_epoch = len(make(tmp_path).train_dataloader())
    total = int(3.5 * per_epoch)
    whole = fit(make(tmp_path, subword_alpha=0.5), max_steps=total).steps
    resumed, checkpoint = [], None
    for number, stop in enumerate([*(int(s * per_epoch) for s in stops), total]):
        folder = tmp_path / f"part{number}"  # the run's own last.ckpt at its end, as train.py
        datamodule = make(tmp_path, subword_alpha=0.5)
        run = fit(datamodule, [ResumeCheckpoint(str(folder))], checkpoint, max_steps=stop)
        resumed += run.steps
        checkpoint = folder / "last.ckpt"
    assert resumed == whole


@pytest.mark.timeout(120)
@pytest.mark.parametrize("every", [19, 14])
def test_a_run_resumed_from_a_checkpoint_written_during_training_goes_on_as_before(tmp_path, every):
    per_epoch = len(make(tmp_path).train_dataloader())
    assert per_epoch == 19  # so that every=19 writes at an epoch's last batch
    saving = ModelCheckpoint(tmp_path / "ckpt", "{step}", every_n_train_steps=every, save_top_k=-1)
    whole = fit(make(tmp_path), [saving], max_steps=3 * per_epoch).steps
    written = tmp_path / "ckpt" / f"step={2 * every}.ckpt"
    resumed = fit(make(tmp_path), [], written, max_steps=3 * per_epoch).steps
    assert resumed == whole[2 * every :]


def test_split_access_errors(tmp_path, dm):
    with pytest.raises(KeyError, match="unknown split 'dev'"):
        dm.sources("dev")
    fresh = TranslationDataModule(
        ToyCorpus(10, 2, 2), "none", True, 100, 1, 64, None, None, 100, True, "unigram", 1.0,
        100, None, str(tmp_path), 0, 0,
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="setup"):
        fresh.references("val")


# --- file corpora: cache keys, interruptions, bad input -------------------------------------------

TOY_CORPUS = ToyCorpus(num_train=300, num_val=20, num_test=20, seed=3)
TOY = TOY_CORPUS.splits()


def write_pairs(folder: Path, lines: dict[str, tuple[list[str], list[str]]] | None = None) -> dict:
    """``{split}.src/.tgt`` files of the toy splits (or ``lines``); -> TextPairsCorpus args."""
    folder.mkdir(parents=True, exist_ok=True)
    args = {}
    for split, corpus in TOY.items():
        src, tgt = (lines or {}).get(split, (corpus.src, corpus.tgt))
        for side, texts in (("src", src), ("tgt", tgt)):
            path = folder / f"{split}.{side}"
            path.write_text("".join(t + "\n" for t in texts))
            args[f"{split}_{side}"] = str(path)
    return args


def make_files(cache_dir: Path, files: dict, **overrides) -> TranslationDataModule:
    return make(cache_dir, corpus=TextPairsCorpus(**files), **overrides)


def cache_files(cache_dir: Path) -> set[str]:
    return set(os.listdir(cache_dir))


def test_cache_keys_change_with_data_and_settings_only(tmp_path):
    cache, files = tmp_path / "cache", write_pairs(tmp_path / "data")
    make_files(cache, files)
    built = cache_files(cache)
    # a model and 6 ids + offsets pairs (3 splits x 2 sides), each entry with a manifest and a lock
    assert len([f for f in built if f.startswith("spm-")]) == 3 and len(built) == 1 + 6 * 2 + 7 * 2

    make_files(cache, files, min_length=2, max_length=30, max_length_ratio=2.0)  # on lengths
    os.utime(files["train_src"], (0, 0))  # a touch is not a change
    make_files(cache, files)
    assert cache_files(cache) == built

    Path(files["test_tgt"]).write_text("".join(t + " x\n" for t in TOY["test"].tgt))
    make_files(cache, files)
    new = cache_files(cache) - built
    assert sorted(n.split("-")[0] for n in new) == ["test"] * 8  # ids, offsets, manifest, lock x 2
    built |= new

    changes = [
        {"vocab_size": 200},
        {"sp_model_type": "bpe"},
        {"character_coverage": 0.9995},
        {"normalization": "NFC"},
        {"max_chars": 60},
    ]
    for change in changes:
        make_files(cache, files, **change)
        new = cache_files(cache) - built
        assert len([n for n in new if n.startswith("spm-joint-")]) == 3, change
        built |= new
    Path(files["train_src"]).write_text("".join(t + "\n" for t in reversed(TOY["train"].src)))
    make_files(cache, files)
    assert len([n for n in cache_files(cache) - built if n.startswith("spm-")]) == 3


def test_cached_start_does_not_read_the_training_text(tmp_path, monkeypatch):
    files = write_pairs(tmp_path / "data")
    first = make_files(tmp_path, files)
    read = TextPairsCorpus.pairs

    def pairs(self, split):
        assert split != "train", "the cached start read the training text"
        return read(self, split)

    monkeypatch.setattr(TextPairsCorpus, "pairs", pairs)
    second = make_files(tmp_path, files)
    assert second.src_tokenizer.proto == first.src_tokenizer.proto
    assert [b.indices.tolist() for b in second.train_dataloader()] == [
        b.indices.tolist() for b in first.train_dataloader()
    ]


def test_interrupted_build_leaves_no_cache_and_the_next_run_rebuilds(tmp_path, monkeypatch, caplog):
    files = write_pairs(tmp_path / "data")
    encode = datamodule.encode_split
    calls = []

    def interrupted(tokenizer, texts, **kwargs):
        calls.append(len(texts))
        if len(calls) == 2:  # train tgt, after train src was cached
            raise KeyboardInterrupt
        return encode(tokenizer, texts, **kwargs)

    monkeypatch.setattr(datamodule, "encode_split", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_files(tmp_path / "cache", files)
    left = cache_files(tmp_path / "cache")
    assert not [name for name in left if name.startswith(".")]  # no temporary files
    train_tgt = [name for name in left if name.startswith("train-tgt")]
    assert len(train_tgt) == 1 and train_tgt[0].endswith(".lock")  # its lock file only
    monkeypatch.setattr(datamodule, "encode_split", encode)
    with caplog.at_level(logging.INFO, logger=datamodule.__name__):
        rebuilt = make_files(tmp_path / "cache", files)
    assert "encoding train tgt" in caplog.text and "encoding train src" not in caplog.text
    clean = make_files(tmp_path / "clean", files)
    assert [b.tgt_out.tolist() for b in rebuilt.val_dataloader()] == [
        b.tgt_out.tolist() for b in clean.val_dataloader()
    ]


def test_huge_lines_never_reach_the_tokenizer(tmp_path, monkeypatch):
    huge = "wort " * 600_000  # 3 million characters
    lines = {split: (c.src + [huge], c.tgt + ["ok"]) for split, c in TOY.items()}
    files = write_pairs(tmp_path / "data", lines)
    longest = []
    train_sp, encode = datamodule.train_sentencepiece, datamodule.Tokenizer.encode

    def recording_train(sentences, *args):
        sentences = list(sentences)
        longest.append(max(map(len, sentences)))
        return train_sp(sentences, *args)

    def recording_encode(self, texts):
        longest.append(max(map(len, texts)))
        return encode(self, texts)

    monkeypatch.setattr(datamodule, "train_sentencepiece", recording_train)
    monkeypatch.setattr(datamodule.Tokenizer, "encode", recording_encode)
    dm = make_files(tmp_path / "cache", files, max_chars=200)
    assert max(longest) <= 200
    assert sum(len(b.indices) for b in dm.train_dataloader()) <= len(TOY["train"])
    assert dm.references("test")[-1] == "ok" and dm.sources("test")[-1] == huge.strip()


def test_empty_lines_in_val_and_test_are_kept_and_batched(tmp_path):
    lines = {split: (c.src[:-1] + [""], c.tgt[:-1] + [""]) for split, c in TOY.items()}
    dm = make_files(tmp_path / "cache", write_pairs(tmp_path / "data", lines))
    assert dm.references("val")[-1] == "" and len(dm.references("val")) == 20
    batches = list(dm.val_dataloader())
    assert sum(len(b.indices) for b in batches) == 20
    empty = next(b for b in batches if 19 in b.indices.tolist())
    row = empty.indices.tolist().index(19)
    assert empty.src[row, 0] == EOS_ID and empty.src_lengths[row] == 1
    assert sum(len(b.indices) for b in dm.train_dataloader()) == 299  # drop_empty


def test_a_corpus_emptied_by_filtering_names_the_filter(tmp_path):
    files = write_pairs(tmp_path / "data")
    with pytest.raises(CorpusError) as error:
        make_files(tmp_path, files, max_chars=5)
    assert str(error.value) == (
        f"the train split ({files['train_src']} + {files['train_tgt']}): no pair is left of 300 "
        "after filtering (max_chars=5 removed 300, drop_empty removed 0)"
    )


def test_line_count_mismatch_stops_before_any_work(tmp_path):
    files = write_pairs(tmp_path / "data", {"test": (["a", "b"], ["x"])})
    with pytest.raises(CorpusError, match="same number of lines, but .*test.src has 2 and"):
        make_files(tmp_path / "cache", files)
    assert not (tmp_path / "cache").exists()  # no tokenizer trained, nothing cached


# --- build_datamodule and the data options that need files ----------------------------------------

SMALL = [
    "data.vocab_size=150",
    "data.max_tokens=400",
    "model.embedding_size=16",
    "model.hidden_size=32",
    "logger=csv",
    "trainer.accelerator=cpu",
    "trainer.enable_model_summary=false",
    "trainer.enable_progress_bar=false",
]


def test_unset_paths_are_named(compose_train: Compose):
    cfg = compose_train("data=tsv", "data.train_file=a.tsv", tiny=False)
    with pytest.raises(ConfigError) as error:
        build_datamodule(cfg.data)
    assert str(error.value) == (
        "data.test_file, data.val_file: not set; give each a value, e.g. "
        "data.test_file=path/to/file"
    )


def test_built_from_the_checked_config_or_from_the_node(compose_train: Compose):
    cfg = compose_train("data.max_tokens=500", "data.max_length=50")
    checked = build_datamodule(validate(cfg).data)
    from_node = build_datamodule(cfg.data)
    for module in (checked, from_node):
        assert isinstance(module.corpus, ToyCorpus) and module.corpus.num_train == 600
        assert (module.max_tokens, module.length_filter.max_length) == (500, 50)
        assert module.text_filter.normalization == "NFKC" and module.sp_model_type == "unigram"


def test_data_modules_but_the_data_module_load_without_lightning():
    code = (
        "import sys; import seq2attn.data.tokenizer, seq2attn.data.batching, seq2attn.data.cache,"
        " seq2attn.data.readers, seq2attn.data.toy; print('lightning' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    assert done.stdout.strip() == "False"


def test_corpus_errors_are_not_wrapped(compose_train: Compose):
    cfg = compose_train("data=multi30k", "data.src_lang=xx", tiny=False)
    with pytest.raises(CorpusError, match="^data.src_lang=xx: not a Multi30k language"):
        build_datamodule(cfg.data)


def pharaoh(alignment: Alignment) -> str:
    """One Pharaoh line: ``i-j`` for sure links, ``i?j`` for possible ones."""
    links = [f"{i}-{j}" for i, j in sorted(alignment.sure)]
    links += [f"{i}?{j}" for i, j in sorted(alignment.possible - alignment.sure)]
    return " ".join(links)


def write_alignments(folder: Path) -> dict:
    """``{split}.align`` Pharaoh files of the toy val and test gold alignments."""
    args = {}
    for split in ("val", "test"):
        path = folder / f"{split}.align"
        path.write_text("".join(pharaoh(a) + "\n" for a in TOY_CORPUS.alignments(split)))
        args[f"{split}_align"] = str(path)
    return args


def test_text_pairs_reads_the_gold_alignments_of_val_and_test(tmp_path):
    files = write_pairs(tmp_path)
    corpus = TextPairsCorpus(**files, **write_alignments(tmp_path))
    for split in ("val", "test"):
        expected = TOY_CORPUS.alignments(split)
        assert corpus.alignments(split) == expected
        assert any(a.possible != a.sure for a in expected)  # possible links round trip too
    assert corpus.alignments("train") is None
    assert TextPairsCorpus(**files).alignments("val") is None


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: lines[:-1], r"val\.align has 19 lines, the corpus split has 20 sentence"),
        (lambda lines: [*lines[:2], "0-99", *lines[3:]], r"val\.align, line 3: link 0-99 is out"),
        (lambda lines: [*lines[:1], "0:1", *lines[2:]], r"val\.align, line 2: malformed link"),
    ],
)
def test_a_bad_alignment_file_is_a_corpus_error_naming_file_and_line(tmp_path, edit, message):
    files = write_pairs(tmp_path)
    aligned = write_alignments(tmp_path)
    path = Path(aligned["val_align"])
    path.write_text("".join(line + "\n" for line in edit(path.read_text().splitlines())))
    with pytest.raises(CorpusError, match="^data.val_align: .*" + message):
        TextPairsCorpus(**files, **aligned).alignments("val")


def test_a_bad_alignment_file_stops_the_setup_before_any_work(tmp_path):
    aligned = write_alignments(tmp_path)
    Path(aligned["test_align"]).write_text("0-0\n")
    corpus = TextPairsCorpus(**write_pairs(tmp_path), **aligned)
    with pytest.raises(CorpusError, match=r"^data.test_align: .*test\.align has 1 lines"):
        make(tmp_path / "cache", corpus=corpus)


def test_text_pairs_option_runs_a_fast_dev_run_with_aer(compose_train: Compose, tmp_path):
    files = write_pairs(tmp_path / "data") | write_alignments(tmp_path / "data")
    paths = [f"data.{key}={value}" for key, value in files.items()]
    metrics = train(compose_train("data=text_pairs", *paths, *SMALL, "debug=fdr", tiny=False))
    assert math.isfinite(metrics["train/loss"]) and 0 <= metrics["test/bleu"] <= 100
    assert 0 <= metrics["val/aer"] <= 1 and 0 <= metrics["test/aer"] <= 1


def test_tsv_option_runs_a_fast_dev_run(compose_train: Compose, tmp_path):
    paths = []
    for split, corpus in TOY.items():
        path = tmp_path / f"{split}.tsv"
        path.write_text("".join(f"{s}\t{t}\n" for s, t in zip(corpus.src, corpus.tgt, strict=True)))
        paths.append(f"data.{split}_file={path}")
    metrics = train(compose_train("data=tsv", *paths, *SMALL, "debug=fdr", tiny=False))
    assert math.isfinite(metrics["train/loss"]) and 0 <= metrics["test/bleu"] <= 100
