"""Seeded synthetic translation task: English-like SVO source, invented verb-final target.

Source grammar::

    sentence := clause [conjunction clause]
    clause   := subject verb [object] [pp] [adverb]     (object only after a transitive verb)
    subject  := pronoun | np                           (np subjects are 3rd person)
    np       := determiner [adjective] noun            (sg/pl; "a" becomes "an" before a vowel)
    pp       := preposition np                         (prepositions may be multi-word)

Translation rules (deterministic: one translation per source sentence):

1. Clause order becomes ``subject pp object adverb verb``: verb-final (SOV) with postpositions.
2. Noun phrases become ``[en|ko] noun [adjective] [zo|mia]``: the adjective follows the noun,
   "a" -> "en" and "some" -> "ko" stay in front, "this/these" -> "zo" and "my" -> "mia" move last.
3. Many-to-one: "the" fuses with its noun (suffix "n"); "in front of" and "next to" become one
   postposition each.
4. Agreement: a plural noun phrase adds "li" to the noun, the adjective and "zo"/"mia"; the verb
   takes the subject's person/number suffix (1sg -m, 2sg -s, 3sg -t, 1pl -mes, 3pl -nt).
5. One-to-many: some verbs and adverbs become two words ("teaches" -> "sabi donat").
6. Conjunctions translate word for word and the clause order is kept.

``translate_aligned`` also gives the gold word alignment the rules imply: a target word is surely
linked to the source words it translates (both "the" and the noun for a fused noun, all words of
"in front of", one verb for both words of "sabi donat") and possibly linked to the words whose
number or person its suffix agrees with (the noun for "li" on an adjective or "zo"/"mia", the
subject for the verb's ending).

Example::

    the big dogs see a small cat in front of my house quickly
    kalulin morali domo mia vor en miso tiki rapi vidant
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from seq2attn.alignment import Alignment
from seq2attn.data.corpus import SPLITS, SplitCorpus
from seq2attn.data.toy_lexicon import (
    ADJECTIVES,
    ADVERBS,
    AGREEMENT,
    CONJUNCTIONS,
    DEFINITE,
    DETERMINERS,
    INTRANSITIVE,
    NOUN_FORMS,
    NOUNS,
    PLURAL,
    PREPOSITIONS,
    PRONOUNS,
    TRANSITIVE,
    VERB_FORMS,
)

GENERATOR_VERSION = 1
MIN_WORDS, MAX_WORDS = 3, 16
P_PRONOUN, P_ADJECTIVE, P_TRANSITIVE, P_PP, P_ADVERB, P_CONJUNCTION = 0.25, 0.4, 0.6, 0.4, 0.3, 0.25

# --- sampling source sentences --------------------------------------------------------------


def _sample_noun_phrase(rng: random.Random) -> tuple[list[str], str]:
    number = rng.choice(("sg", "pl"))
    det = rng.choice([d for d, (numbers, _, _) in DETERMINERS.items() if number in numbers])
    singular = rng.choice(list(NOUNS))
    words = [singular if number == "sg" else NOUNS[singular][0]]
    if rng.random() < P_ADJECTIVE:
        words.insert(0, rng.choice(list(ADJECTIVES)))
    if det == "a" and words[0][0] in "aeiou":
        det = "an"
    return [det, *words], number


def _sample_clause(rng: random.Random) -> list[str]:
    if rng.random() < P_PRONOUN:
        subject = [rng.choice(list(PRONOUNS))]
        _, person, number = PRONOUNS[subject[0]]
    else:
        (subject, number), person = _sample_noun_phrase(rng), 3
    transitive = rng.random() < P_TRANSITIVE
    base = rng.choice(list(TRANSITIVE if transitive else INTRANSITIVE))
    third = (TRANSITIVE if transitive else INTRANSITIVE)[base][0]
    words = [*subject, third if (person, number) == (3, "sg") else base]
    if transitive:
        words += _sample_noun_phrase(rng)[0]
    if rng.random() < P_PP:
        words += [*rng.choice(list(PREPOSITIONS)), *_sample_noun_phrase(rng)[0]]
    if rng.random() < P_ADVERB:
        words.append(rng.choice(list(ADVERBS)))
    return words


def sample_sentence(rng: random.Random) -> list[str]:
    """One source sentence (list of words) from the grammar in the module docstring."""
    words = _sample_clause(rng)
    if rng.random() < P_CONJUNCTION:
        words += [rng.choice(list(CONJUNCTIONS)), *_sample_clause(rng)]
    return words


# --- translating source sentences -----------------------------------------------------------


class _Reader:
    """A cursor over source words; errors name the position and the word."""

    def __init__(self, words: Sequence[str]) -> None:
        self.words, self.pos = list(words), 0

    @property
    def done(self) -> bool:
        return self.pos == len(self.words)

    def peek(self) -> str | None:
        return None if self.done else self.words[self.pos]

    def take(self, table: dict | set) -> str:
        word = self.peek()
        if word is None or word not in table:
            raise ValueError(f"unexpected word {word!r} at position {self.pos} in {self.words}")
        self.pos += 1
        return word

    def match(self, phrases: dict[tuple[str, ...], str]) -> tuple[str, ...] | None:
        for phrase in sorted(phrases, key=len, reverse=True):
            if tuple(self.words[self.pos : self.pos + len(phrase)]) == phrase:
                self.pos += len(phrase)
                return phrase
        return None


@dataclass(frozen=True)
class _Word:
    """A target word with the source positions it translates (sure) and those a rule makes it
    agree with (possible: the noun for an agreement suffix, the subject for a verb's ending)."""

    text: str
    sure: tuple[int, ...]
    possible: tuple[int, ...] = ()


def _translate_noun_phrase(reader: _Reader) -> tuple[list[_Word], str, int]:
    """The phrase's target words, its number and the source position of its noun."""
    det_at = reader.pos
    det = {"an": "a"}.get(word := reader.take(set(DETERMINERS) | {"an"}), word)
    adjective_at = reader.pos
    adjective = reader.take(ADJECTIVES) if reader.peek() in ADJECTIVES else None
    noun_at = reader.pos
    stem, number = NOUN_FORMS[reader.take(NOUN_FORMS)]
    plural = PLURAL if number == "pl" else ""
    agrees = (noun_at,) if plural else ()
    _, det_word, place = DETERMINERS[det]
    if place == "fused":  # "the" + noun -> one word
        words = [_Word(stem + plural + DEFINITE, (det_at, noun_at))]
    else:
        words = [_Word(stem + plural, (noun_at,))]
    if adjective:
        words.append(_Word(ADJECTIVES[adjective] + plural, (adjective_at,), agrees))
    if place == "before":
        words.insert(0, _Word(det_word, (det_at,)))
    elif place == "after":
        words.append(_Word(det_word + plural, (det_at,), agrees))
    return words, number, noun_at


def _translate_clause(reader: _Reader) -> list[_Word]:
    if reader.peek() in PRONOUNS:
        subject_at = reader.pos
        target, person, number = PRONOUNS[reader.take(PRONOUNS)]
        subject = [_Word(target, (subject_at,))]
    else:
        (subject, number, subject_at), person = _translate_noun_phrase(reader), 3
    verb_at = reader.pos
    verb, transitive = VERB_FORMS[reader.take(VERB_FORMS)]
    obj = _translate_noun_phrase(reader)[0] if transitive else []
    preposition_at = reader.pos
    preposition = reader.match(PREPOSITIONS)
    pp = []
    if preposition:  # a multi-word preposition -> one postposition after its noun phrase
        positions = tuple(range(preposition_at, preposition_at + len(preposition)))
        pp = [*_translate_noun_phrase(reader)[0], _Word(PREPOSITIONS[preposition], positions)]
    adverb: list[_Word] = []
    if reader.peek() in ADVERBS:
        adverb_at = reader.pos
        adverb = [_Word(word, (adverb_at,)) for word in ADVERBS[reader.take(ADVERBS)]]
    verb_words = [_Word(word, (verb_at,)) for word in verb[:-1]]
    ending = _Word(verb[-1] + AGREEMENT[(person, number)], (verb_at,), (subject_at,))
    return [*subject, *pp, *obj, *adverb, *verb_words, ending]


def translate_aligned(words: Sequence[str]) -> tuple[list[str], Alignment]:
    """Translate a source sentence (list of words) by the rules in the module docstring, with
    its gold word alignment: (source, target) links, sure where a target word translates the
    source words, possible where it only agrees with them (agreement suffixes).

    Raises:
        ValueError: a word or word order the grammar cannot produce.
    """
    reader = _Reader(words)
    target = _translate_clause(reader)
    while not reader.done:
        conjunction_at = reader.pos
        conjunction = reader.take(CONJUNCTIONS)
        target += [_Word(CONJUNCTIONS[conjunction], (conjunction_at,)), *_translate_clause(reader)]
    sure = frozenset((i, j) for j, word in enumerate(target) for i in word.sure)
    possible = sure | {(i, j) for j, word in enumerate(target) for i in word.possible}
    return [word.text for word in target], Alignment(sure, possible)


def translate(words: Sequence[str]) -> list[str]:
    """Translate a source sentence (list of words) by the rules in the module docstring.

    Raises:
        ValueError: a word or word order the grammar cannot produce.
    """
    return translate_aligned(words)[0]


# --- the corpus -----------------------------------------------------------------------------


class ToyCorpus(SplitCorpus):
    """Distinct sampled sentences and their translations, split into val, test, then train.

    Val and test are the first distinct sentences drawn, so they do not change with ``num_train``;
    every source sentence occurs once in the whole corpus, so no split leaks into another.
    """

    def __init__(
        self, num_train: int = 20000, num_val: int = 1000, num_test: int = 1000, seed: int = 7
    ) -> None:
        self.num_train, self.num_val, self.num_test, self.seed = num_train, num_val, num_test, seed

    def _params(self) -> dict[str, int]:
        return {
            "num_train": self.num_train,
            "num_val": self.num_val,
            "num_test": self.num_test,
            "seed": self.seed,
        }

    def _distinct_sentences(self, count: int) -> list[str]:
        rng = random.Random(self.seed)
        sentences: dict[str, None] = {}  # insertion-ordered set
        for _ in range(100 * count + 1000):
            if len(sentences) == count:
                return list(sentences)
            words = sample_sentence(rng)
            if MIN_WORDS <= len(words) <= MAX_WORDS:
                sentences.setdefault(" ".join(words))
        raise ValueError(f"the toy grammar could not produce {count} distinct sentences")

    def _bounds(self, split: str) -> tuple[int, int]:
        order, sizes = ("val", "test", "train"), (self.num_val, self.num_test, self.num_train)
        if split not in order:
            raise KeyError(f"unknown split {split!r}, expected one of {SPLITS}")
        position = order.index(split)  # the draw order
        start = sum(sizes[:position])
        return start, start + sizes[position]

    def pairs(self, split: str) -> Iterator[tuple[str, str]]:
        """``(source, target)`` pairs of space-separated words of ``split``."""
        start, end = self._bounds(split)
        sources = self._distinct_sentences(self.num_val + self.num_test + self.num_train)
        for source in sources[start:end]:
            yield source, " ".join(translate(source.split()))

    def alignments(self, split: str) -> list[Alignment]:
        """The gold word alignment of each pair of ``split`` (``translate_aligned``)."""
        return [translate_aligned(source.split())[1] for source, _ in self.pairs(split)]

    def describe(self, split: str) -> str:
        return f"the toy {split} split"

    def fingerprint(self, split: str) -> str:
        """sha256 over the class name, parameters, GENERATOR_VERSION and the split name.

        Every parameter matters to every split: train is drawn after val and test.
        """
        self._bounds(split)
        payload = json.dumps([type(self).__name__, self._params(), GENERATOR_VERSION, split])
        return hashlib.sha256(payload.encode()).hexdigest()
