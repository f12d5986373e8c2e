"""The import layers of ARCHITECTURE.md are enforced by `make lint` (import-linter), and the
contract it runs really catches an upward import."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
LAYERS = ["config", "voice | videochat | messaging", "payments", "accounts", "realtime"]


def contract() -> dict[str, object]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return layers


def test_make_lint_runs_the_import_contracts():
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^lint:.*?\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe and "lint-imports" in recipe.group(1)
    assert contract()["layers"] == LAYERS


def test_the_project_keeps_its_layers():
    result = subprocess.run(
        [str(LINT_IMPORTS)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:]


def test_an_upward_import_breaks_the_contract(tmp_path: Path):
    """The same contract over a small tree where realtime reaches up into accounts, as it
    once did (realtime.consumers imported accounts.selectors)."""
    for package in ("config", "voice", "videochat", "messaging", "payments", "accounts"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "accounts" / "selectors.py").write_text("def shows_online_status(): ...\n")
    (tmp_path / "realtime").mkdir()
    (tmp_path / "realtime" / "__init__.py").write_text("")
    (tmp_path / "realtime" / "consumers.py").write_text(
        "def connect():\n    from accounts.selectors import shows_online_status\n"
    )
    layers = ", ".join(f'"{layer}"' for layer in LAYERS)
    (tmp_path / "pyproject.toml").write_text(
        "[tool.importlinter]\n"
        'root_packages = ["config", "voice", "videochat", "messaging", "payments", '
        '"accounts", "realtime"]\n'
        "[[tool.importlinter.contracts]]\n"
        'name = "layers"\ntype = "layers"\n'
        f"layers = [{layers}]\n"
    )
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1, result.stdout
    assert "realtime is not allowed to import accounts" in result.stdout


OWN = ("config", "realtime", "accounts", "payments", "voice", "videochat", "messaging")


def test_no_import_of_our_own_code_is_hidden_inside_a_function():
    """A function-level import of our own code usually dodges an import cycle: the layers
    (and AppConfig.ready, Django's place for wiring) are the way out, not hiding."""
    import ast

    hidden = []
    for package in OWN:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts or path.name == "apps.py":
                continue
            tree = ast.parse(path.read_text())
            for func in ast.walk(tree):
                if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for node in ast.walk(func):
                    if isinstance(node, ast.ImportFrom):
                        name = "." * node.level + (node.module or "")
                    elif isinstance(node, ast.Import):
                        name = node.names[0].name
                    else:
                        continue
                    if name.startswith(".") or name.split(".")[0] in OWN:
                        hidden.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert hidden == [], hidden
