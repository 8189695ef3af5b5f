"""Per-step learning-rate schedules: their equations, resume round trip, config errors."""

from __future__ import annotations

import math
from datetime import timedelta
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import Timer

from seq2attn.config import ConfigError, validate
from seq2attn.lr_schedules import InverseSqrtFactor, WarmupCosineFactor, warmup_cosine
from seq2attn.module import Seq2SeqModule
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


def test_warmup_cosine_follows_the_time_spent_when_it_runs_ahead_of_the_steps() -> None:
    factor = WarmupCosineFactor(warmup_steps=10, total_steps=1010)
    factor.time_fraction = 0.5
    assert factor(5) == pytest.approx(0.6)  # the warm-up stays counted in steps
    assert factor(110) == pytest.approx(0.5)  # time 0.5 is ahead of the steps' 0.1
    assert factor(810) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.8)))  # steps ahead
    factor.time_fraction = 1.3  # past the limit: held at the floor
    assert factor(110) == pytest.approx(0.0)


class _StoppedClock(Timer):
    """A time limit of ``limit`` seconds of which ``elapsed`` are spent."""

    def __init__(self, elapsed: float, limit: float) -> None:
        super().__init__(duration=timedelta(seconds=limit))
        self.elapsed = elapsed

    def time_elapsed(self, stage: str = "train") -> float:
        return self.elapsed


def _time_limit_spent(elapsed: float, limit: float) -> float:
    """The module's clock, read against a trainer that holds only a stopped timer."""
    trainer = SimpleNamespace(callbacks=[_StoppedClock(elapsed, limit)])
    return Seq2SeqModule.time_limit_spent(SimpleNamespace(trainer=trainer))  # type: ignore[arg-type]


@pytest.mark.parametrize(("elapsed", "lr"), [(0.0, 1.0), (300.0, 0.5), (600.0, 0.0)])
def test_the_schedule_reads_the_share_of_the_time_limit_spent(elapsed: float, lr: float) -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(
        optimizer,
        warmup_steps=2,
        total_steps=100_002,
        clock=lambda: _time_limit_spent(elapsed, 600),
    )
    for _ in range(3):  # past the warm-up, where the steps' own progress is ~0
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lr, abs=1e-4)
    assert "clock" not in scheduler.state_dict()["lr_lambdas"][0]  # a process's, not saved


def test_time_spent_past_the_limit_counts_as_the_whole_limit() -> None:
    assert _time_limit_spent(elapsed=600.5, limit=600.0) == 1.0
    assert _time_limit_spent(elapsed=150.0, limit=600.0) == pytest.approx(0.25)


def test_a_run_stopped_by_its_time_limit_ends_annealed_and_validated(
    compose_train: Compose,
) -> None:
    from seq2attn.tasks import train

    cfg = compose_train(
        "scheduler=warmup_cosine",
        "scheduler.warmup_steps=2",
        "trainer.max_steps=1000000",
        "trainer.max_epochs=-1",
        "trainer.check_val_every_n_epoch=null",
        "trainer.val_check_interval=1000000",  # validated only when the time is up
        "trainer.max_time=00:00:00:06",
        "scheduler.anneal_to_time_limit=true",
        "optimizer.lr=0.01",
    )
    metrics = train(cfg)
    assert 2 < metrics["trainer/global_step"] < 1_000_000  # stopped by the clock
    assert "val/bleu" in metrics
    checkpoint = torch.load(
        f"{cfg.paths.output_dir}/checkpoints/last.ckpt", map_location="cpu", weights_only=False
    )
    steps = metrics["trainer/global_step"]
    schedule = checkpoint["lr_schedulers"][0]
    assert schedule["last_epoch"] == steps  # saved after the last optimizer step
    # the decay followed the clock: the share of the 6 s spent, far ahead of the steps' ~1e-5
    spent = schedule["lr_lambdas"][0]["time_fraction"]
    assert 0.3 < spent <= 1.0
    factor = WarmupCosineFactor(warmup_steps=2, total_steps=1_000_000)
    factor.time_fraction = spent
    lr = checkpoint["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr == pytest.approx(0.01 * factor(int(steps)))
    assert lr < 0.01 * 0.5 * (1 + math.cos(math.pi * 0.3))


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
