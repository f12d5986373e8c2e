"""Defaults live once, in config/settings: app code reads `settings.NAME` and never carries
a fallback of its own (a second default drifts from the first, as VIDEOCHAT_TRUSTED_PROXIES
once did, declared both in settings and in videochat's own table)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
APPS = ("accounts", "payments", "messaging", "videochat", "voice", "realtime")
MODULES = [
    p for app in APPS for p in sorted((ROOT / app).rglob("*.py")) if "migrations" not in p.parts
]


def is_settings(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "settings"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_keeps_a_default_of_a_setting(path: Path):
    tree = ast.parse(path.read_text())
    fallbacks = [
        f"line {n.lineno}"
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Name)
        and n.func.id == "getattr"
        and len(n.args) == 3
        and is_settings(n.args[0])
    ]
    tables = [
        f"line {n.lineno}: DEFAULTS"
        for n in tree.body
        if isinstance(n, ast.Assign | ast.AnnAssign)
        and any(
            isinstance(t, ast.Name) and t.id == "DEFAULTS"
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
        )
    ]
    assert not fallbacks + tables, f"{path.relative_to(ROOT)}: {fallbacks + tables}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_setting_the_code_reads_is_defined(path: Path):
    tree = ast.parse(path.read_text())
    read = {
        n.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and is_settings(n.value) and n.attr.isupper()
    }
    missing = sorted(name for name in read if not hasattr(settings, name))
    assert not missing, f"{path.relative_to(ROOT)} reads undefined settings {missing}"
