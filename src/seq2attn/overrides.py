"""Command-line overrides checked before Hydra composes the run: a key the config does not have,
or an option its group does not have, ends the command with one line that suggests the closest
name and exit code 2 (Hydra's own answer to a typo is to append it with ``+``)."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf"


def override_error(config_name: str, argv: Sequence[str], conf: Path = CONF) -> str | None:
    """The message for the first override of ``argv`` that names an option or key the config
    does not have, with the closest existing name; None when every one exists (values are
    checked later, by the run's schemas)."""
    searchpath = [arg for arg in argv if arg.startswith("hydra.searchpath=")]
    roots = [conf, *_searchpath_dirs(searchpath)]
    groups: list[str] = list(searchpath)
    keys: list[str] = []
    for arg in argv:
        if arg.startswith(("-", "+", "~")) or "=" not in arg:
            continue  # flags, additions, deletions, flag values
        key, value = arg.split("=", 1)
        if key.startswith("hydra") or "/" in key:
            continue
        if any((root / key).is_dir() for root in roots):
            options = sorted({p.stem for root in roots for p in (root / key).glob("*.yaml")})
            chosen = [] if "(" in value else value.split(",")  # sweep functions: Hydra's
            for option in chosen:
                if option not in options and option != "null":
                    return (
                        f"{key}={option}: no such option{_suggest(option, options, key + '=')} "
                        f"(options: {', '.join(options)})"
                    )
            if chosen:
                groups.append(f"{key}={chosen[0]}")
        else:
            keys.append(key)
    if not keys:
        return None
    known = _keys(config_name, groups, conf)
    if known is None:
        return None  # the composition fails on its own: Hydra says why
    for key in keys:
        if key not in known and not any(k.startswith(key + ".") for k in known):
            return (
                f"{key}: not a key of the {config_name} config"
                f"{_suggest(key, sorted(known), '')} (to add a new key: +{key}=...)"
            )
    return None


def exit_on_override_error(config_name: str) -> None:
    """Before Hydra composes: a key or option of the command line that the config does not have
    ends the command with one line naming the closest one, exit code 2."""
    message = override_error(config_name, sys.argv[1:])
    if message is not None:
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _searchpath_dirs(overrides: Sequence[str]) -> list[Path]:
    """The folders that ``hydra.searchpath=[file://a,file://b]`` overrides add to the config
    search path (``pkg://`` entries hold no files to list)."""
    dirs: list[Path] = []
    for override in overrides:
        entries = override.split("=", 1)[1].strip("[]")
        for entry in entries.split(","):
            entry = entry.strip().strip("'\"")
            if entry.startswith("file://"):
                dirs.append(Path(entry.removeprefix("file://")))
    return dirs


def _keys(config_name: str, groups: list[str], conf: Path) -> set[str] | None:
    """Every dotted key of the config composed with the group choices given."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
            cfg = compose(config_name, overrides=groups)
    except Exception:  # noqa: BLE001 - any composition error is Hydra's to report
        return None
    finally:
        GlobalHydra.instance().clear()
    container = OmegaConf.to_container(cfg, resolve=False)
    keys: set[str] = set()

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for name, value in node.items():
                keys.add(f"{prefix}{name}")
                walk(value, f"{prefix}{name}.")

    walk(container, "")
    return keys


def _suggest(name: str, candidates: Sequence[str], prefix: str) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"; did you mean {prefix}{close[0]}?" if close else ""
