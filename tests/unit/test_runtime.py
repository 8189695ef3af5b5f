"""The cpu config block: denormal flushing, glibc memory caching, thread count."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from seq2attn.config import ConfigError
from seq2attn.runtime import configure_cpu, keep_freed_memory


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
    configure_cpu(OmegaConf.create({"flush_denormal": False, "num_threads": None}))
    assert _subnormal_survives()
    configure_cpu(OmegaConf.create({"flush_denormal": True, "num_threads": None}))
    assert not _subnormal_survives()


def test_num_threads_is_set_and_checked() -> None:
    configure_cpu(OmegaConf.create({"num_threads": 1}))
    assert torch.get_num_threads() == 1
    with pytest.raises(ConfigError, match="cpu.num_threads=0: must be a positive number"):
        configure_cpu(OmegaConf.create({"num_threads": 0}))


def test_keep_freed_memory_is_accepted_by_glibc() -> None:
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt thresholds are a glibc feature")
    assert keep_freed_memory()
