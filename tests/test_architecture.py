"""The dependency rules of ARCHITECTURE.md, checked on the source: a package may import only
the packages listed for it, so that curation / degradation / evaluation never pull in a
diffusion model and models never learn about training, data or the command line."""

import ast
from pathlib import Path

import osdhuman

SRC = Path(osdhuman.__file__).parent
BASE = {"config", "imageio", "outputs", "boxes", "__init__"}  # shared leaves (and the version in __init__)
ALLOWED = {
    "cli": None,  # the front end may import anything
    "app": {"pipelines", "models", "curation", "evaluation", "iqa"},  # a front end beside the CLI, never the CLI
    "training": {"models", "data", "degradation", "iqa"},
    "pipelines": {"models"},
    "models": set(),
    "data": {"degradation"},
    "degradation": set(),
    "curation": {"iqa"},
    "evaluation": {"iqa"},
    "iqa": set(),
}


def _osdhuman_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "osdhuman":
                found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def test_every_package_is_covered_by_the_rules():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages - {"data_files"} == set(ALLOWED)


def test_packages_import_only_what_architecture_allows():
    bad = []
    for package, allowed in ALLOWED.items():
        if allowed is None:
            continue
        for path in sorted((SRC / package).rglob("*.py")):
            for dep in _osdhuman_imports(path) - BASE - {package} - allowed:
                bad.append(f"{path.relative_to(SRC)} imports osdhuman.{dep}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\nfrom osdhuman.models import build_osdhuman\ndef f():\n    import osdhuman.cli\n")
    assert _osdhuman_imports(f) == {"models", "cli"}
