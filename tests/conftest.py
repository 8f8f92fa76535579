"""Shared test settings: never touch the network, keep runs deterministic and small."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


import pytest  # noqa: E402 - after the environment above, which must precede every import


@pytest.fixture()
def no_weights_env(monkeypatch):
    """Offline, and no real weights configured through the environment (OSDHUMAN_*)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("OSDHUMAN_WEIGHTS", "OSDHUMAN_BASE_MODEL", "OSDHUMAN_HFIE_ENCODER"):
        monkeypatch.delenv(name, raising=False)


_TORCH_FREE_RUN = """
import sys
from osdhuman.cli import main
rc = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("RC", rc, "TORCH", ",".join(loaded) or "-")
"""


@pytest.fixture()
def run_cli_without_torch(tmp_path):
    """``run(argv) -> (exit code, output, torch imports)``: the CLI's ``main(argv)`` in a fresh
    interpreter whose ``PYTHONPATH`` starts with a ``torch`` package that records the importing
    process and fails, so an import of torch by the command or by a worker process it spawns is
    seen; the command's own process also reports the torch modules it holds at the end. The
    third value lists the pids that tried, plus those modules (empty: torch-free)."""
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src"
    trap, marks = tmp_path / "torch-trap", tmp_path / "torch-imports.txt"
    (trap / "torch").mkdir(parents=True)
    (trap / "torch" / "__init__.py").write_text(
        f"import os\nwith open({str(marks)!r}, 'a') as f:\n    f.write(str(os.getpid()) + '\\n')\n"
        "raise ImportError('torch imported by a command that must not need it')\n")

    def run(argv: list[str], env: dict | None = None) -> tuple[int, str, list[str]]:
        full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(trap), str(src)]), "HF_HUB_OFFLINE": "1",
                    "TORCH_HOME": str(tmp_path / "no-weights"), **(env or {})}
        p = subprocess.run([sys.executable, "-c", _TORCH_FREE_RUN, *argv], env=full_env, capture_output=True,
                           text=True, timeout=600)
        log = p.stdout + p.stderr
        assert p.returncode == 0, log
        _, rc, _, loaded = next(s for s in p.stdout.splitlines() if s.startswith("RC ")).split()
        imports = marks.read_text().split() if marks.exists() else []
        return int(rc), log, imports + ([] if loaded == "-" else [loaded])

    return run
