"""The library (plugins/, dags/) imports nothing from the test kit (testkit/hurren_testkit)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = [ROOT / "plugins", ROOT / "dags"]
KIT = "hurren_testkit"
# the kit's old places (spelled so that the codemod leaves them alone)
MOVED = [f"hurren.{m}" for m in ("simulator", "synthetic", "demo", "platform.samples")]


def _kit_imports(path: Path) -> list[str]:
    """``file:line module`` for each import of the test kit in ``path``: import statements, and
    ``importlib.import_module`` / ``__import__`` with a literal name."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [f"{os.path.relpath(path, ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] == KIT]
    return found


def test_no_library_module_imports_the_test_kit() -> None:
    files = [p for d in LIBRARY for p in sorted(d.rglob("*.py"))]
    assert len(files) > 50, files  # the walk found the library
    assert [hit for p in files for hit in _kit_imports(p)] == []


def test_the_ast_walk_finds_a_kit_import(tmp_path: Path) -> None:
    """The check above can fail: each spelling of an import of the kit is found."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import hurren_testkit\nfrom hurren_testkit.simulator import Simulator\n"
        "def f():\n    import importlib\n    importlib.import_module('hurren_testkit.demo')\n",
        encoding="utf-8",
    )
    assert [h.split(" ")[1] for h in _kit_imports(probe)] == [
        "hurren_testkit",
        "hurren_testkit.simulator",
        "hurren_testkit.demo",
    ]


_IMPORT_ALL = """
import importlib, importlib.abc, json, pkgutil, sys

class NoKit(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "hurren_testkit":
            raise ModuleNotFoundError(f"the test kit is not importable here: {name}", name=name)
        return None

sys.meta_path.insert(0, NoKit())
import hurren

imported, failed = [], {}
for mod in pkgutil.walk_packages(hurren.__path__, "hurren."):
    try:
        importlib.import_module(mod.name)
        imported.append(mod.name)
    except Exception as exc:
        failed[mod.name] = f"{type(exc).__name__}: {exc}"
moved = {}
for name in MOVED:
    try:
        importlib.import_module(name)
        moved[name] = "importable"
    except ModuleNotFoundError:
        pass
print(json.dumps({"imported": imported, "failed": failed, "moved": moved,
                  "kit_loaded": sorted(m for m in sys.modules if m.split(".")[0] == "hurren_testkit")}))
"""


def test_every_library_module_imports_without_the_test_kit(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "plugins"),  # testkit/ not on the path, and any import of it refused
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "HURREN_SOURCES_FILE": str(ROOT / "include" / "sources.json"),
    }
    done = subprocess.run(
        [sys.executable, "-c", f"MOVED = {MOVED!r}\n{_IMPORT_ALL}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["failed"] == {}
    assert result["moved"] == {}  # nothing left behind at the old places
    assert result["kit_loaded"] == []
    imported = set(result["imported"])
    assert {
        "hurren.pipeline",
        "hurren.platform.__main__",
        "hurren.push.runner",
        "hurren.dagfactory",
    } <= imported
    assert len(imported) > 50, sorted(imported)
