"""Every Redis key is named in its app's keys module (ARCHITECTURE.md: one key-naming module
per app, built on realtime.keys.key so the run's prefix applies). Elsewhere code calls the
keys module's functions; it never builds a key with realtime.keys' builders itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("accounts", "payments", "messaging", "videochat", "voice", "realtime")
BUILDERS = {"key", "rate_key"}  # connect_rate_key(kind, who): its kinds are its own
MODULES = [
    p
    for app in APPS
    for p in sorted((ROOT / app).rglob("*.py"))
    if p.name != "keys.py" and "migrations" not in p.parts
]


def builds_a_key(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
    # A literal part is a key named here rather than in the keys module.
    literal = any(isinstance(a, ast.Constant | ast.JoinedStr) for a in node.args)
    return name in BUILDERS and literal


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_names_a_redis_key_outside_its_keys_module(path: Path):
    tree = ast.parse(path.read_text())
    found = [f"line {n.lineno}" for n in ast.walk(tree) if builds_a_key(n)]
    assert not found, f"{path.relative_to(ROOT)} names Redis keys at {found}: use keys.py"
