"""SentencePiece training and loading; the special token ids are fixed here, project-wide."""

from __future__ import annotations

import io
from collections.abc import Iterable

import sentencepiece as spm

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_IDS = {"pad_id": PAD_ID, "unk_id": UNK_ID, "bos_id": BOS_ID, "eos_id": EOS_ID}
SP_SEED = 1234  # SentencePiece samples input_sentence_size sentences; seeded for reproducibility
# SentencePiece training needs ~1.5 GB per 1M sentences; 300k is plenty for 8k-32k pieces
MAX_TRAINING_SENTENCES = 300_000


def train_sentencepiece(
    sentences: Iterable[str], vocab_size: int, model_type: str, character_coverage: float
) -> bytes:
    """Train a SentencePiece model in memory and return its serialised proto.

    ``hard_vocab_limit=False`` makes ``vocab_size`` an upper bound, because a small corpus cannot
    fill a fixed vocabulary. Corpora above MAX_TRAINING_SENTENCES are subsampled (seeded).
    """
    model = io.BytesIO()
    spm.set_random_generator_seed(SP_SEED)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
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


class Tokenizer:
    """A loaded SentencePiece model whose special ids are PAD/UNK/BOS/EOS = 0/1/2/3."""

    def __init__(self, processor: spm.SentencePieceProcessor) -> None:
        found = {
            "pad_id": processor.pad_id(),
            "unk_id": processor.unk_id(),
            "bos_id": processor.bos_id(),
            "eos_id": processor.eos_id(),
        }
        if found != SPECIAL_IDS:
            raise ValueError(
                f"SentencePiece model has special ids {found}, expected {SPECIAL_IDS}; "
                "train it with seq2attn.data.tokenizer.train_sentencepiece"
            )
        self._processor = processor

    @classmethod
    def from_proto(cls, proto: bytes) -> Tokenizer:
        return cls(spm.SentencePieceProcessor(model_proto=proto))

    @property
    def proto(self) -> bytes:
        return self._processor.serialized_model_proto()

    @property
    def vocab_size(self) -> int:
        return self._processor.get_piece_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Piece ids per text, without BOS/EOS."""
        return self._processor.encode(texts, out_type=int)

    def decode(self, ids: list[list[int]]) -> list[str]:
        """Detokenised texts; PAD/BOS/EOS anywhere are skipped (UNK decodes to " ⁇ ")."""
        return self._processor.decode([[int(i) for i in seq] for seq in ids])

    def pieces(self, ids: list[int]) -> list[str]:
        """The piece string of each id (for attention-map axes)."""
        return [self._processor.id_to_piece(int(i)) for i in ids]
