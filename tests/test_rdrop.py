"""R-Drop (``rdrop_alpha``): the loss's equation and gradients, the training step's two passes
with independent dropout masks, a run that trains with it, and the settings it refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from seq2attn.config import ConfigError, validate
from seq2attn.data.datamodule import build_datamodule
from seq2attn.data.dataset import Batch
from seq2attn.loss import ROW_MULTIPLE, SoftTargets, rdrop_nll, token_nll
from seq2attn.models.seq2seq import Seq2Seq
from seq2attn.module import Seq2SeqModule, build_module
from seq2attn.tasks import train
from tests.conftest import Compose, refusal_line, run_refused

PAD = 0

# the module's loss is called here outside a trainer, whose self.log calls Lightning then warns of
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`:UserWarning")


def _rows(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (14, 9) of 7 positions run twice (rows i and 7 + i), and their targets."""
    torch.manual_seed(seed)
    logits = torch.randn(14, 9, requires_grad=True)
    return logits, torch.randint(1, 9, (7,)).repeat(2)


def _reference(logits, targets, alpha, smoothing, teacher):
    """Both passes' cross-entropies plus alpha/2 times KL(p || q) + KL(q || p), by F.kl_div."""
    ce = F.cross_entropy(logits, targets, label_smoothing=smoothing, reduction="sum")
    if teacher is not None:
        soft = -(teacher.logits.softmax(dim=-1) * logits.log_softmax(dim=-1)).sum()
        ce = (1 - teacher.weight) * ce + teacher.weight * soft
    p, q = logits[:7].log_softmax(dim=-1), logits[7:].log_softmax(dim=-1)
    kl = F.kl_div(q, p, log_target=True, reduction="sum")  # KL(p || q)
    kl = kl + F.kl_div(p, q, log_target=True, reduction="sum")  # + KL(q || p)
    return ce + alpha / 2 * kl, kl


@pytest.mark.parametrize(("alpha", "smoothing", "distilled"), [(5.0, 0.0, False), (0.7, 0.1, True)])
def test_the_loss_is_both_cross_entropies_plus_the_symmetric_kl(
    alpha: float, smoothing: float, distilled: bool
) -> None:
    logits, targets = _rows()
    teacher = SoftTargets(torch.randn(14, 9), 0.4) if distilled else None
    got = rdrop_nll(logits, targets, alpha, smoothing, teacher)
    want, kl = _reference(logits, targets, alpha, smoothing, teacher)
    torch.testing.assert_close(got.total, want)
    torch.testing.assert_close(got.symmetric_kl, kl)
    (got_grad,) = torch.autograd.grad(got.total, [logits])
    (want_grad,) = torch.autograd.grad(want, [logits])
    torch.testing.assert_close(got_grad, want_grad)
    # the consistency term pulls on both passes: neither is held fixed as the other's target
    (plain,) = torch.autograd.grad(
        rdrop_nll(logits, targets, 0.0, smoothing, teacher).total, [logits]
    )
    for rows in (slice(0, 7), slice(7, 14)):
        assert (got_grad[rows] - plain[rows]).abs().max() > 1e-3


def test_identical_passes_cost_exactly_their_cross_entropy() -> None:
    logits, targets = _rows()
    twins = logits[:7].detach().repeat(2, 1)
    loss = rdrop_nll(twins, targets, 5.0)
    assert loss.symmetric_kl.item() == 0.0
    torch.testing.assert_close(loss.total, 2 * token_nll(twins[None, :7], targets[None, :7]))


def _module(compose_train: Compose, *overrides: str) -> tuple[Seq2SeqModule, Batch]:
    cfg = compose_train(*overrides)
    run = validate(cfg)
    datamodule = build_datamodule(run.data)
    datamodule.setup("fit")
    return build_module(cfg, run, datamodule), next(iter(datamodule.train_dataloader()))


class _FixedTeacher:
    """A distillation teacher whose logits are given: (B, T, V)."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits

    def soft_targets(self, batch: Batch) -> SoftTargets:
        return SoftTargets(self.logits, 0.3)


@pytest.mark.parametrize("distilled", [False, True])
def test_a_training_step_runs_the_batch_twice_with_independent_dropout(
    compose_train: Compose, distilled: bool
) -> None:
    module, batch = _module(compose_train, "rdrop_alpha=2", "label_smoothing=0.1")
    model = module.model
    vocabulary = model.output_layer.out_features
    teacher = torch.randn(*batch.tgt_out.shape, vocabulary) if distilled else None
    module.teacher = _FixedTeacher(teacher) if distilled else None  # type: ignore[assignment]
    module.train()
    torch.manual_seed(7)
    got = module._training_loss(batch, 1.0)
    torch.manual_seed(7)  # the same dropout masks, drawn for the doubled batch
    twice = model(batch.src.repeat(2, 1), batch.src_lengths.repeat(2), batch.tgt_in.repeat(2, 1))
    assert twice.logits is not None
    targets = batch.tgt_out.repeat(2, 1)
    keep = targets != PAD
    soft = None if teacher is None else SoftTargets(teacher.repeat(2, 1, 1)[keep], 0.3)
    want = rdrop_nll(twice.logits[keep], targets[keep], 2.0, 0.1, soft)
    tokens = batch.num_target_tokens
    torch.testing.assert_close(got, want.total / (2 * tokens))
    assert want.symmetric_kl.item() / tokens > 1e-3  # two masks, not one mask twice
    half = batch.src.size(0)
    assert not torch.allclose(twice.logits[:half], twice.logits[half:])


def test_without_dropout_the_doubled_loss_is_the_fused_single_pass_loss(
    compose_train: Compose,
) -> None:
    module, batch = _module(compose_train, "rdrop_alpha=3", "label_smoothing=0.1")
    module.eval()  # no dropout: the two passes agree, the KL term is zero
    doubled = module._training_loss(batch, 1.0)
    module.rdrop_alpha = 0.0
    single = module._training_loss(batch, 1.0)
    torch.testing.assert_close(doubled, single, rtol=1e-5, atol=1e-6)


def test_under_cpu_bf16_the_output_layer_sees_padded_row_counts(compose_train: Compose) -> None:
    module, batch = _module(compose_train, "rdrop_alpha=1")
    module.eval()  # the same pass twice: fp32 and bf16 losses are comparable
    rows: list[int] = []
    module.model.output_layer.register_forward_hook(
        lambda layer, inputs, output: rows.append(inputs[0].size(0))
    )
    fp32 = module._training_loss(batch, 1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = module._training_loss(batch, 1.0)
    assert rows[0] == 2 * batch.num_target_tokens  # only the non-padding positions
    assert rows[1] % ROW_MULTIPLE == 0 and 0 <= rows[1] - rows[0] < ROW_MULTIPLE
    torch.testing.assert_close(bf16, fp32, rtol=2e-2, atol=0)


def test_a_run_trains_every_step_on_the_doubled_batch(
    compose_train: Compose, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[torch.Tensor] = []
    forward = Seq2Seq.forward

    def recorded(self: Seq2Seq, src: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if self.training:
            seen.append(src)
        return forward(self, src, *args, **kwargs)

    monkeypatch.setattr(Seq2Seq, "forward", recorded)
    cfg = compose_train("rdrop_alpha=1", "trainer.max_steps=3")
    train(cfg)
    assert len(seen) == 3
    for src in seen:
        half = src.size(0) // 2
        assert src.size(0) == 2 * half and torch.equal(src[:half], src[half:])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rdrop_alpha=-1"], r"rdrop_alpha=-1.0: must be a finite number, 0 \(off\) or more"),
        (["rdrop_alpha=nan"], r"rdrop_alpha=nan: must be a finite number"),
        (["rdrop_alpha=inf"], r"rdrop_alpha=inf: must be a finite number"),
        (
            ["rdrop_alpha=2", "teacher_forcing=linear"],
            r"rdrop_alpha=2.0 with teacher forcing below 1 \(LinearSchedule\): the two passes "
            r"would be fed different tokens; use teacher_forcing=always, or rdrop_alpha=0",
        ),
        (
            ["rdrop_alpha=5", "model.dropout=0"],
            r"rdrop_alpha=5.0 with model.dropout=0 and no word dropout: the two passes R-Drop "
            r"compares would be identical",
        ),
    ],
)
def test_settings_it_cannot_use_are_refused(
    compose_train: Compose, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(compose_train(*overrides))
    for word_dropout in ("source", "target"):  # either dropout makes two passes differ
        validate(
            compose_train(
                "rdrop_alpha=5", "model.dropout=0", f"model.{word_dropout}_word_dropout=0.1"
            )
        )


def test_the_command_line_names_the_refused_setting(tmp_path: Path, cache_dir: Path) -> None:
    result = run_refused(
        "train.py", "rdrop_alpha=5", "model.dropout=0", f"paths.cache_dir={cache_dir}",
        run_dir=tmp_path / "refused",
    )  # fmt: skip
    assert "set model.dropout (or a word dropout) above 0" in refusal_line(result)
    assert not (tmp_path / "refused" / "checkpoints").exists()
