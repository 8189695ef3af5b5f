"""The README and docs/ stay true: their commands compose, their links resolve, no machine paths.

Commands are taken from the fenced code blocks of README.md and docs/*.md, and from inline code
that starts with ``make``, ``python src/``, ``python -m`` or ``wandb sweep``. A shell line (after
joining ``\\`` continuations, dropping ``#`` comments, leading ``VAR=value`` assignments and the
part before a ``|``) is checked when it runs

- ``src/<train|eval|translate>.py`` (directly, or through srun / torchrun): its overrides compose
  with Hydra's compose API, every point of a ``-m`` sweep separately, and the config passes
  seq2attn.config's checks (training configs unless the command asks for a GPU);
- another ``src/<script>.py`` or ``python -m <module>``: the script or module exists and defines
  every ``--flag`` the command uses;
- ``make <target>``: the Makefile has the target (``make train ARGS="..."`` composes its ARGS);
- ``wandb sweep <file>``: the file exists.

``<name>`` placeholders become a plain word, and ``${VAR:-default}`` its default, before parsing.
"""

from __future__ import annotations

import itertools
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 150

HYDRA_SCRIPTS = {"train", "eval", "translate"}
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}
# Hydra's own command-line flags; the value names the flags that take an argument
HYDRA_FLAGS = {
    "-m": False,
    "--multirun": False,
    "-h": False,
    "--help": False,
    "--hydra-help": False,
    "--resolve": False,
    "-c": True,
    "--cfg": True,
    "-p": True,
    "--package": True,
    "--info": True,
}
# seq2attn.config's checks of each entry config (compose only where one is missing)
VALIDATORS = {"train": "validate", "eval": "validate_eval", "translate": "validate_translate"}
# validate() refuses GPU-only settings on a CPU-only machine, as it should
GPU_WORDS = ("trainer.accelerator=gpu", "precision=16-mixed", "strategy=fsdp", "strategy=deepspeed")


@dataclass(frozen=True)
class Command:
    page: Path
    line: int
    language: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def code_blocks(page: Path) -> list[Command]:
    """Every logical line of the fenced code blocks of a page, with its language and line number."""
    lines, found = page.read_text(encoding="utf-8").splitlines(), []
    language: str | None = None
    pending, start = "", 0
    for number, line in enumerate(lines, 1):
        fence = re.match(r"^\s*```+\s*([\w+-]*)", line)
        if fence:
            language = None if language is not None else fence.group(1).lower()
            pending = ""
            continue
        if language is None:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        found.append(Command(page, start, language, pending + line))
        pending = ""
    return found


INLINE_COMMAND = re.compile(r"`((?:make |python3? src/|python3? -m |wandb sweep )[^`\n]*)`")


def inline_commands(page: Path) -> list[Command]:
    """Commands in inline code outside the fenced blocks, e.g. ``make bench`` in a table."""
    found, fenced = [], False
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if re.match(r"^\s*```", line):
            fenced = not fenced
        elif not fenced:
            found += [Command(page, number, "inline", m) for m in INLINE_COMMAND.findall(line)]
    return found


def expand(text: str) -> str:
    """Placeholders and environment variables become plain words the parsers accept."""
    text = re.sub(r"<[^<>\s]+>", "placeholder", text)
    text = re.sub(r"\$\{[A-Z_][A-Z0-9_]*:-([^}]*)\}", r"\1", text)
    return re.sub(r"\$\{?[A-Z_][A-Z0-9_]*\}?", "placeholder", text)


def segments(command: Command) -> list[list[str]]:
    """The simple commands of a shell line, as tokens, without leading VAR=value assignments."""
    tokens = shlex.split(expand(command.text), comments=True)
    parts: list[list[str]] = []
    current: list[str] = []
    for token in tokens:
        if token in {"|", "&&", "||", ";"}:
            parts.append(current)
            current = []
        else:
            current.append(token)
    parts.append(current)
    result = []
    for part in parts:
        while part and re.match(r"^[A-Za-z_]\w*=", part[0]):
            part = part[1:]
        if part:
            result.append(part)
    return result


def shell_commands() -> list[tuple[Command, list[str]]]:
    return [
        (command, tokens)
        for page in PAGES
        for command in [*code_blocks(page), *inline_commands(page)]
        if command.language in SHELL_LANGUAGES | {"inline"}
        for tokens in segments(command)
    ]


def script_of(tokens: list[str]) -> tuple[str, list[str]] | None:
    """``(script stem, arguments)`` when the command runs ``src/<script>.py``."""
    for i, token in enumerate(tokens):
        match = re.fullmatch(r"(?:\./)?src/(\w+)\.py", token)
        if match:
            return match.group(1), tokens[i + 1 :]
    return None


def module_of(tokens: list[str]) -> tuple[str, list[str]] | None:
    """``(module, arguments)`` when the command is ``python -m <module> ...``."""
    if len(tokens) >= 3 and re.search(r"(^|/)python3?$", tokens[0]) and tokens[1] == "-m":
        return tokens[2], tokens[3:]
    return None


def split_hydra_arguments(arguments: list[str]) -> tuple[list[str], bool]:
    """Hydra's overrides, and whether the command is a multirun."""
    overrides, multirun, skip = [], False, False
    for argument in arguments:
        if skip:
            skip = False
        elif argument in HYDRA_FLAGS:
            multirun |= argument in {"-m", "--multirun"}
            skip = HYDRA_FLAGS[argument]
        else:
            overrides.append(argument)
    return overrides, multirun


def sweep_points(overrides: list[str]) -> list[list[str]]:
    """One override list per point of a multirun grid (a single point without sweeps)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = []
    for override in parsed:
        key = override.get_key_element()
        if override.is_sweep_override():
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([override.input_line or f"{key}={override.value()}"])
    return [list(point) for point in itertools.product(*choices)]


HYDRA_COMMANDS = [
    (c, t) for c, t in shell_commands() if (s := script_of(t)) and s[0] in HYDRA_SCRIPTS
]
OTHER_SCRIPTS = [
    (c, t) for c, t in shell_commands() if (s := script_of(t)) and s[0] not in HYDRA_SCRIPTS
]
MODULES = [(c, t) for c, t in shell_commands() if module_of(t)]
MAKE = [(c, t) for c, t in shell_commands() if t[0] == "make"]
WANDB_SWEEPS = [(c, t) for c, t in shell_commands() if t[:2] == ["wandb", "sweep"]]
PYTHON_IMPORTS = [
    c
    for page in PAGES
    for c in code_blocks(page)
    if c.language == "python" and re.match(r"\s*from\s+seq2attn[\w.]*\s+import\s", c.text)
]


def ids(cases: list[tuple[Command, list[str]]]) -> list[str]:
    return [f"{command.where}:{' '.join(tokens)[:60]}" for command, tokens in cases]


def compose_config(name: str, overrides: list[str]) -> DictConfig:
    """Compose ``conf/<name>.yaml`` as the script would, and make it the current HydraConfig."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(name, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def check_composes(script: str, overrides: list[str], where: str, tmp_path: Path) -> int:
    """Compose and validate every sweep point of the overrides. Returns their number."""
    import seq2attn.config

    validate = getattr(seq2attn.config, VALIDATORS[script], None)
    base = [f"paths.output_dir={tmp_path}"] if script == "train" else []
    try:
        points = sweep_points(overrides)
    except Exception as error:  # noqa: BLE001
        pytest.fail(f"{where}: {script}.py {' '.join(overrides)}: not valid overrides: {error}")
    for point in points:
        try:
            cfg = compose_config(script, [*base, *point])
        except Exception as error:  # noqa: BLE001 - the message is the point
            pytest.fail(f"{where}: {script}.py {' '.join(point)} does not compose: {error}")
        if validate is not None and not any(word in point for word in GPU_WORDS):
            try:
                validate(cfg)
            except Exception as error:  # noqa: BLE001
                pytest.fail(f"{where}: {script}.py {' '.join(point)} does not validate: {error}")
    return len(points)


def test_the_pages_have_commands() -> None:
    assert len(HYDRA_COMMANDS) >= 20 and MAKE and MODULES and PYTHON_IMPORTS


@pytest.mark.parametrize(("command", "tokens"), HYDRA_COMMANDS, ids=ids(HYDRA_COMMANDS))
def test_hydra_command_composes(command: Command, tokens: list[str], tmp_path: Path) -> None:
    found = script_of(tokens)
    assert found is not None
    script, arguments = found
    overrides, multirun = split_hydra_arguments(arguments)
    points = check_composes(script, overrides, command.where, tmp_path)
    if multirun:
        assert points > 1, f"{command.where}: a multirun that sweeps nothing"


def defined_flags(files: list[Path]) -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in files)


def used_flags(arguments: list[str]) -> set[str]:
    """The ``--flag`` names before a ``--`` (after it come arguments passed through)."""
    if "--" in arguments:
        arguments = arguments[: arguments.index("--")]
    return {a.split("=", 1)[0] for a in arguments if a.startswith("--")}


@pytest.mark.parametrize(("command", "tokens"), OTHER_SCRIPTS, ids=ids(OTHER_SCRIPTS))
def test_script_exists_with_its_flags(command: Command, tokens: list[str]) -> None:
    found = script_of(tokens)
    assert found is not None
    script, arguments = found
    path = ROOT / "src" / f"{script}.py"
    assert path.is_file(), f"{command.where}: src/{script}.py does not exist"
    source = defined_flags([path])
    missing = sorted(f for f in used_flags(arguments) if f'"{f}"' not in source)
    assert not missing, f"{command.where}: src/{script}.py has no {', '.join(missing)}"


def module_files(module: str) -> list[Path]:
    """The source files of ``python -m <module>``: a module file, or a package's files."""
    path = ROOT.joinpath(*module.split("."))
    if path.with_suffix(".py").is_file():
        return [path.with_suffix(".py")]
    if (path / "__main__.py").is_file() or (path / "__init__.py").is_file():
        return sorted(path.rglob("*.py"))
    return []


@pytest.mark.parametrize(("command", "tokens"), MODULES, ids=ids(MODULES))
def test_module_exists_with_its_flags(command: Command, tokens: list[str]) -> None:
    found = module_of(tokens)
    assert found is not None
    module, arguments = found
    files = module_files(module)
    assert files, (
        f"{command.where}: python -m {module}: no {module.replace('.', '/')}.py or package"
    )
    source = defined_flags(files)
    missing = sorted(f for f in used_flags(arguments) if f'"{f}"' not in source)
    assert not missing, f"{command.where}: python -m {module} defines no {', '.join(missing)}"


MAKE_TARGETS = set(
    re.findall(r"^([A-Za-z][\w-]*):", (ROOT / "Makefile").read_text(encoding="utf-8"), re.M)
)


@pytest.mark.parametrize(("command", "tokens"), MAKE, ids=ids(MAKE))
def test_make_target_exists(command: Command, tokens: list[str], tmp_path: Path) -> None:
    targets = [t for t in tokens[1:] if "=" not in t and not t.startswith("-")]
    assert targets, f"{command.where}: make without a target"
    missing = sorted(set(targets) - MAKE_TARGETS)
    assert not missing, f"{command.where}: the Makefile has no target {', '.join(missing)}"
    variables = dict(t.split("=", 1) for t in tokens[1:] if "=" in t)
    if targets == ["train"] and "ARGS" in variables:
        check_composes("train", shlex.split(variables["ARGS"]), command.where, tmp_path)


@pytest.mark.parametrize(("command", "tokens"), WANDB_SWEEPS, ids=ids(WANDB_SWEEPS))
def test_wandb_sweep_file_exists(command: Command, tokens: list[str]) -> None:
    assert (ROOT / tokens[2]).is_file(), f"{command.where}: {tokens[2]} does not exist"


@pytest.mark.parametrize("block", PYTHON_IMPORTS, ids=[b.where for b in PYTHON_IMPORTS])
def test_python_imports_exist(block: Command) -> None:
    """``from seq2attn.x import y`` in a snippet names a module of src/ that mentions y."""
    match = re.match(r"\s*from\s+(seq2attn[\w.]*)\s+import\s+([\w, ]+)", block.text)
    assert match is not None
    path = ROOT / "src" / Path(*match.group(1).split("."))
    files = [p for p in (path.with_suffix(".py"), path / "__init__.py") if p.is_file()]
    assert files, f"{block.where}: no module {match.group(1)} in src/"
    source = files[0].read_text(encoding="utf-8")
    for name in (n.strip() for n in match.group(2).split(",")):
        assert re.search(rf"\b{name}\b", source), f"{block.where}: {match.group(1)} has no {name}"


def test_inference_api_does_not_import_lightning() -> None:
    """The README says so: loading and translating need no training stack."""
    code = (
        "import sys, seq2attn.inference; print(sorted(m for m in sys.modules if 'lightning' in m))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", f"importing seq2attn.inference imports {done.stdout}"


def test_readme_is_short() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines, at most {README_MAX_LINES}"


def heading_anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to '-'."""
    anchors: set[str] = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).lower())
            anchor, n = text.replace(" ", "-"), 1
            while anchor in anchors:
                anchor, n = f"{text.replace(' ', '-')}-{n}", n + 1
            anchors.add(anchor)
    return anchors


def prose(page: Path) -> str:
    """A page without its fenced code blocks (and so without shell lines that look like links)."""
    return re.sub(r"^\s*```.*?^\s*```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(page)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists():
            broken.append(
                f"{target} (no {path.relative_to(ROOT) if ROOT in path.parents else path})"
            )
        elif anchor and path.suffix == ".md" and anchor not in heading_anchors(path):
            broken.append(f"{target} (no heading #{anchor} in {path.relative_to(ROOT)})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {'; '.join(broken)}"


WORK_ITEM_WORDS = re.compile(r"\bissue \d+|\bsessions?\b", re.I)
OWN_TEXT = [
    README,
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "conf").rglob("*.yaml")),
    *sorted((ROOT / "sweeps").glob("*.yaml")),
]


def test_docs_and_configs_say_what_things_are() -> None:
    """No work-item numbers or work sessions: pages and configs say what a thing is."""
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}"
        for path in OWN_TEXT
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if WORK_ITEM_WORDS.search(line)
    ]
    assert not found, f"{len(found)} lines speak of issues or sessions:\n" + "\n".join(found[:40])


MACHINE_PATH = re.compile(r"(?<![\w.~-])(/work/|/root/|/home/[^/\s]+/|/tmp/[A-Za-z0-9_]|/Users/)")


def repository_text_files() -> list[Path]:
    """Tracked files and new files git does not ignore, outside tests/, that are text."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    files = []
    for name in sorted(set(listed.stdout.decode().split("\0")) - {""}):
        path = ROOT / name
        if name.startswith("tests/") or not path.is_file():
            continue
        head = path.read_bytes()[:8192]
        if b"\0" not in head:
            files.append(path)
    return files


def test_no_absolute_paths_of_this_machine() -> None:
    found = []
    for path in repository_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            match = MACHINE_PATH.search(line)
            if match:
                excerpt = line[max(0, match.start() - 30) : match.end() + 40]
                found.append(f"{path.relative_to(ROOT)}:{n}: ...{excerpt}...")
    files = sorted({entry.split(":", 1)[0] for entry in found})
    assert not found, (
        f"{len(found)} lines in {len(files)} files hold an absolute path of a machine "
        f"(write paths relative to the repository): {', '.join(files)}\n" + "\n".join(found[:40])
    )
