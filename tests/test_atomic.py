"""runtime.atomic: a folder built aside replaces its target whole or not at all, a kill at any point of the build
loses neither the old folder nor a finished new one, what is published is fsynced first, and leftovers go."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.atomic import building_folder, remove_stale_builds, remove_stale_builds_in, write_atomically
from tests.support import REPO


def dead_pid() -> int:
    """The id of a process that has exited."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)


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
    dead = dead_pid()
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

    from rich.console import Console

    from export.builder import export_bundle
    from export.options import ExportOptions

    out = shutil.copytree(tiny_bundle, tmp_path / "tiny")
    dead = dead_pid()
    leftover = tmp_path / f".tiny.building-{dead}-k1ll"
    leftover.mkdir()
    (leftover / "unet.onnx.data").write_bytes(b"\0" * 1024)
    log = io.StringIO()
    options = ExportOptions(
        sd=str(tiny_models / "sd"), beats=tiny_models / "beats.pt", embedder=tiny_models / "embedder.bin", out=out
    )
    assert export_bundle(options, Console(file=log, width=200)).reused
    assert not leftover.exists() and f"removed {leftover}, left by an export that was killed" in log.getvalue()


# A child that builds OUT (two files, one in a subfolder) and is killed with SIGKILL just before its k-th call
# that changes the disk or syncs it; it exits 0 when the build needs fewer calls.
KILLED_BUILD = """
import os, signal, sys
from pathlib import Path
from runtime.atomic import building_folder

out, kill_at, calls = Path(sys.argv[1]), int(sys.argv[2]), [0]

def dies_at_k(real):
    def call(*args, **kwargs):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call

for name in ("replace", "rename", "unlink", "rmdir", "mkdir", "fsync"):
    setattr(os, name, dies_at_k(getattr(os, name)))
with building_folder(out) as staging:
    (staging / "a.txt").write_text("new a")
    (staging / "sub").mkdir()
    (staging / "sub" / "b.txt").write_text("new b")
"""
OLD = {"a.txt": b"old a", "keep/c.txt": b"old c"}
NEW = {"a.txt": b"new a", "sub/b.txt": b"new b"}


def contents(folder: Path) -> dict[str, bytes] | None:
    if not folder.exists():
        return None
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def make(folder: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


@pytest.mark.parametrize("had_old", [True, False], ids=["over-an-old-OUT", "first-build"])
def test_a_kill_at_any_point_of_a_build_loses_nothing(tmp_path, had_old):
    """Killed before each of its disk operations in turn, a build leaves what the next build (its cleanup first)
    turns into a complete OUT, the old one or the new one, never back to old once the new one was seen, with no
    leftovers; and the case of issue 21 (OUT gone between the two renames) comes back as the finished new one."""
    outcomes = []
    for kill_at in range(1, 100):
        root = tmp_path / f"kill-{kill_at}"
        root.mkdir()
        out = root / "bundle"
        if had_old:
            make(out, OLD)
        child = subprocess.run(
            [sys.executable, "-c", KILLED_BUILD, str(out), str(kill_at)], cwd=REPO, capture_output=True, text=True
        )
        if child.returncode == 0:
            break
        assert child.returncode == -signal.SIGKILL, child.stderr
        missing = not out.exists()
        remove_stale_builds(out)  # what the next build does first
        after = contents(out)
        assert after in ((OLD if had_old else None), NEW), (kill_at, after)
        assert sorted(p.name for p in root.iterdir()) == (["bundle"] if after else []), kill_at
        outcomes.append(("new" if after == NEW else "old", missing))
        with building_folder(out) as staging:  # and the next build itself goes through
            make(staging, {"next.txt": b"next"})
        assert contents(out) == {"next.txt": b"next"} and [p.name for p in root.iterdir()] == ["bundle"]
    else:
        pytest.fail("the build was still being killed after 99 operations")
    assert contents(out) == NEW
    results = [result for result, _ in outcomes]
    assert "old" in results and results == sorted(results, key=["old", "new"].index), results  # old..., new...
    if had_old:
        assert ("new", True) in outcomes  # OUT was missing, and the finished build was published, not deleted


def test_an_out_that_is_a_link_is_replaced_and_only_the_link_goes(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("not ours")
    (tmp_path / "out").symlink_to(target)
    with building_folder(tmp_path / "out") as staging:
        (staging / "new.txt").write_text("new")
    assert not (tmp_path / "out").is_symlink() and os.listdir(tmp_path / "out") == ["new.txt"]
    assert (target / "keep.txt").read_text() == "not ours"  # what the link pointed to is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "out"]  # the old link is gone, no leftover


def test_the_old_copy_comes_back_when_there_is_nothing_newer(tmp_path):
    """A killed process's old copy is put back where OUT is missing, also as earlier versions named it."""
    dead = dead_pid()
    out = tmp_path / "bundle"
    for aside in (f".bundle.old-{dead}-1a2b", f".bundle.building-{dead}-old"):
        make(tmp_path / aside, OLD)
        (tmp_path / f".bundle.building-{dead}-x9y8").mkdir()
        assert remove_stale_builds(out) == [tmp_path / f".bundle.building-{dead}-x9y8"]
        assert contents(out) == OLD and [p.name for p in tmp_path.iterdir()] == ["bundle"]
        shutil.rmtree(out)


def test_leftovers_in_a_folder_are_recovered_for_every_name(tmp_path):
    """``remove_stale_builds_in``: a run's folder of checkpoints, with a finished but unpublished one."""
    dead = dead_pid()
    make(tmp_path / "checkpoint-1", OLD)
    make(tmp_path / f".checkpoint-2.ready-{dead}-aa11", NEW)
    make(tmp_path / f".checkpoint-3.building-{dead}-bb22", {"half": b"h"})
    make(tmp_path / f".checkpoint-3.building-{os.getpid()}-cc33", {"live": b"l"})
    assert remove_stale_builds_in(tmp_path) == [tmp_path / f".checkpoint-3.building-{dead}-bb22"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f".checkpoint-3.building-{os.getpid()}-cc33",
        "checkpoint-1",
        "checkpoint-2",
    ]
    assert contents(tmp_path / "checkpoint-2") == NEW


@pytest.fixture
def disk_calls(monkeypatch):
    """The fsync and rename calls made, in order: ("fsync", path) and ("replace", source, target)."""
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source, target, **kwargs):
        calls.append(("replace", str(source), str(target)))
        real_replace(source, target, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return calls


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads fsync's file names from /proc")
def test_a_file_and_its_folder_are_fsynced_around_the_rename(tmp_path, disk_calls):
    path = write_atomically(tmp_path / "picture.png", b"png")
    (rename,) = [i for i, call in enumerate(disk_calls) if call[0] == "replace"]
    staging = disk_calls[rename][1]
    assert disk_calls[rename][2] == str(path) and ("fsync", staging) in disk_calls[:rename]
    assert ("fsync", str(tmp_path)) in disk_calls[rename:]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads fsync's file names from /proc")
def test_every_file_and_folder_of_a_build_is_fsynced_before_it_is_published(tmp_path, disk_calls):
    out = tmp_path / "bundle"
    make(out, OLD)
    with building_folder(out) as staging:
        make(staging, NEW)
    first_rename = next(i for i, call in enumerate(disk_calls) if call[0] == "replace")
    synced = {call[1] for call in disk_calls[:first_rename]}
    assert {str(staging / name) for name in NEW} | {str(staging), str(staging / "sub")} <= synced
    published = max(i for i, call in enumerate(disk_calls) if call[0] == "replace" and call[2] == str(out))
    assert ("fsync", str(tmp_path)) in disk_calls[published:]
    assert contents(out) == NEW
