"""Make the committed results name no folder of the machine they were made on.

    python -m benchmarks.relativize_paths            # rewrite the result files in place
    python -m benchmarks.relativize_paths --check    # change nothing; exit 1 if a path is left
    python -m benchmarks.relativize_paths --made-in /old/clone/of/seq2attn

Every absolute path into the repository or the folder beside it, in the JSON and Markdown files
under benchmarks/results/ and docs/results/ and in docs/results.md, becomes relative to the
repository: ``<repo>/logs/x`` -> ``logs/x``, ``<repo>`` -> ``.``, and a folder beside it,
``<repo>/../shared/data/multi30k`` -> ``../shared/data/multi30k``. Only those characters change (a
JSON file keeps its key order and number formatting). ``--made-in`` names the folder the results
were made in when the repository has moved since. The result writers record relative paths
themselves (benchmarks.common.write_result); this command is for files written before they did.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from pathlib import Path

from benchmarks.common import REPO, relative_text

# folders of a machine that no committed file may name
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|root|tmp|home)/[^\s\"'`,)|\]]*")


def result_files(repo: Path = REPO) -> list[Path]:
    """The committed result files: JSON and Markdown under the two results folders, and the
    results page."""
    files = [repo / "docs" / "results.md"]
    for folder in (repo / "benchmarks" / "results", repo / "docs" / "results"):
        files += sorted(p for p in folder.rglob("*") if p.suffix in (".json", ".md"))
    return [path for path in files if path.is_file()]


def relativize(path: Path, made_in: Path = REPO) -> bool:
    """Rewrite ``path`` in place with paths under ``made_in`` (or beside it) made relative;
    whether anything changed."""
    text = path.read_text(encoding="utf-8")
    rewritten = relative_text(text, made_in)
    if rewritten != text:
        path.write_text(rewritten, encoding="utf-8")
    return rewritten != text


def machine_paths(paths: Iterable[Path]) -> list[str]:
    """``file:line: path`` for every machine path left in the files."""
    found = []
    for path in paths:
        name = relative_text(str(path))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            found += [f"{name}:{number}: {hit}" for hit in MACHINE_PATH.findall(line)]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only report what is left")
    parser.add_argument(
        "--made-in",
        type=Path,
        default=REPO,
        help="the repository's folder when the results were made (default: where it is now)",
    )
    args = parser.parse_args()
    files = result_files()
    if not args.check:
        changed = [path for path in files if relativize(path, args.made_in.resolve())]
        print(f"rewrote {len(changed)} of {len(files)} result files")
    left = machine_paths(files)
    for line in left:
        print(line)
    if left:
        sys.exit(f"{len(left)} machine path(s) left in the result files")


if __name__ == "__main__":
    main()
