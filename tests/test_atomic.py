"""runtime.atomic: a folder built aside replaces its target whole or not at all, and a killed build's leftovers go."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from runtime.atomic import building_folder, remove_stale_builds


def test_a_finished_build_replaces_the_folder_whole(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with building_folder(out) as staging:
        assert staging.parent == tmp_path and staging.name.startswith(f".bundle.building-{os.getpid()}-")
        (staging / "new.txt").write_text("new")
        assert (out / "old.txt").is_file()  # readers still see the old folder while the new one is built
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_a_failed_build_leaves_the_old_folder_and_no_scratch(tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), building_folder(out) as staging:
        (staging / "half.txt").write_text("half")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    assert (out / "old.txt").read_text() == "old"


def test_leftovers_of_dead_builds_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    out = tmp_path / "bundle"
    killed = tmp_path / f".bundle.building-{dead}-x1y2"
    running = tmp_path / f".bundle.building-{os.getpid()}-a3b4"
    other = tmp_path / f".other.building-{dead}-c5d6"
    for folder in (killed, running, other):
        folder.mkdir()
        (folder / "unet.onnx").write_bytes(b"partial")
    assert remove_stale_builds(out) == [killed]
    assert not killed.exists() and running.exists() and other.exists()


def test_the_next_export_removes_what_a_killed_one_left(tiny_models, tiny_bundle, tmp_path):
    import io
    import shutil

    from rich.console import Console

    from export.builder import export_bundle
    from export.options import ExportOptions

    out = shutil.copytree(tiny_bundle, tmp_path / "tiny")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    leftover = tmp_path / f".tiny.building-{dead}-k1ll"
    leftover.mkdir()
    (leftover / "unet.onnx.data").write_bytes(b"\0" * 1024)
    log = io.StringIO()
    options = ExportOptions(
        sd=str(tiny_models / "sd"), beats=tiny_models / "beats.pt", embedder=tiny_models / "embedder.bin", out=out
    )
    assert export_bundle(options, Console(file=log, width=200)).reused
    assert not leftover.exists() and f"removed {leftover}, left by an export that was killed" in log.getvalue()
