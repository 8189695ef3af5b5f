"""precision=auto: bf16-mixed only where bf16 products are faster by the margin, the probe cached
per machine, and the choice made before the Trainer is built and recorded with the run."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from seq2attn.config import ConfigError, validate
from seq2attn.precision import (
    MARGIN,
    Cpu,
    choose_precision,
    probe_speedup,
    read_cpu,
    resolve_precision,
)
from seq2attn.tasks import train
from tests.conftest import Compose

BF16_CPU = Cpu("Test CPU with bf16", frozenset({"avx2", "avx512_bf16"}))


class CountingProbe:
    """A probe that returns the given speedups in turn and counts its calls."""

    def __init__(self, *speedups: float) -> None:
        self.speedups, self.calls = speedups, 0

    def __call__(self) -> float:
        self.calls += 1
        return self.speedups[min(self.calls, len(self.speedups)) - 1]


def _choose(cache_dir: Path, probe: Callable[[], float], cpu: Cpu = BF16_CPU) -> tuple[str, str]:
    return choose_precision(cache_dir, "cpu", cpu, probe)


@pytest.mark.parametrize(
    ("speedup", "chosen"),
    [(6.0, "bf16-mixed"), (MARGIN, "bf16-mixed"), (1.15, "32-true"), (0.6, "32-true")],
)
def test_bf16_only_when_faster_by_the_margin(tmp_path: Path, speedup: float, chosen: str) -> None:
    precision, reason = _choose(tmp_path, CountingProbe(speedup))
    assert precision == chosen
    assert f"{speedup:.2f}x" in reason and "Test CPU with bf16" in reason


def test_a_cpu_without_bf16_instructions_is_not_probed(tmp_path: Path) -> None:
    probe = CountingProbe(9.0)
    precision, reason = _choose(tmp_path, probe, Cpu("Old CPU", frozenset({"avx2", "fma"})))
    assert (precision, probe.calls) == ("32-true", 0)
    assert "Old CPU lists no bf16 instructions" in reason
    assert not list(tmp_path.iterdir())


def test_unknown_flags_are_probed(tmp_path: Path) -> None:
    probe = CountingProbe(2.0)
    assert _choose(tmp_path, probe, Cpu("Unknown CPU", None))[0] == "bf16-mixed"
    assert probe.calls == 1


def test_the_probe_is_cached_and_reused(tmp_path: Path) -> None:
    probe = CountingProbe(1.5, 0.5)
    first = _choose(tmp_path, probe)
    second = _choose(tmp_path, probe)
    assert probe.calls == 1
    assert first[0] == second[0] == "bf16-mixed"
    (cached,) = tmp_path.glob("precision-*.json")
    assert json.loads(cached.read_text())["speedup"] == 1.5
    assert "probe run now" in first[1] and "from an earlier run" in second[1]
    assert str(cached) in second[1]


def test_another_machine_probes_again(tmp_path: Path) -> None:
    probe = CountingProbe(1.5, 0.5, 0.7)
    _choose(tmp_path, probe)
    other_model = Cpu("Another CPU", BF16_CPU.flags)
    assert _choose(tmp_path, probe, other_model)[0] == "32-true"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        _choose(tmp_path, probe)
    finally:
        torch.set_num_threads(threads)
    assert probe.calls == 3
    assert len(list(tmp_path.glob("precision-*.json"))) == 3
    assert _choose(tmp_path, probe)[0] == "bf16-mixed" and probe.calls == 3


@pytest.mark.parametrize(
    "damage", [b"", b'{"key": ', b"[]", b'{"speedup": 2.0}', b"\xff\xfe", "speedup=nan"]
)
def test_a_damaged_cache_file_is_probed_again(tmp_path: Path, damage: bytes | str) -> None:
    probe = CountingProbe(0.5, 2.0)
    _choose(tmp_path, probe)
    (cached,) = tmp_path.glob("precision-*.json")
    if isinstance(damage, str):  # the right key, an unusable value
        record = json.loads(cached.read_text())
        cached.write_text(json.dumps({**record, "speedup": math.nan}))
    else:
        cached.write_bytes(damage)
    assert _choose(tmp_path, probe)[0] == "bf16-mixed"
    assert probe.calls == 2
    assert json.loads(cached.read_text())["speedup"] == 2.0


def test_read_cpu_takes_x86_and_arm_flags(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text(
        "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 amx_bf16\n\n"
        "processor\t: 1\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 amx_bf16\n"
    )
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16\nCPU part\t: 0xd40\n")
    assert read_cpu(x86) == Cpu("Intel Xeon", frozenset({"fpu", "avx2", "amx_bf16"}))
    assert read_cpu(x86).has_bf16 and read_cpu(arm).has_bf16
    assert read_cpu(tmp_path / "absent").flags is None
    assert read_cpu(tmp_path / "absent").has_bf16 is None


def test_the_probe_measures_a_ratio() -> None:
    speedup = probe_speedup()  # a second where bf16 is fast, a fraction where it is emulated
    assert math.isfinite(speedup) and speedup > 0


def test_auto_is_resolved_before_the_trainer_is_built(compose_train: Compose) -> None:
    cfg = compose_train("precision=auto")
    validate(cfg)
    choice = resolve_precision(cfg)
    assert (choice.requested, cfg.trainer.precision) == ("auto", choice.chosen)
    assert choice.chosen in {"bf16-mixed", "32-true"} and choice.reason
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    assert trainer.precision == choice.chosen


def test_a_run_records_the_choice(compose_train: Compose, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="seq2attn.precision")
    cfg = compose_train("precision=auto", "debug=limit", "trainer.max_epochs=1")
    metrics = train(cfg)
    assert math.isfinite(metrics["train/loss"])
    out = Path(cfg.paths.output_dir)
    record = json.loads((out / "run.json").read_text())["precision"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert record["requested"] == "auto"
    assert record["chosen"] == config["trainer"]["precision"] in {"bf16-mixed", "32-true"}
    assert f"precision=auto: chose {record['chosen']} ({record['reason']})" in caplog.messages


def test_a_given_precision_is_kept(compose_train: Compose) -> None:
    cfg = compose_train("precision=bf16-mixed")
    choice = resolve_precision(cfg)
    assert (choice.requested, choice.chosen, cfg.trainer.precision) == ("bf16-mixed",) * 3


@pytest.mark.parametrize("alias", ["32", "64", "64-true"])
def test_lightning_precisions_and_aliases_pass(compose_train: Compose, alias: str) -> None:
    validate(compose_train(f"trainer.precision={alias}"))


def test_an_unknown_precision_is_a_one_line_error(compose_train: Compose) -> None:
    with pytest.raises(ConfigCompositionException, match="precision/bogus"):
        compose_train("precision=bogus")
    with pytest.raises(ConfigError) as error:
        validate(compose_train("trainer.precision=bogus"))
    assert str(error.value).startswith("trainer.precision=bogus: expected one of auto, ")
    assert "bf16-mixed" in str(error.value) and "\n" not in str(error.value)
