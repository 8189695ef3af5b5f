"""The cpu config group: denormal flushing, glibc memory caching, thread count."""

from __future__ import annotations

import platform

import pytest
import torch
from omegaconf import OmegaConf

from seq2attn.config import ConfigError
from seq2attn.cpu_tuning import CpuSettings, configure_cpu, keep_freed_memory
from tests.conftest import Compose, compose_config


@pytest.fixture(autouse=True)
def _restore_cpu_settings():
    threads = torch.get_num_threads()
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


def _subnormal_survives() -> bool:
    return bool(torch.tensor([1e-40]).mul(1.0).item() != 0.0)


def test_flush_denormal_turns_subnormals_into_zero() -> None:
    torch.set_flush_denormal(False)  # earlier in-process training runs may have turned it on
    configure_cpu(CpuSettings(flush_denormal=False))
    assert _subnormal_survives()
    configure_cpu(CpuSettings(flush_denormal=True))
    assert not _subnormal_survives()


def test_num_threads_is_set_and_checked() -> None:
    configure_cpu(OmegaConf.create({"num_threads": 1}))
    assert torch.get_num_threads() == 1
    with pytest.raises(ConfigError, match="cpu.num_threads=0: must be a positive number"):
        configure_cpu(OmegaConf.create({"num_threads": 0}))
    with pytest.raises(ConfigError, match=r"cpu\.num_treads: Key 'num_treads' not in"):
        configure_cpu(OmegaConf.create({"num_treads": 2}))


@pytest.mark.parametrize("name", ["train", "eval", "translate"])
def test_every_task_composes_the_cpu_group(compose_train: Compose, name: str) -> None:
    cfg = compose_train() if name == "train" else compose_config(name, ["ckpt_path=x"])
    assert OmegaConf.to_container(cfg.cpu) == {
        "flush_denormal": True,
        "keep_freed_memory": True,
        "num_threads": None,
        "allocator": "system",
    }
    assert cfg.hydra.runtime.choices.cpu == "default"


def test_keep_freed_memory_is_accepted_by_glibc() -> None:
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt thresholds are a glibc feature")
    assert keep_freed_memory()
