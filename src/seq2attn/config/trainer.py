"""Checks of the ``trainer`` and ``optimizer`` nodes that Lightning or torch would otherwise
make only after the data is read (or never, on a machine without a GPU)."""

from __future__ import annotations

import importlib.util
from typing import Any, get_args

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from seq2attn.schema import ConfigError

GPU_STRATEGIES = {"FSDPStrategy": None, "DeepSpeedStrategy": "deepspeed"}


def _check_precision(precision: str) -> None:
    """Lightning's precisions (and aliases such as 32 and bf16), and seq2attn.precision's auto."""
    # imported here: inference reads configs without Lightning
    from lightning.fabric.connector import (
        _PRECISION_INPUT_STR,
        _convert_precision_to_unified_args,
    )

    precisions = ("auto", *get_args(_PRECISION_INPUT_STR))
    if precision in precisions:
        return
    try:
        _convert_precision_to_unified_args(precision)  # type: ignore[arg-type]
    except ValueError:
        raise ConfigError(
            f"trainer.precision={precision}: expected one of {', '.join(precisions)}"
        ) from None


def strategy_name(trainer: Any) -> str:
    """The class name of the trainer's strategy node (``FSDPStrategy``), also for Lightning's
    registered names of the GPU-only ones (``fsdp``, ``deepspeed_stage_2``); "" for any other
    plain name."""
    strategy = trainer.get("strategy")
    if OmegaConf.is_dict(strategy):
        return str(strategy.get("_target_", "")).rsplit(".", 1)[-1]
    prefixes = {"fsdp": "FSDPStrategy", "deepspeed": "DeepSpeedStrategy"}
    return next((n for p, n in prefixes.items() if str(strategy).startswith(p)), "")


def check_hardware(trainer: Any) -> None:
    """An unknown precision stops here, and so do GPU-only precision and strategies on a
    CPU-only machine (Lightning would reject the first only when the Trainer is built, and
    silently downgrade 16-mixed to bf16, or fail deep inside set-up)."""
    precision = str(trainer.get("precision", "32-true"))
    _check_precision(precision)
    accelerator = str(trainer.get("accelerator", "auto"))
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if precision in {"16-mixed", "16", "16-true"} and on_cpu:
        raise ConfigError(
            f"precision={precision} needs a CUDA GPU (trainer.accelerator={accelerator}, "
            "no GPU found); on CPU use precision=bf16-mixed or precision=32-true"
        )
    name = strategy_name(trainer)
    if name not in GPU_STRATEGIES:
        return
    if on_cpu:
        raise ConfigError(
            f"strategy={name} needs a CUDA GPU (trainer.accelerator={accelerator}, no GPU found); "
            "on CPU use strategy=ddp or strategy=ddp_spawn"
        )
    package = GPU_STRATEGIES[name]
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(f"strategy={name} needs the '{package}' package: pip install {package}")


def check_trainer(trainer: Any) -> None:
    """The trainer keys Lightning would reject only after the data is read."""
    for key, minimum in (("max_epochs", -1), ("max_steps", -1), ("num_nodes", 1)):
        value = trainer.get(key)
        if value is not None and (not isinstance(value, int) or value < minimum):
            raise ConfigError(f"trainer.{key}={value}: must be a whole number >= {minimum}")
    devices = trainer.get("devices")
    if not (devices == "auto" or (isinstance(devices, int) and devices >= 1) or _id_list(devices)):
        raise ConfigError(
            f"trainer.devices={devices}: must be a number of devices >= 1, auto, or a list of "
            "device indices"
        )


def check_validation_interval(trainer: Any, epoch_batches: int) -> None:
    """``trainer.val_check_interval`` as a number of batches fits in an epoch of
    ``epoch_batches`` batches (per device), as Lightning requires once the data is read."""
    interval, per_epoch = trainer.get("val_check_interval"), trainer.get("check_val_every_n_epoch")
    devices = trainer.get("devices")
    count = len(devices) if _id_list(devices) else devices if isinstance(devices, int) else 1
    count *= trainer.get("num_nodes") or 1
    limit = trainer.get("limit_train_batches")
    batches = epoch_batches // max(count, 1)
    if isinstance(limit, int) and not isinstance(limit, bool):
        batches = min(batches, limit)
    elif isinstance(limit, float):
        batches = int(batches * limit)
    if isinstance(interval, int) and per_epoch is not None and interval > batches:
        raise ConfigError(
            f"trainer.val_check_interval={interval}: more than the {batches} training batches "
            f"of an epoch (per device); give at most {batches}, a share of the epoch (e.g. 0.5), "
            "or trainer.check_val_every_n_epoch=null to count steps across epochs"
        )


def _id_list(value: Any) -> bool:
    return OmegaConf.is_list(value) and len(value) > 0 and all(isinstance(i, int) for i in value)


def check_optimizer(node: Any) -> None:
    """The optimizer's own arguments, checked by building it over one dummy parameter."""
    try:
        instantiate(node)([torch.nn.Parameter(torch.zeros(1))])
    except InstantiationException as error:
        raise ConfigError(f"optimizer: {error.__cause__ or error}") from None
    except (TypeError, ValueError) as error:
        raise ConfigError(f"optimizer: {error}") from None
