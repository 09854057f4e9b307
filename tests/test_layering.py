"""The architecture, checked: stages sit on top, libraries never import a stage, and the CLI and
the config package stay free of torch (so `honing --help` is instant)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "honing"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_nothing_outside_stages_imports_a_stage():
    offenders = []
    for path in SRC.rglob("*.py"):
        relative = path.relative_to(SRC)
        if relative.parts[0] == "stages":
            continue
        stage_imports = sorted(name for name in _imports(path) if name.startswith("honing.stages."))
        if stage_imports:
            offenders.append(f"{relative}: {', '.join(stage_imports)}")
    assert not offenders, "library modules import stages:\n" + "\n".join(offenders)


def test_the_cli_and_the_config_package_import_no_torch():
    code = ("import sys, importlib, pkgutil, honing.config, honing.cli\n"
            "for m in pkgutil.walk_packages(honing.config.__path__, 'honing.config.'):\n"
            "    importlib.import_module(m.name)\n"
            "heavy = [name for name in ('torch', 'transformers', 'peft', 'datasets') if name in sys.modules]\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_the_layer_checker_sees_lazy_imports(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from honing.stages.generate import run\n    import honing.stages.sft\n")
    assert {"honing.stages.generate", "honing.stages.sft"} <= _imports(sample)


def test_the_readme_layout_names_every_package_and_top_level_module():
    readme = (SRC.parents[1] / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("```")[1]
    packages = sorted(p.parent.name for p in SRC.glob("*/__init__.py"))
    modules = sorted(p.name for p in SRC.glob("*.py") if p.name != "__init__.py")
    missing = [f"{name}/" for name in packages if f"  {name}/" not in layout]
    missing += [name for name in modules if name not in layout]
    assert not missing, f"README's Layout leaves out {', '.join(missing)}"
    named = {word.rstrip("/") for word in layout.split() if word.endswith("/") and word[:-1].isidentifier()}
    gone = sorted(named - set(packages) - {"src", "tests", "bench", "examples", "honing", "objectives", "stages"}
                  - {p.name for p in SRC.glob("*/*/") if (p / "__init__.py").is_file()})
    assert not gone, f"README's Layout names folders that do not exist: {', '.join(gone)}"
