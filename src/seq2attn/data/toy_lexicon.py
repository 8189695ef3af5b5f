"""The toy task's lexicon: source words, their target words and the agreement suffixes.

The grammar and the translation rules that use these tables are in :mod:`seq2attn.data.toy`.
"""

from __future__ import annotations

PRONOUNS = {  # source: (target, person, number)
    "i": ("mo", 1, "sg"),
    "you": ("tu", 2, "sg"),
    "he": ("lo", 3, "sg"),
    "she": ("la", 3, "sg"),
    "we": ("nos", 1, "pl"),
    "they": ("ri", 3, "pl"),
}
AGREEMENT = {(1, "sg"): "m", (2, "sg"): "s", (3, "sg"): "t", (1, "pl"): "mes", (3, "pl"): "nt"}
PLURAL, DEFINITE = "li", "n"
DETERMINERS = {  # source: (numbers, target word, where the target word goes)
    "the": (("sg", "pl"), "", "fused"),
    "a": (("sg",), "en", "before"),
    "some": (("pl",), "ko", "before"),
    "this": (("sg",), "zo", "after"),
    "these": (("pl",), "zo", "after"),
    "my": (("sg", "pl"), "mia", "after"),
}
NOUNS = {  # singular: (plural, target stem)
    "dog": ("dogs", "kalu"),
    "cat": ("cats", "miso"),
    "bird": ("birds", "pipa"),
    "horse": ("horses", "hipo"),
    "child": ("children", "nene"),
    "man": ("men", "viro"),
    "woman": ("women", "femi"),
    "teacher": ("teachers", "doko"),
    "farmer": ("farmers", "agri"),
    "king": ("kings", "reksa"),
    "mouse": ("mice", "muri"),
    "fox": ("foxes", "vulpa"),
    "owl": ("owls", "ulu"),
    "elephant": ("elephants", "olifa"),
    "friend": ("friends", "ami"),
    "book": ("books", "libro"),
    "apple": ("apples", "pomo"),
    "ball": ("balls", "bola"),
    "letter": ("letters", "karta"),
    "house": ("houses", "domo"),
    "tree": ("trees", "arbo"),
    "river": ("rivers", "flumi"),
    "garden": ("gardens", "horti"),
    "table": ("tables", "tabu"),
    "car": ("cars", "roda"),
    "city": ("cities", "urbi"),
}
ADJECTIVES = {
    "big": "mora",
    "small": "tiki",
    "old": "veka",
    "young": "juna",
    "red": "ruba",
    "green": "verda",
    "happy": "gaja",
    "sad": "trista",
    "tall": "alta",
    "black": "nigra",
    "white": "alba",
    "angry": "irata",
    "kind": "bona",
    "lazy": "pigra",
    "clever": "saga",
}
INTRANSITIVE = {  # base: (3rd singular, target words)
    "sleep": ("sleeps", ("dormi",)),
    "run": ("runs", ("kuri",)),
    "wait": ("waits", ("atendi",)),
    "laugh": ("laughs", ("ridi",)),
    "sing": ("sings", ("kanta",)),
    "dance": ("dances", ("dansa",)),
    "swim": ("swims", ("nata",)),
    "work": ("works", ("laboro", "fa")),
}
TRANSITIVE = {
    "see": ("sees", ("vida",)),
    "like": ("likes", ("ama",)),
    "find": ("finds", ("trova",)),
    "follow": ("follows", ("sekva",)),
    "help": ("helps", ("ajuda",)),
    "watch": ("watches", ("observa",)),
    "carry": ("carries", ("porta",)),
    "paint": ("paints", ("pinta",)),
    "read": ("reads", ("lega",)),
    "teach": ("teaches", ("sabi", "dona")),
    "visit": ("visits", ("domo", "ira")),
}
PREPOSITIONS = {  # source words: target postposition
    ("in",): "ni",
    ("on",): "su",
    ("near",): "pres",
    ("under",): "sub",
    ("with",): "kon",
    ("behind",): "malan",
    ("in", "front", "of"): "vor",
    ("next", "to"): "bim",
}
ADVERBS = {
    "quickly": ("rapi",),
    "slowly": ("lenu",),
    "today": ("hodi",),
    "often": ("multa", "foje"),
    "again": ("re", "fojo"),
    "quietly": ("sila",),
}
CONJUNCTIONS = {"and": "e", "but": "sed", "while": "dum"}

NOUN_FORMS = {
    form: (stem, number)
    for singular, (plural, stem) in NOUNS.items()
    for form, number in ((singular, "sg"), (plural, "pl"))
}
VERB_FORMS = {  # surface form: (target words, transitive)
    form: (target, table is TRANSITIVE)
    for table in (INTRANSITIVE, TRANSITIVE)
    for base, (third, target) in table.items()
    for form in (base, third)
}


def source_vocabulary() -> set[str]:
    """All words the source grammar can produce."""
    prepositions = {word for words in PREPOSITIONS for word in words}
    tables = (PRONOUNS, DETERMINERS, NOUN_FORMS, ADJECTIVES, VERB_FORMS, ADVERBS, CONJUNCTIONS)
    return {"an"} | prepositions | {word for table in tables for word in table}
