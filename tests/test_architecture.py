"""The dependency rules of ARCHITECTURE.md, checked on the source: a package may import only
the packages listed for it, so that curation / degradation / evaluation never pull in a
diffusion model and models never learn about training, data or the command line."""

import ast
from pathlib import Path

import osdhuman

SRC = Path(osdhuman.__file__).parent
BASE = {"config", "imageio", "outputs", "boxes", "charts", "__init__"}  # shared leaves (and the version in __init__)
ALLOWED = {
    "cli": None,  # the front end may import anything
    # a front end beside the CLI, calling the same functions; from cli/ only how weights are
    # configured through the environment (cli/weights_env.py)
    "app": {"pipelines", "models", "curation", "evaluation", "iqa", "cli"},
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


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_edges(path: Path, modules: set[str]) -> set[str]:
    """The osdhuman modules ``path`` imports, anywhere in the file (late imports included):
    ``from a.b import c`` is module ``a.b.c`` when that is a module, else ``a.b``."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != here}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package_graph(package: Path) -> dict[str, set[str]]:
    files = sorted(package.rglob("*.py"))
    modules = {_module_name(p) for p in files}
    inside = {m for m in modules if m.startswith(_module_name(package / "__init__.py"))}
    return {_module_name(p): _module_edges(p, modules) & inside for p in files}


def test_no_import_cycle_between_modules_of_a_package():
    bad = []
    for package in sorted(p for p in SRC.iterdir() if (p / "__init__.py").exists()):
        graph = _package_graph(package)
        # a package's __init__ re-exports its modules; a module importing the package itself
        # would close a cycle through it, so __init__ stays in the graph
        bad += [" -> ".join(c) for c in _cycles(graph)]
    assert not bad, "import cycles:\n" + "\n".join(bad)


def test_the_cycle_checker_sees_late_imports(tmp_path):
    pkg = tmp_path / "osdhuman" / "pkg"
    pkg.mkdir(parents=True)
    (tmp_path / "osdhuman" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from osdhuman.pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from osdhuman.pkg.a import thing  # late\n")
    (pkg / "c.py").write_text("from . import a\n")
    files = sorted(pkg.glob("*.py"))
    root = tmp_path / "osdhuman"
    modules = {".".join(p.relative_to(tmp_path).with_suffix("").parts).removesuffix(".__init__") for p in files}
    graph = {}
    for p in files:
        global SRC
        saved, SRC = SRC, root
        try:
            graph[_module_name(p)] = _module_edges(p, modules)
        finally:
            SRC = saved
    assert graph["osdhuman.pkg.c"] == {"osdhuman.pkg.a"}
    assert _cycles(graph) == [["osdhuman.pkg.a", "osdhuman.pkg.b"]]


WRITER = SRC / "outputs.py"  # the one module that moves files into place


def _renames(path: Path) -> list[int]:
    """Lines of ``path`` that move a file into place: ``os.replace`` / ``os.rename`` /
    ``shutil.move``, or ``x.replace(y)`` / ``x.rename(y)`` with one non-string argument (a
    Path's; str.replace takes two, pandas' rename takes keywords or a string)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        f = node.func
        if isinstance(f.value, ast.Name) and (f.value.id, f.attr) in {("os", "replace"), ("os", "rename"),
                                                                      ("shutil", "move")}:
            lines.append(node.lineno)
        elif f.attr in ("replace", "rename") and len(node.args) == 1 and not node.keywords \
                and not isinstance(node.args[0], ast.Constant):
            lines.append(node.lineno)
    return lines


def test_only_the_write_module_moves_files_into_place():
    bad = [f"{p.relative_to(SRC)}:{n}" for p in sorted(SRC.rglob("*.py")) if p != WRITER for n in _renames(p)]
    assert not bad, "temp-then-rename outside osdhuman/outputs.py (use its atomic_* / replace_dir):\n" + "\n".join(bad)
    assert _renames(WRITER), "the checker no longer sees outputs.py's own renames"


def test_the_rename_checker_sees_each_form(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os, shutil\nos.replace(a, b)\nshutil.move(a, b)\ntmp.rename(final)\n"
                 "s.replace('a', 'b')\ndf.rename(columns={})\nsizes.rename('count')\np.replace(q)\n")
    assert _renames(f) == [2, 3, 4, 8]


def test_the_app_takes_from_the_cli_only_how_weights_are_configured():
    found = set()
    for path in sorted((SRC / "app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("osdhuman.cli"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("osdhuman.cli")}
    assert found <= {"osdhuman.cli.weights_env"}, found
