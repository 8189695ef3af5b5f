"""Word-level knowledge distillation: the mixed-target loss, its gradients, and a student trained
from a real teacher checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from seq2attn import distillation
from seq2attn import loss as loss_module
from seq2attn.checkpoints import CheckpointError
from seq2attn.checkpoints.loading import read_checkpoint, resolve_checkpoint
from seq2attn.config import ConfigError, validate
from seq2attn.data.datamodule import build_datamodule
from seq2attn.distillation import Teacher, load_teacher
from seq2attn.loss import SoftTargets, linear_cross_entropy, token_nll, training_nll
from seq2attn.module import build_module
from seq2attn.tasks import train
from tests.conftest import Compose, loaded_as_english_to_german

PAD = 0


def _inputs(seed: int = 0) -> tuple[torch.Tensor, nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    features = torch.randn(3, 5, 8, requires_grad=True)
    layer = nn.Linear(8, 11)
    targets = torch.randint(1, 11, (3, 5))
    targets[0, 3:] = PAD
    targets[2, 1:] = PAD
    teacher = torch.randn(3, 5, 11).softmax(dim=-1)
    return features, layer, targets, teacher


def _reference(features, layer, targets, teacher, smoothing, weight):
    """(1 - w) smoothed cross-entropy + w sum_v -q_v log p_v over the non-padding rows."""
    logits = layer(features).flatten(0, 1)
    gold = targets.flatten()
    hard = F.cross_entropy(
        logits, gold, ignore_index=PAD, label_smoothing=smoothing, reduction="sum"
    )
    keep = gold != PAD
    soft = -(teacher.flatten(0, 1)[keep] * logits[keep].log_softmax(dim=-1)).sum()
    return (1 - weight) * hard + weight * soft


def _grads(loss, features, layer):
    return torch.autograd.grad(loss * 0.37, [features, layer.weight, layer.bias])


@pytest.mark.parametrize(("smoothing", "weight"), [(0.0, 0.5), (0.1, 0.3), (0.1, 1.0)])
@pytest.mark.parametrize("chunk_rows", [512, 4])
def test_fused_loss_and_gradients_equal_the_mixed_target_cross_entropy(
    smoothing: float, weight: float, chunk_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loss_module, "CHUNK_ROWS", chunk_rows)
    features, layer, targets, teacher = _inputs()
    soft = SoftTargets(teacher.log(), weight)
    fused = linear_cross_entropy(features, layer, targets, smoothing, PAD, soft)
    reference = _reference(features, layer, targets, teacher, smoothing, weight)
    torch.testing.assert_close(fused, reference)
    for got, want in zip(
        _grads(fused, features, layer), _grads(reference, features, layer), strict=True
    ):
        torch.testing.assert_close(got, want)


def test_the_logits_path_equals_the_fused_one() -> None:
    features, layer, targets, teacher = _inputs(1)
    soft = SoftTargets(teacher.log(), 0.4)
    from_logits = token_nll(layer(features), targets, 0.1, soft)
    fused = linear_cross_entropy(features, layer, targets, 0.1, PAD, soft)
    torch.testing.assert_close(from_logits, fused)
    torch.testing.assert_close(_grads(from_logits, features, layer), _grads(fused, features, layer))


def test_only_a_teacher_that_disagrees_with_the_references_changes_the_loss() -> None:
    """q = the smoothed one-hot targets themselves: any weight gives the plain loss; another q
    does not."""
    features, layer, targets, other = _inputs(2)
    smoothing, classes = 0.1, layer.out_features
    smoothed = F.one_hot(targets, classes).float() * (1 - smoothing) + smoothing / classes
    plain = linear_cross_entropy(features, layer, targets, smoothing, PAD)
    agreeing = SoftTargets(smoothed.log(), 0.7)
    torch.testing.assert_close(
        linear_cross_entropy(features, layer, targets, smoothing, PAD, agreeing), plain
    )
    disagreeing = linear_cross_entropy(
        features, layer, targets, smoothing, PAD, SoftTargets(other.log(), 0.7)
    )
    assert abs(disagreeing.item() - plain.item()) > 0.1


def test_under_bf16_autocast_the_padded_rows_take_no_teacher_term() -> None:
    """On a CPU the bf16 product pads the kept rows to a multiple of 64 with zero rows; the
    teacher's rows must line up with the kept ones and the padding must get no gradient."""
    torch.manual_seed(3)
    features = torch.randn(7, 11, 8, requires_grad=True)
    layer = nn.Linear(8, 13)
    targets = torch.randint(1, 13, (7, 11))
    targets[:, 9:] = PAD  # 63 kept rows: padded to 64
    teacher = torch.randn(7, 11, 13).softmax(dim=-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        soft = SoftTargets(teacher.log(), 0.5)
        fused = linear_cross_entropy(features, layer, targets, 0.1, PAD, soft)
        reference = _reference(features, layer, targets, teacher, 0.1, 0.5)
    torch.testing.assert_close(fused, reference.float(), rtol=2e-2, atol=0)
    (grad,) = torch.autograd.grad(fused, [features])
    assert torch.count_nonzero(grad[targets == PAD]) == 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["distillation.weight=1.5"], r"distillation.weight=1.5: must lie in \[0, 1\]"),
        (
            ["distillation.teacher=some.ckpt", "distillation.weight=0"],
            r"distillation.weight=0 with distillation.teacher=some.ckpt",
        ),
        (
            ["distillation.teacher=some.ckpt", "data.spm_model=pieces.model"],
            r"data.spm_model=pieces.model with distillation.teacher",
        ),
    ],
)
def test_bad_distillation_settings_are_named(
    compose_train: Compose, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(compose_train(*overrides))


def test_a_missing_teacher_is_named(compose_train: Compose, tmp_path: Path) -> None:
    run = validate(compose_train(f"distillation.teacher={tmp_path / 'gone.ckpt'}"))
    with pytest.raises(CheckpointError, match="gone.ckpt"):
        load_teacher(run.distillation, share_embeddings=False)


def test_a_teacher_of_another_direction_is_refused(
    compose_train: Compose, trained_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(distillation, "load_checkpoints", loaded_as_english_to_german)
    run = validate(compose_train(f"distillation.teacher={trained_run}"))
    with pytest.raises(ConfigError, match=r"translates en->de, this run de->en"):
        load_teacher(run.distillation, False, ("de", "en"))
    assert load_teacher(run.distillation, False, (None, None)) is not None  # nothing to compare


def test_the_training_loss_mixes_in_the_teachers_distributions(
    compose_train: Compose, trained_run: Path
) -> None:
    cfg = compose_train(f"distillation.teacher={trained_run}", "distillation.weight=0.6")
    run = validate(cfg)
    teacher = load_teacher(run.distillation, share_embeddings=False)
    assert teacher is not None and teacher.weight == 0.6
    datamodule = build_datamodule(run.data, teacher.tokenizers)
    datamodule.setup("fit")
    assert datamodule.tgt_tokenizer.proto == teacher.tgt_tokenizer.proto
    module = build_module(cfg, run, datamodule, teacher)
    batch = next(iter(datamodule.train_dataloader()))
    model = module.model
    output = model(batch.src, batch.src_lengths, batch.tgt_in, compute_logits=False)
    soft = teacher.soft_targets(batch)
    got = training_nll(model, output, batch.tgt_out, run.label_smoothing, soft)
    with torch.no_grad():
        q = teacher.model(batch.src, batch.src_lengths, batch.tgt_in).logits.softmax(dim=-1)
    logits = model.output_layer(output.features)
    want = _reference_from_logits(logits, batch.tgt_out, q, run.label_smoothing, 0.6)
    torch.testing.assert_close(got, want)
    assert not teacher.model.training
    assert not any(name.startswith("teacher") for name in module.state_dict())
    assert {id(p) for p in module.parameters()} == {id(p) for p in model.parameters()}


def _reference_from_logits(logits, targets, teacher, smoothing, weight):
    flat, gold = logits.flatten(0, 1), targets.flatten()
    hard = F.cross_entropy(flat, gold, ignore_index=PAD, label_smoothing=smoothing, reduction="sum")
    keep = gold != PAD
    soft = -(teacher.flatten(0, 1)[keep] * flat[keep].log_softmax(dim=-1)).sum()
    return (1 - weight) * hard + weight * soft


def test_a_student_trains_on_the_teachers_tokenizers_and_leaves_it_untouched(
    compose_train: Compose, trained_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Teacher] = []
    weights: dict[str, torch.Tensor] = {}
    original = Teacher.soft_targets

    def counted(self: Teacher, batch):  # type: ignore[no-untyped-def]
        if not seen:
            weights.update({k: v.clone() for k, v in self.model.state_dict().items()})
        seen.append(self)
        return original(self, batch)

    monkeypatch.setattr(Teacher, "soft_targets", counted)
    teacher_meta = read_checkpoint(resolve_checkpoint(trained_run))["seq2attn"]
    cfg = compose_train(
        f"distillation.teacher={trained_run}", "trainer.max_steps=3", "data.vocab_size=150"
    )
    train(cfg)
    assert len(seen) == 3  # once per training batch, never in validation or test
    teacher = seen[0].model
    assert not teacher.training
    assert all(torch.equal(teacher.state_dict()[k], v) for k, v in weights.items())
    student = read_checkpoint(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    assert student["seq2attn"]["tgt_spm"] == teacher_meta["tgt_spm"]  # not a 150-piece model
    assert student["seq2attn"]["src_spm"] == teacher_meta["src_spm"]
    assert student["seq2attn"]["config"]["distillation"]["teacher"] == str(trained_run)
    assert not any("teacher" in key for key in student["state_dict"])
