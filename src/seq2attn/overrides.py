"""The command line read before Hydra composes the run: a key the config does not have, or an
option its group does not have, ends the command with one line that suggests the closest name
and exit code 2 (Hydra's own answer to a typo is to append it with ``+``); ``cpu.allocator`` is
read here so that the command can start again with its library preloaded."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from seq2attn.allocator import SYSTEM, AllocatorError, preload_allocator

CONF = Path(__file__).resolve().parents[2] / "conf"
# flags after which Hydra only shows something (help, the config, completion) and runs nothing
SHOW_ONLY = {"-h", "--help", "--hydra-help", "-c", "--cfg", "--resolve", "-i", "--info"}
SHOW_ONLY |= {"--version", "-sc", "--shell-completion"}
# flags that change which config is composed: the allocator is then read from the command line
OTHER_CONFIG = {"-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir"}


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


def _compose(config_name: str, overrides: list[str], conf: Path) -> DictConfig | None:
    """The config composed with ``overrides``; None when Hydra cannot compose it."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
            return compose(config_name, overrides=overrides)
    except Exception:  # noqa: BLE001 - any composition error is Hydra's to report
        return None
    finally:
        GlobalHydra.instance().clear()


def _keys(config_name: str, groups: list[str], conf: Path) -> set[str] | None:
    """Every dotted key of the config composed with the group choices given."""
    cfg = _compose(config_name, groups, conf)
    if cfg is None:
        return None  # the composition fails on its own: Hydra says why
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


def configured_allocator(config_name: str, argv: Sequence[str], conf: Path = CONF) -> str:
    """``cpu.allocator`` of the config that ``argv`` composes. A sweep's jobs compose with each
    value of one swept group at a time (the other sweeps at their first value) and must agree;
    when the config cannot be composed here (another config folder or name, a bad override:
    Hydra reports those), an explicit ``cpu.allocator=`` decides, else ``system``.

    Raises:
        AllocatorError: the jobs of a sweep would need different allocators.
    """
    words = [arg for arg in argv if "=" in arg and not arg.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(words)
    except Exception:  # noqa: BLE001 - a malformed override is Hydra's to report
        return SYSTEM
    if any(o.key_or_group.startswith("hydra.sweeper.params.cpu") for o in parsed):
        raise AllocatorError("cpu.allocator cannot be searched by a sweeper: one process has one")
    first = [
        f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}"
        if o.is_sweep_override()
        else str(o.input_line)
        for o in parsed
    ]

    def allocator(overrides: list[str]) -> str:
        """The composed config's allocator, else the last ``cpu.allocator=`` of ``overrides``."""
        given = [
            o.split("=", 1)[1] for o in overrides if o.lstrip("+").startswith("cpu.allocator=")
        ]
        cfg = None
        if not any(arg.split("=")[0] in OTHER_CONFIG for arg in argv):
            cfg = _compose(config_name, overrides, conf)
        if cfg is None:
            return given[-1] if given else SYSTEM
        try:
            return str(OmegaConf.select(cfg, "cpu.allocator", default=SYSTEM))
        except Exception:  # noqa: BLE001 - an unresolvable value: the schema's to report
            return SYSTEM

    chosen = allocator(first)
    could_change_it = {"cpu.allocator", *groups(conf)}
    for i, o in enumerate(parsed):
        swept = o.is_sweep_override() and o.key_or_group in could_change_it
        for value in list(o.sweep_string_iterator())[1:] if swept else []:
            other = allocator([*first[:i], f"{o.get_key_element()}={value}", *first[i + 1 :]])
            if other != chosen:
                raise AllocatorError(
                    f"{o.input_line}: its jobs would run on different allocators ({chosen}, "
                    f"{other}); one process has one: run one command per allocator"
                )
    return chosen


def groups(conf: Path) -> list[str]:
    """The config groups: the folders of ``conf``, as ``parent/child`` when nested."""
    return [str(d.relative_to(conf)) for d in conf.rglob("*") if d.is_dir()]


def exit_unless_allocator(config_name: str) -> None:
    """Before Hydra composes: start the command again with ``cpu.allocator``'s library
    preloaded when it needs one; an allocator that cannot be had ends the command with one
    line, exit code 2. Commands that only show something (help, the config) run as they are."""
    argv = sys.argv[1:]
    if SHOW_ONLY.intersection(arg.split("=")[0] for arg in argv):
        return
    try:
        preload_allocator(configured_allocator(config_name, argv))
    except AllocatorError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
