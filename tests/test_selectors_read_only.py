"""Selectors never write (the HackSoft guide; ARCHITECTURE.md "Each app, the same rooms"):
no selectors module calls an ORM write. Behaviour tests cover the reads themselves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WRITES = {
    "save",
    "create",
    "get_or_create",
    "update_or_create",
    "bulk_create",
    "bulk_update",
    "delete",
}
SELECTORS = sorted(ROOT.glob("*/selectors.py")) + sorted(ROOT.glob("*/*/selectors.py"))


@pytest.mark.parametrize("path", SELECTORS, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_selectors_module_calls_no_write(path: Path):
    tree = ast.parse(path.read_text())
    writes = [
        f"line {node.lineno}: .{node.func.attr}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in WRITES
    ]
    assert not writes, f"{path.relative_to(ROOT)} writes: {writes}; move it to services.py"
