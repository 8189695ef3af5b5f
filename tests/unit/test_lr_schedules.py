"""Per-step learning-rate schedules: their equations, resume round trip, config errors."""

from __future__ import annotations

import math

import pytest
import torch

from seq2attn.config import ConfigError, validate
from seq2attn.lr_schedules import InverseSqrtFactor, WarmupCosineFactor, warmup_cosine
from tests.conftest import Compose


def test_warmup_cosine_rises_linearly_then_follows_the_cosine_to_its_floor() -> None:
    factor = WarmupCosineFactor(warmup_steps=10, total_steps=110, final_ratio=0.1)
    assert [factor(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert factor(10) == pytest.approx(1.0)
    # halfway through the decay: f + (1 - f) / 2
    assert factor(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert factor(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert factor(110) == pytest.approx(0.1)
    assert factor(500) == pytest.approx(0.1)


def test_inverse_sqrt_peaks_at_the_end_of_warm_up() -> None:
    factor = InverseSqrtFactor(warmup_steps=100)
    assert factor(0) == pytest.approx(0.01)
    assert factor(99) == pytest.approx(1.0)
    assert factor(399) == pytest.approx(0.5)


def test_scheduler_state_survives_a_checkpoint_round_trip() -> None:
    def run(steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
        scheduler = warmup_cosine(optimizer, warmup_steps=5, total_steps=50)
        for _ in range(steps):
            optimizer.step()
            scheduler.step()
        return optimizer, scheduler

    optimizer, scheduler = run(17)
    resumed_optimizer, resumed = run(0)
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(scheduler.state_dict())
    for _ in range(3):
        for opt, sched in ((optimizer, scheduler), (resumed_optimizer, resumed)):
            opt.step()
            sched.step()
    assert resumed_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * WarmupCosineFactor(5, 50)(20))


def test_the_module_steps_a_per_step_schedule_every_optimizer_step(
    compose_train: Compose,
) -> None:
    from seq2attn.tasks import train

    cfg = compose_train(
        "scheduler=warmup_cosine",
        "scheduler.warmup_steps=4",
        "trainer.max_steps=12",
        "trainer.max_epochs=-1",
        "optimizer.lr=0.01",
    )
    train(cfg)
    checkpoint = torch.load(
        f"{cfg.paths.output_dir}/checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    lr = checkpoint["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr == pytest.approx(0.0, abs=1e-12)  # the cosine ends at final_ratio 0 after 12 steps
    assert checkpoint["lr_schedulers"][0]["last_epoch"] == 12


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["scheduler=warmup_cosine"],
            r"scheduler\.total_steps=-1: must exceed .*trainer\.max_steps",
        ),
        (
            ["scheduler=warmup_cosine", "trainer.max_steps=1000", "scheduler.final_ratio=2"],
            r"scheduler\.final_ratio=2(\.0)?: must lie in \[0, 1\]",
        ),
        (["scheduler=inverse_sqrt", "scheduler.warmup_steps=0"], r"scheduler\.warmup_steps=0"),
        (["scheduler=inverse_sqrt", "scheduler.interval=epoch"], r"counts optimizer steps"),
        (["scheduler.interval=batch"], r"scheduler\.interval=batch: must be epoch or step"),
    ],
)
def test_bad_schedule_settings_are_named(
    compose_train: Compose, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(compose_train(*overrides))
