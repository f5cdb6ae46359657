"""The soak test of ``audiotoken-rt serve`` (marked slow): ``runtime.serving.soak`` on the tiny bundle for
``AUDIOTOKEN_RT_SOAK_SECONDS`` seconds (60 unless set; ``just soak`` runs 300 on the demo bundle). Four clients mix
good requests, each answered with the CLI's picture bit for bit, with every hostile kind, each refused in one line;
the server's process tree stays under a memory bound and is ready at the end, and SIGTERM stops it with exit 0.
The server runs from .venv-serve (PyTriton needs numpy < 2); without it this test skips, saying so."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support import REPO

SERVE_PYTHON = REPO / ".venv-serve" / "bin" / "python"
SECONDS = float(os.environ.get("AUDIOTOKEN_RT_SOAK_SECONDS", "60"))
MAX_RSS_MB = 4096  # the server tree's RSS, shared memory counted in every process that maps it


@pytest.mark.slow
def test_the_server_holds_under_minutes_of_good_and_hostile_requests(tiny_bundle, clips, tmp_path):
    from runtime.serving.soak import HOSTILE

    if not SERVE_PYTHON.exists():
        pytest.skip("needs .venv-serve (PyTriton wants numpy < 2): run `just setup-serve`")
    report_path = tmp_path / "soak.json"
    command = [str(SERVE_PYTHON), "-m", "runtime.serving.soak", str(tiny_bundle), *map(str, clips),
               "--seconds", str(SECONDS), "--max-rss-mb", str(MAX_RSS_MB), "--json", str(report_path)]  # fmt: skip
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=SECONDS + 900)
    assert report_path.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["failures"] == [], report["failures"]
    goods = {"plain", "prompted ddim", "euler-a", "384 kHz stereo", "ddim, eta 0.5, trailing"}  # every kind answered
    assert set(report["answered"]) == goods and set(report["refused"]) == {bad.name for bad in HOSTILE}
    assert report["memory_mb"]["rss_peak"] <= MAX_RSS_MB and report["memory_mb"]["samples"] >= SECONDS / 2
    assert report["ready_at_end"] and report["exit_code"] == 0
    assert run.returncode == 0 and report["passed"], run.stdout[-3000:]
