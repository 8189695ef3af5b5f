"""Word-level knowledge distillation (Kim and Rush, 2016): a trained teacher reads each training
batch teacher-forced, and its next-piece distributions q_t = softmax(z_t^teacher) join the
student's targets with weight alpha (:func:`seq2attn.loss.linear_cross_entropy`):

    targets_t = (1 - alpha) ((1 - eps) onehot(y_t) + eps / V) + alpha q_t

The teacher is a seq2attn checkpoint, read like any other (its stored config builds only the
model); the student trains on its tokenizers, so that both score the same pieces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from seq2attn.checkpoints.loading import check_reusable, load_checkpoints, resolve_checkpoint
from seq2attn.config.run import DistillationSchema
from seq2attn.data.dataset import Batch
from seq2attn.data.tokenizer import Tokenizer
from seq2attn.loss import SoftTargets
from seq2attn.models.seq2seq import Seq2Seq

log = logging.getLogger(__name__)


@dataclass
class Teacher:
    """A frozen model in eval mode (no dropout) and the weight of its distributions."""

    model: Seq2Seq
    path: Path
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer
    weight: float

    @property
    def tokenizers(self) -> tuple[Tokenizer, Tokenizer]:
        """(source, target): the student's, so that both score the same pieces."""
        return self.src_tokenizer, self.tgt_tokenizer

    def to(self, device: torch.device) -> None:
        self.model.to(device)

    def soft_targets(self, batch: Batch) -> SoftTargets:
        """The teacher's logits (B, T, V) at the batch's target positions, fed the gold prefix;
        computed without gradients in fp32 weights, under the step's autocast if any. The loss
        takes their softmax over the non-padding rows only."""
        with torch.no_grad():
            logits = self.model(batch.src, batch.src_lengths, batch.tgt_in).logits
            assert logits is not None
            return SoftTargets(logits, self.weight)


def load_teacher(
    settings: DistillationSchema,
    share_embeddings: bool,
    languages: tuple[str | None, str | None] = (None, None),
) -> Teacher | None:
    """The teacher of ``distillation`` (None when it names none), frozen. Refused: a teacher
    trained for other (source, target) ``languages`` where both runs name theirs, and one whose
    two tokenizers differ under ``model.share_embeddings``. ``last`` is not a shorthand here
    (it would name the newest run, which may be the student's own)."""
    if settings.teacher is None:
        return None
    path = resolve_checkpoint(settings.teacher)
    loaded = load_checkpoints([path])
    assert isinstance(loaded.model, Seq2Seq)  # one file, so no ensemble
    tokenizers = loaded.src_tokenizer, loaded.tgt_tokenizer
    option = f"distillation.teacher={settings.teacher}"
    check_reusable(option, loaded.config, tokenizers, share_embeddings, languages)
    loaded.model.requires_grad_(False)
    log.info(
        "distilling from %s: its distributions get weight %g in the targets",
        path,
        settings.weight,
    )
    return Teacher(loaded.model, path, loaded.src_tokenizer, loaded.tgt_tokenizer, settings.weight)
