"""The cpu config group: denormal flushing, glibc memory caching, thread count, oneDNN's kernel
cache."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from seq2attn.config import ConfigError
from seq2attn.cpu_tuning import (
    ONEDNN_CACHE_VARIABLE,
    CpuSettings,
    configure_cpu,
    keep_freed_memory,
)
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
        "onednn_kernel_cache": None,
    }
    assert cfg.hydra.runtime.choices.cpu == "default"


def test_keep_freed_memory_is_accepted_by_glibc() -> None:
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt thresholds are a glibc feature")
    assert keep_freed_memory()


# one bf16 product of one shape three times, after configure_cpu with the given cache size
SAME_PRODUCT_THRICE = """
import sys, torch
from seq2attn.cpu_tuning import CpuSettings, configure_cpu
cache = None if sys.argv[1] == "null" else int(sys.argv[1])
configure_cpu(CpuSettings(num_threads=1, onednn_kernel_cache=cache))
a, b = torch.ones(64, 128, dtype=torch.bfloat16), torch.ones(128, 32, dtype=torch.bfloat16)
for _ in range(3):
    assert (a @ b).eq(128).all()
"""


def _compiled_kernels(cache: str) -> int:
    """How many times oneDNN compiled a kernel (a primitive-cache miss) in SAME_PRODUCT_THRICE."""
    env = {k: v for k, v in os.environ.items() if k != ONEDNN_CACHE_VARIABLE}
    done = subprocess.run(
        [sys.executable, "-c", SAME_PRODUCT_THRICE, cache],
        env={**env, "ONEDNN_VERBOSE": "all"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.count("create:cache_miss")


def test_onednn_kernel_cache_sets_how_many_kernels_onednn_keeps() -> None:
    kept = _compiled_kernels("null")
    if kept == 0:
        pytest.skip("this CPU multiplies bf16 outside oneDNN (no AVX-512), so it has no cache")
    assert kept == 1  # oneDNN's default cache compiles the shape once
    assert _compiled_kernels("0") == 3  # no cache: every product compiles its kernel again
    assert _compiled_kernels("1") == 1


def test_onednn_kernel_cache_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match=r"cpu.onednn_kernel_cache=-1: must be 0 \(no cache\)"):
        CpuSettings(onednn_kernel_cache=-1)
