"""`deepfake-detect serve-bench` end to end: it starts its own server, runs two clients, reports JSON."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def test_serve_bench_with_its_own_server(weights_dir):
    proc = subprocess.run(
        [sys.executable, "-m", "deepfake_detect.pipeline", "serve-bench", "--clients", "2", "--seconds", "0.5",
         "--size", "320x240", "--frames", "4", "--no-render", "--weights", str(weights_dir), "--device", "cpu", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["clients"] == 2 and result["jobs_done"] == 2 and result["jobs_failed"] == 0
    assert result["client_errors"] == [] and result["rejected_503"] == 0
    assert result["url"].startswith("http://127.0.0.1:")
    assert 0 < result["latency_p50_s"] <= result["latency_p95_s"] <= result["wall_s"]
    assert result["jobs_per_s"] > 0 and result["server_rss_peak_mib"] > 0


def test_serve_bench_refuses_a_bad_size():
    proc = subprocess.run([sys.executable, "-m", "deepfake_detect.pipeline", "serve-bench", "--size", "big"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: a size looks like 1280x720, got 'big'"
