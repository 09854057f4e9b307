"""honing.models is layered: adapters ← source ← load ← save, and no module imports one that
imports it back (imports inside functions count: they are how the old load ⇄ save cycle hid)."""

from __future__ import annotations

import ast
from pathlib import Path

import honing.models

PACKAGE = Path(honing.models.__file__).parent


def imported_models_modules(path: Path) -> set[str]:
    """The honing.models.* modules `path` imports anywhere in its body, by short name."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["honing", "models"] and len(parts) > 2 and (PACKAGE / f"{parts[2]}.py").is_file():
                found.add(parts[2])
    return found


def graph() -> dict[str, set[str]]:
    return {path.stem: imported_models_modules(path) - {path.stem}
            for path in sorted(PACKAGE.glob("*.py")) if path.stem != "__init__"}


def test_load_and_save_do_not_import_each_other():
    imports = graph()
    assert "save" in imports and "load" in imports
    assert "save" not in imports["load"], "models/load.py imports models/save.py"
    assert "load" in imports["save"]  # the direction that is allowed, so this test sees imports at all


def test_no_cycle_among_models_modules():
    imports = graph()
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(imports.get(module, ())):
            assert state.get(target) != "open", "import cycle: " + " → ".join(path + [module, target])
            if target not in state:
                visit(target, path + [module])
        state[module] = "done"

    for module in imports:
        if module not in state:
            visit(module, [])


def test_the_walk_sees_a_cycle(tmp_path):
    """The parser finds imports inside functions, so the cycle test above can fail."""
    (tmp_path / "m.py").write_text("def f():\n    from honing.models.save import atomic_dir\n")
    assert imported_models_modules(tmp_path / "m.py") == {"save"}
