"""What reproduces a run: the composed config, the command line and overrides, the git state,
the package versions."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from seq2attn.allocator import active_allocator
from seq2attn.data.cache import atomic_write_bytes
from seq2attn.inference.outputs import write_json
from seq2attn.precision import PrecisionChoice

PACKAGES = (
    "seq2attn",
    "torch",
    "lightning",
    "hydra-core",
    "omegaconf",
    "sentencepiece",
    "sacrebleu",
)


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The composed config as plain data, without Hydra's own node."""
    return {
        str(key): OmegaConf.to_container(cfg[key], resolve=True)
        if OmegaConf.is_config(cfg[key])
        else cfg[key]
        for key in cfg
        if key != "hydra"
    }


def write_run_record(
    config: dict[str, Any],
    output_dir: Path,
    resumed_from: Path | None,
    precision: PrecisionChoice,
) -> None:
    """``config.yaml`` (the composed config) and ``run.json`` (argv, overrides, the checkpoint
    resumed from, git commit and dirtiness, the precision asked for and chosen, the allocator in
    use, package versions, Python version). A run resumed in its own folder keeps its
    ``config.yaml`` and the first invocation's record, and appends this invocation to
    ``resumes`` with the config keys it changed (``config_changes``, dotted key -> new value)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    invocation: dict[str, Any] = {
        "argv": sys.argv,
        "overrides": hydra_overrides(),
        "resumed_from": None if resumed_from is None else str(resumed_from),
        "git": git_state(),
        "precision": dataclasses.asdict(precision),
        "allocator": active_allocator(),
    }
    record: dict[str, Any] = {
        **invocation,
        "packages": {name: package_version(name) for name in PACKAGES},
        "python": sys.version.split()[0],
    }
    previous = _previous_record(output_dir / "run.json") if resumed_from is not None else None
    stored = _previous_config(output_dir / "config.yaml") if previous is not None else None
    if previous is not None and stored is not None:
        invocation["config_changes"] = _changes(_flat(stored), _flat(config))
        record = {**previous, "resumes": [*previous.get("resumes", []), invocation]}
    else:
        atomic_write_bytes(output_dir / "config.yaml", OmegaConf.to_yaml(config).encode())
    write_json(output_dir / "run.json", record)


def _previous_config(path: Path) -> dict[str, Any] | None:
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def _flat(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b": value}``."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {
        key: after.get(key)
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    }


def _previous_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def hydra_overrides() -> list[str]:
    """The command line's overrides (empty outside a Hydra app)."""
    if not HydraConfig.initialized():
        return []
    return list(HydraConfig.get().overrides.task)


def package_version(package: str) -> str | None:
    """The installed version, None when the package is missing."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_state() -> dict[str, Any]:
    """The commit of the working directory and whether the tree has uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
