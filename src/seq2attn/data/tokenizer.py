"""SentencePiece training and loading; the special token ids are fixed here, project-wide."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sentencepiece as spm
from tqdm import tqdm

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_IDS = {"pad_id": PAD_ID, "unk_id": UNK_ID, "bos_id": BOS_ID, "eos_id": EOS_ID}
SP_SEED = 1234  # SentencePiece samples input_sentence_size sentences; seeded for reproducibility
# SentencePiece training needs ~1.5 GB per 1M sentences; 300k is plenty for 8k-32k pieces
MAX_TRAINING_SENTENCES = 300_000


def train_sentencepiece(
    sentences: Iterable[str],
    vocab_size: int,
    model_type: str,
    character_coverage: float,
    what: str = "",
    progress: bool | None = None,
) -> bytes:
    """Train a SentencePiece model in memory and return its serialised proto.

    ``hard_vocab_limit=False`` makes ``vocab_size`` an upper bound, because a small corpus cannot
    fill a fixed vocabulary. Corpora above MAX_TRAINING_SENTENCES are subsampled (seeded).
    A progress bar named ``what`` counts the sentences read, then the time spent building the
    pieces; ``progress=None`` shows it on a terminal only.
    """
    model = io.BytesIO()
    spm.set_random_generator_seed(SP_SEED)
    with ticking_bar(f"training {what} tokenizer".replace("  ", " "), progress) as bar:
        spm.SentencePieceTrainer.train(
            sentence_iterator=counted(sentences, bar),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=character_coverage,
            hard_vocab_limit=False,
            input_sentence_size=MAX_TRAINING_SENTENCES,
            shuffle_input_sentence=True,
            minloglevel=2,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
        )
    return model.getvalue()


@contextmanager
def ticking_bar(description: str, progress: bool | None) -> Iterator[tqdm]:
    """A sentence counter whose elapsed time keeps moving while SentencePiece's C++ code (which
    releases the GIL) builds the pieces after the last sentence was read."""
    done = threading.Event()
    with tqdm(
        desc=description, unit=" sentences", disable=None if progress is None else not progress
    ) as bar:

        def tick() -> None:
            while not done.wait(1.0):
                bar.refresh()

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield bar
        finally:
            done.set()
            ticker.join()


def counted(sentences: Iterable[str], bar: tqdm) -> Iterator[str]:
    """``sentences`` unchanged, each one counted on ``bar``; the bar says when they are all read."""
    for sentence in sentences:
        bar.update(1)
        yield sentence
    bar.set_postfix_str("all read; building the pieces")


# SentencePiece's own default layout: no padding piece, <unk> <s> </s> first (e.g. the
# models that spm_train writes and that other toolkits share)
SENTENCEPIECE_DEFAULT_IDS = {"pad_id": -1, "unk_id": 0, "bos_id": 1, "eos_id": 2}


class Tokenizer:
    """A loaded SentencePiece model seen through ids PAD/UNK/BOS/EOS = 0/1/2/3.

    Models trained by train_sentencepiece have that layout already. A model in SentencePiece's
    default layout (no pad, unk/bos/eos = 0/1/2) is shifted by one: id = piece id + 1, with 0
    as padding, so the same pieces get the project's special ids and one more vocabulary entry.
    """

    def __init__(self, processor: spm.SentencePieceProcessor) -> None:
        found = {
            "pad_id": processor.pad_id(),
            "unk_id": processor.unk_id(),
            "bos_id": processor.bos_id(),
            "eos_id": processor.eos_id(),
        }
        if found == SPECIAL_IDS:
            self._offset = 0
        elif found == SENTENCEPIECE_DEFAULT_IDS:
            self._offset = 1
        else:
            raise ValueError(
                f"SentencePiece model has special ids {found}; expected {SPECIAL_IDS} or "
                f"SentencePiece's default {SENTENCEPIECE_DEFAULT_IDS}"
            )
        self._processor = processor

    @classmethod
    def from_proto(cls, proto: bytes) -> Tokenizer:
        return cls(spm.SentencePieceProcessor(model_proto=proto))

    @classmethod
    def from_file(cls, path: Path) -> Tokenizer:
        """The SentencePiece model file at ``path``.

        Raises:
            ValueError: the file is missing or holds no usable model; the message names it.
        """
        if not path.is_file():
            raise ValueError(f"{path}: file not found")
        try:
            return cls.from_proto(path.read_bytes())
        except (RuntimeError, ValueError) as error:
            raise ValueError(f"{path}: not a usable SentencePiece model ({error})") from None

    @property
    def proto(self) -> bytes:
        return self._processor.serialized_model_proto()

    @property
    def vocab_size(self) -> int:
        return self._processor.get_piece_size() + self._offset

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Piece ids per text, without BOS/EOS."""
        return [self._shifted(ids) for ids in self._processor.encode(texts, out_type=int)]

    def sample(self, text: str, alpha: float, nbest: int, seed: int) -> list[int]:
        """One segmentation of ``text`` drawn at random (subword regularisation), without BOS/EOS.

        A unigram model draws segmentation x with probability P(x)^alpha / sum_x' P(x')^alpha
        over its ``nbest`` best segmentations (-1: all of them; Kudo 2018); a BPE model skips
        each merge with probability ``alpha`` (BPE-dropout; Provilkov et al. 2020). ``seed``
        fixes the draw: the same seed gives the same pieces.
        """
        spm.set_random_generator_seed(seed)
        ids = self._processor.encode(
            text, out_type=int, enable_sampling=True, alpha=alpha, nbest_size=nbest
        )
        return self._shifted(ids)

    def _shifted(self, ids: list[int]) -> list[int]:
        """SentencePiece's piece ids as the project's ids."""
        return [i + self._offset for i in ids] if self._offset else ids

    def decode(self, ids: list[list[int]]) -> list[str]:
        """Detokenised texts; PAD/BOS/EOS anywhere are skipped (UNK decodes to " ⁇ ")."""
        special = (PAD_ID, BOS_ID, EOS_ID)
        return self._processor.decode(
            [[int(i) - self._offset for i in seq if int(i) not in special] for seq in ids]
        )

    def pieces(self, ids: list[int]) -> list[str]:
        """The piece string of each id (for attention-map axes)."""
        return [
            "<pad>" if int(i) == PAD_ID else self._processor.id_to_piece(int(i) - self._offset)
            for i in ids
        ]
