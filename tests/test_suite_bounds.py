"""Every process a test starts is waited for with an explicit timeout, so a deadlock fails the
test instead of eating CI's time limit (pytest-timeout bounds each test as a whole)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
RUNS = {"run", "check_output", "check_call", "call"}  # subprocess functions that wait
WAITS = {"communicate", "wait", "join"}  # Popen / Process methods that wait


def unbounded_waits(source: str) -> list[int]:
    """Lines of calls that wait for a process without a timeout argument."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner, name = node.func.value, node.func.attr
        runs = isinstance(owner, ast.Name) and owner.id == "subprocess" and name in RUNS
        waits = name in WAITS and not node.args  # str.join(x) and event.wait(5) have arguments
        if (runs or waits) and not any(k.arg == "timeout" for k in node.keywords):
            lines.append(node.lineno)
    return lines


def test_the_check_finds_unbounded_waits() -> None:
    source = (
        "subprocess.run(['a'])\n"
        "subprocess.run(['a'], timeout=5)\n"
        "process.wait()\n"
        "process.wait(timeout=5)\n"
        "process.communicate(timeout=5)\n"
        "', '.join(parts)\n"
        "worker.join()\n"
    )
    assert unbounded_waits(source) == [1, 3, 7]


def test_every_wait_for_a_process_in_the_tests_is_bounded() -> None:
    found = [
        f"{path.relative_to(TESTS.parent)}:{line}"
        for path in sorted(TESTS.rglob("*.py"))
        for line in unbounded_waits(path.read_text(encoding="utf-8"))
    ]
    assert found == []
