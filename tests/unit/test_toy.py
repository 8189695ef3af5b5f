from __future__ import annotations

import itertools

import pytest

from seq2attn.alignment import project_to_pieces, word_of_pieces
from seq2attn.data import toy, toy_lexicon
from seq2attn.data.tokenizer import Tokenizer, train_sentencepiece
from seq2attn.data.toy import ToyCorpus, translate
from seq2attn.data.toy_lexicon import source_vocabulary


def tr(sentence: str) -> str:
    return " ".join(translate(sentence.split()))


@pytest.fixture(scope="module")
def splits():
    return ToyCorpus(num_train=2000, num_val=200, num_test=200, seed=3).splits()


def test_same_seed_same_corpus_other_seed_other_corpus(splits):
    assert ToyCorpus(num_train=2000, num_val=200, num_test=200, seed=3).splits() == splits
    other = ToyCorpus(num_train=2000, num_val=200, num_test=200, seed=4).splits()
    assert other["train"].src != splits["train"].src
    assert len(set(other["val"].src) & set(splits["val"].src)) < 100


def test_split_sizes_and_no_leakage(splits):
    assert {name: len(c) for name, c in splits.items()} == {"train": 2000, "val": 200, "test": 200}
    sources = [s for c in splits.values() for s in c.src]
    assert len(set(sources)) == len(sources)  # no sentence twice, within or across splits


def test_val_and_test_do_not_depend_on_num_train(splits):
    small = ToyCorpus(num_train=50, num_val=200, num_test=200, seed=3).splits()
    assert small["val"] == splits["val"] and small["test"] == splits["test"]


def test_every_pair_follows_the_rules_and_length_bounds(splits):
    vocabulary = source_vocabulary()
    for corpus in splits.values():
        for src, tgt in zip(corpus.src, corpus.tgt, strict=True):
            assert tgt == tr(src)
            assert toy.MIN_WORDS <= len(src.split()) <= toy.MAX_WORDS
            assert set(src.split()) <= vocabulary
    assert 80 <= len(vocabulary) <= 150


def test_source_word_classes_are_disjoint():
    classes = [
        set(toy_lexicon.PRONOUNS),
        set(toy_lexicon.DETERMINERS) | {"an"},
        set(toy_lexicon.NOUN_FORMS),
        set(toy_lexicon.ADJECTIVES),
        set(toy_lexicon.VERB_FORMS),
        {word for words in toy_lexicon.PREPOSITIONS for word in words},
        set(toy_lexicon.ADVERBS),
        set(toy_lexicon.CONJUNCTIONS),
    ]
    for a, b in itertools.combinations(classes, 2):
        assert not a & b


def test_docstring_example_is_verb_final_with_postposition():
    source = "the big dogs see a small cat in front of my house quickly"
    assert tr(source) == "kalulin morali domo mia vor en miso tiki rapi vidant"


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("i sleep", "mo dormim"),
        ("you sleep", "tu dormis"),
        ("she sleeps", "la dormit"),
        ("we sleep", "nos dormimes"),
        ("they sleep", "ri dormint"),
        ("the dog sleeps", "kalun dormit"),
        ("the dogs sleep", "kalulin dormint"),
    ],
)
def test_verb_agrees_with_subject_person_and_number(source, target):
    assert tr(source) == target


def test_plural_agreement_on_noun_adjective_and_demonstrative():
    assert tr("this old dog runs") == "kalu veka zo kurit"
    assert tr("these old dogs run") == "kaluli vekali zoli kurint"
    assert tr("my old mice run") == "murili vekali miali kurint"


def test_one_to_many_and_many_to_one():
    assert tr("she teaches a cat next to the river") == "la flumin bim en miso sabi donat"
    assert tr("an owl sleeps often") == "en ulu multa foje dormit"
    assert tr("some children work") == "ko neneli laboro fant"


def test_conjoined_clauses_keep_their_order():
    assert tr("he runs and the cats sleep") == "lo kurit e misolin dormint"


@pytest.mark.parametrize("source", ["the dog", "the dog sleeps the cat", "a dog flies", "sleeps"])
def test_translate_rejects_sentences_outside_the_grammar(source):
    with pytest.raises(ValueError, match="unexpected word"):
        translate(source.split())


def test_fingerprint_changes_exactly_with_parameters_and_split():
    base = ToyCorpus(num_train=10, num_val=2, num_test=3, seed=1)
    same = ToyCorpus(num_train=10, num_val=2, num_test=3, seed=1)
    assert base.fingerprint("train") == same.fingerprint("train")
    variants = [
        ToyCorpus(num_train=11, num_val=2, num_test=3, seed=1),
        ToyCorpus(num_train=10, num_val=3, num_test=3, seed=1),
        ToyCorpus(num_train=10, num_val=2, num_test=4, seed=1),
        ToyCorpus(num_train=10, num_val=2, num_test=3, seed=2),
    ]
    fingerprints = {base.fingerprint("train")} | {v.fingerprint("train") for v in variants}
    assert len(fingerprints) == 5
    assert len({base.fingerprint(split) for split in ("train", "val", "test")}) == 3
    assert len(base.fingerprint("val")) == 64


def test_pairs_stream_the_splits(splits):
    corpus = ToyCorpus(num_train=2000, num_val=200, num_test=200, seed=3)
    assert list(corpus.pairs("test")) == list(
        zip(splits["test"].src, splits["test"].tgt, strict=True)
    )
    with pytest.raises(KeyError, match="unknown split 'dev'"):
        corpus.fingerprint("dev")


def links(pairs: str) -> set[tuple[int, int]]:
    """'0-0 2-0' -> {(0, 0), (2, 0)}: source-target word links."""
    return {tuple(map(int, link.split("-"))) for link in pairs.split()}  # type: ignore[misc]


def test_gold_alignment_of_reordering_fusion_and_a_multi_word_preposition():
    """the(0) big(1) dogs(2) see(3) a(4) small(5) cat(6) in(7) front(8) of(9) my(10) house(11)
    quickly(12) -> kalulin(0) morali(1) domo(2) mia(3) vor(4) en(5) miso(6) tiki(7) rapi(8)
    vidant(9): "the dogs" fuse, "in front of" is one postposition, the verb moves last; the
    plural "li" of "morali" and the verb's ending agree with "dogs" (possible links)."""
    words = [
        "the",
        "big",
        "dogs",
        "see",
        "a",
        "small",
        "cat",
        "in",
        "front",
        "of",
        "my",
        "house",
        "quickly",
    ]
    target, alignment = toy.translate_aligned(words)
    assert " ".join(target) == "kalulin morali domo mia vor en miso tiki rapi vidant"
    sure = links("0-0 2-0 1-1 11-2 10-3 7-4 8-4 9-4 4-5 6-6 5-7 12-8 3-9")
    assert alignment.sure == sure
    assert alignment.possible == sure | links("2-1 2-9")


def test_gold_alignment_of_one_to_many_words_and_agreement_suffixes():
    """we(0) teach(1) these(2) old(3) dogs(4) often(5) and(6) she(7) sleeps(8) -> nos(0)
    kaluli(1) vekali(2) zoli(3) multa(4) foje(5) sabi(6) donames(7) e(8) la(9) dormit(10)."""
    target, alignment = toy.translate_aligned(
        ["we", "teach", "these", "old", "dogs", "often", "and", "she", "sleeps"]
    )
    assert " ".join(target) == "nos kaluli vekali zoli multa foje sabi donames e la dormit"
    sure = links("0-0 4-1 3-2 2-3 5-4 5-5 1-6 1-7 6-8 7-9 8-10")
    assert alignment.sure == sure
    assert alignment.possible == sure | links("4-2 4-3 0-7 7-10")


def test_every_target_word_of_the_corpus_has_a_sure_link(splits):
    for source in splits["val"].src:
        target, alignment = toy.translate_aligned(source.split())
        assert {j for _, j in alignment.sure} == set(range(len(target)))
        assert all(i < len(source.split()) for i, _ in alignment.possible)


def test_gold_alignment_projected_to_pieces_keeps_each_words_links(splits):
    """Each piece inherits its word's links: a word cut into pieces links all of them."""
    train = splits["train"]
    tokenizer = Tokenizer.from_proto(
        train_sentencepiece(train.src + train.tgt, 120, "unigram", 1.0)
    )
    split_words = 0
    for source, target in zip(splits["val"].src[:50], splits["val"].tgt[:50], strict=True):
        words, alignment = toy.translate_aligned(source.split())
        src_pieces = tokenizer.pieces(tokenizer.encode([source])[0])
        tgt_pieces = tokenizer.pieces(tokenizer.encode([target])[0])
        src_words, tgt_words = word_of_pieces(src_pieces), word_of_pieces(tgt_pieces)
        assert max(tgt_words) == len(words) - 1 and max(src_words) == len(source.split()) - 1
        pieces = project_to_pieces(alignment, src_words, tgt_words)
        for p, q in pieces.possible:
            kind = "sure" if (p, q) in pieces.sure else "possible"
            assert (src_words[p], tgt_words[q]) in getattr(alignment, kind)
        expected = sum(src_words.count(i) * tgt_words.count(j) for i, j in alignment.sure)
        assert len(pieces.sure) == expected
        split_words += len(tgt_pieces) - len(words)
    assert split_words > 0  # some target words were cut into several pieces
