"""``just serve-demo`` stopped with Ctrl-C ends without a recipe error, and a real failure still fails.

The recipe's own attributes (read from the Justfile) run with a stand-in for ``audiotoken-rt serve`` that behaves as
serve does on Ctrl-C (``runtime.serving.serve.Stopping``: the first SIGINT drains, prints ``stopped`` and returns, exit
status 0), under the ``just`` of the dev extra. Ctrl-C reaches every process of the terminal's foreground group, just
included, and just then calls the recipe failed whatever its command returned, unless the recipe says otherwise; serving
the real demo needs PyTriton's environment and minutes, so the stand-in takes its place."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

SERVE_STAND_IN = """\
import signal, sys, time
if sys.argv[1] == "fails":
    sys.exit("error: a bad bundle")  # as serve refuses one: its line, exit status 1
stop = []
signal.signal(signal.SIGINT, lambda *_: stop.append(1))
print("serving", flush=True)
while not stop:
    time.sleep(0.05)
print("stopped", flush=True)
"""


def just() -> str:
    found = shutil.which("just", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.skip("just is not installed (the dev extra's rust-just brings it)")
    return found


def serve_demo_recipe() -> tuple[list[str], list[str]]:
    """The serve-demo recipe of the Justfile: its attribute lines, and its command lines."""
    lines = (REPO / "Justfile").read_text().splitlines()
    start = lines.index("serve-demo:")
    attributes = []
    for line in reversed(lines[:start]):
        if not line.startswith("["):
            break
        attributes.insert(0, line)
    body = []
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        body.append(line.strip())
    return attributes, body


def run_stand_in(tmp_path: Path, behaviour: str) -> subprocess.CompletedProcess:
    """``just serve-demo`` with the recipe's attributes and the stand-in as its command (``serves``: until Ctrl-C,
    sent as a terminal sends it, SIGINT to the whole process group, once the stand-in serves; ``fails``: at once)."""
    attributes, _ = serve_demo_recipe()
    script = tmp_path / "serve.py"
    script.write_text(SERVE_STAND_IN)
    recipe = "\n".join([*attributes, "serve-demo:", f"    {sys.executable} {script} {behaviour}", ""])
    (tmp_path / "justfile").write_text(recipe)
    process = subprocess.Popen(
        [just(), "serve-demo"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    if behaviour == "serves":
        assert process.stdout.readline().strip() == "serving"
        os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_serve_demo_runs_serve_as_its_last_command():
    _, body = serve_demo_recipe()
    assert body[-1].startswith(".venv-serve/bin/audiotoken-rt serve "), body


def test_ctrl_c_ends_serve_demo_without_a_recipe_error(tmp_path):
    done = run_stand_in(tmp_path, "serves")
    assert "stopped" in done.stdout
    assert "error" not in done.stderr, done.stderr  # just's "recipe `serve-demo` was terminated ... by signal 2"


def test_a_failing_serve_demo_still_fails_with_its_own_line(tmp_path):
    done = run_stand_in(tmp_path, "fails")
    errors = [line for line in done.stderr.splitlines() if "error" in line]  # just echoes the command line first
    assert done.returncode == 1 and errors == ["error: a bad bundle"], done.stderr
