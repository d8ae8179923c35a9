"""The map in docs/ARCHITECTURE.md holds: no import crosses a layer the wrong way (import-linter's
contracts in pyproject.toml), and no module imports another in a circle."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed (pip install -e '.[test]')")
def test_import_contracts_are_kept() -> None:
    run = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_no_import_circles() -> None:
    grimp = pytest.importorskip("grimp")  # import-linter's own import-graph library
    graph = grimp.build_graph("deepfake_detect.pipeline", "deepfake_detect.stages", "deepfake_detect.training", cache_dir=None)
    circles = [(a, b) for a in sorted(graph.modules) for b in graph.find_modules_directly_imported_by(a)
               if a < b and graph.find_shortest_chain(importer=b, imported=a)]
    assert circles == []
