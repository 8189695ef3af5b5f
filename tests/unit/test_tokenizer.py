from __future__ import annotations

import io

import pytest
import sentencepiece as spm

from seq2attn.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    Tokenizer,
    train_sentencepiece,
)
from seq2attn.data.toy import ToyCorpus


@pytest.fixture(scope="module")
def corpus():
    return ToyCorpus(num_train=500, num_val=50, num_test=0, seed=5).splits()


@pytest.fixture(scope="module")
def proto(corpus):
    train = corpus["train"]
    return train_sentencepiece(train.src + train.tgt, 300, "unigram", 1.0)


@pytest.fixture(scope="module")
def tokenizer(proto):
    return Tokenizer.from_proto(proto)


def test_special_ids_are_fixed(tokenizer):
    assert (PAD_ID, UNK_ID, BOS_ID, EOS_ID) == (0, 1, 2, 3)
    assert tokenizer.pieces([0, 1, 2, 3]) == ["<pad>", "<unk>", "<s>", "</s>"]


@pytest.mark.parametrize("side", ["src", "tgt"])
def test_round_trip_on_unseen_sentences(corpus, tokenizer, side):
    sentences = getattr(corpus["val"], side)
    ids = tokenizer.encode(sentences)
    assert tokenizer.decode(ids) == sentences
    assert all(i >= 4 for seq in ids for i in seq)  # no specials added, nothing unknown


def test_decode_skips_pad_bos_eos(tokenizer):
    text = "the big dogs see a small cat"
    ids = tokenizer.encode([text])[0]
    assert tokenizer.decode([[BOS_ID, *ids, EOS_ID, PAD_ID, PAD_ID]]) == [text]


def test_unknown_characters_map_to_unk(tokenizer):
    assert UNK_ID in tokenizer.encode(["the dog sees ZZZ"])[0]


def test_vocab_size_is_an_upper_bound(corpus, tokenizer):
    assert tokenizer.vocab_size <= 300
    small = Tokenizer.from_proto(train_sentencepiece(corpus["train"].src, 5000, "unigram", 1.0))
    assert 4 < small.vocab_size < 5000


def test_training_shows_the_sentences_read_and_trains_the_same_model(corpus, proto, capsys):
    train = corpus["train"]
    shown = train_sentencepiece(train.src + train.tgt, 300, "unigram", 1.0, "src", progress=True)
    err = capsys.readouterr().err
    assert "training src tokenizer" in err
    assert f"{2 * len(train.src)} sentences" in err  # every sentence counted
    assert "all read; building the pieces" in err
    assert shown == proto  # counting them changes nothing in the model
    train_sentencepiece(train.src, 300, "unigram", 1.0, "src", progress=False)
    assert capsys.readouterr().err == ""


def test_training_is_deterministic_and_proto_round_trips(corpus, proto, tokenizer):
    train = corpus["train"]
    assert train_sentencepiece(train.src + train.tgt, 300, "unigram", 1.0) == proto
    reloaded = Tokenizer.from_proto(tokenizer.proto)
    assert reloaded.encode(corpus["val"].tgt) == tokenizer.encode(corpus["val"].tgt)


def _default_layout_model(sentences: list[str], **options) -> bytes:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=100, minloglevel=2,
        **options,
    )  # fmt: skip
    return model.getvalue()


def test_sentencepiece_default_layout_is_shifted_by_one(corpus):
    proto = _default_layout_model(corpus["train"].src)  # unk=0, bos=1, eos=2, no pad
    plain = spm.SentencePieceProcessor(model_proto=proto)
    tokenizer = Tokenizer.from_proto(proto)
    sentence = corpus["val"].src[0]
    ids = tokenizer.encode([sentence])[0]
    assert ids == [i + 1 for i in plain.encode(sentence)]
    assert tokenizer.vocab_size == plain.get_piece_size() + 1
    assert min(ids) > EOS_ID  # ordinary pieces never take a special id
    assert tokenizer.decode([[BOS_ID, *ids, EOS_ID, PAD_ID]]) == [
        plain.decode(plain.encode(sentence))
    ]
    assert tokenizer.pieces([PAD_ID, UNK_ID, BOS_ID, EOS_ID]) == ["<pad>", "<unk>", "<s>", "</s>"]


def test_from_proto_rejects_other_special_ids(corpus):
    proto = _default_layout_model(corpus["train"].src, unk_id=3, bos_id=0, eos_id=1, pad_id=2)
    with pytest.raises(ValueError, match="special ids .* expected"):
        Tokenizer.from_proto(proto)
