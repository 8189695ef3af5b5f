"""Which classes a stored config may name before the loader builds anything from it.

A checkpoint can come from anyone, so its config is data, not a recipe: before a node of it is
built, every ``_target_`` in that node must name a class derived from the project's base class
for that part (the model, its scorer, a corpus). The allowed names are derived from the classes
loaded in this process, never from the file, and nothing named by the file is imported before it
passes, so a new scorer or corpus needs no entry and a foreign target is never reached.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import seq2attn.data.readers  # noqa: F401  (their corpora are subclasses to allow)
import seq2attn.data.toy  # noqa: F401
from seq2attn.checkpoints import CheckpointError
from seq2attn.data.corpus import SplitCorpus
from seq2attn.models.scorers import Scorer
from seq2attn.models.seq2seq import Seq2Seq

MODEL_BASES: tuple[type, ...] = (Seq2Seq, Scorer)
CORPUS_BASES: tuple[type, ...] = (SplitCorpus,)


def allowed_targets(bases: Iterable[type]) -> set[str]:
    """``module.QualName`` of each base and every class loaded that derives from it."""
    classes, stack = set(), list(bases)
    while stack:
        cls = stack.pop()
        if cls not in classes:
            classes.add(cls)
            stack.extend(cls.__subclasses__())
    return {f"{cls.__module__}.{cls.__qualname__}" for cls in classes}


def check_targets(node: Any, key: str, bases: tuple[type, ...], source: str) -> None:
    """Refuse (naming ``source``, the key and the target) a ``_target_`` anywhere in ``node``
    that is not one of the classes :func:`allowed_targets` gives for ``bases``."""
    allowed = allowed_targets(bases)
    for path, target in _targets(node, key):
        if not isinstance(target, str) or target not in allowed:
            kinds = ", ".join(base.__name__ for base in bases)
            raise CheckpointError(
                f"{source}: refused; {path}={target!r} is not one of seq2attn's own classes "
                f"(subclasses of {kinds}), and a stored config may name no other"
            )


def _targets(node: Any, key: str) -> Iterable[tuple[str, Any]]:
    """``(dotted key, value)`` of every ``_target_`` in a tree of dicts and lists."""
    if isinstance(node, dict):
        for name, value in node.items():
            path = f"{key}.{name}"
            if name == "_target_":
                yield path, value
            else:
                yield from _targets(value, path)
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from _targets(value, f"{key}[{index}]")
