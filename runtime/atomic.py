"""Writing files and folders atomically and durably: a reader sees the old one or the new one, never half of it,
and a kill (or a power cut) at any point loses neither.

Every output people or programs read goes through here:
- ``write_atomically`` (a file): pictures, bundle manifests, benchmark reports, TensorRT plans and timing caches,
  the training feature cache, the final embedder files and metrics of a training run. The data is written to a
  temporary sibling and fsynced, renamed onto the path, and the folder fsynced.
- ``building_folder`` (a folder built aside, then published by ``publish_folder``): engine bundles,
  ``make-random`` models, ``triton-repo`` repositories and training checkpoints.

A folder ``OUT`` is built and published through siblings named ``.OUT.<state>-<pid>-<id>``, so that whatever
point a kill stops the sequence at, what it leaves says what to do with it:
1. ``building``: being built (or being deleted); unfinished, so the next build removes it once its process is gone;
2. every file and folder in it fsynced, then renamed to ``ready``: finished, not yet published;
3. the old ``OUT``, if any, renamed to ``old``;
4. ``ready`` renamed to ``OUT``; the parent folder fsynced;
5. ``old`` renamed back to ``building`` and deleted.
``remove_stale_builds`` (run by the next build of ``OUT``; ``remove_stale_builds_in`` for a whole folder, which
training runs before it looks for a checkpoint) publishes a ``ready`` folder a killed process left (the newest, if
several), else puts a killed process's ``old`` back where ``OUT`` is missing, and deletes the rest: only what was
never finished, or was superseded, is deleted. The siblings of a process still running are left alone.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

BUILDING, READY, OLD = "building", "ready", "old"
# .<name>.<state>-<pid>-<id>: a sibling of the folder <name> in one state of its publication
SIBLING = re.compile(rf"^\.(?P<name>.+)\.(?P<state>{BUILDING}|{READY}|{OLD})-(?P<pid>\d+)-(?P<id>.+)$")
LEGACY_OLD = "old"  # earlier versions moved the old OUT aside as .OUT.building-<pid>-old


def fsync_folder(folder: Path) -> None:
    """Make the entries of ``folder`` (names created, renamed or removed) durable."""
    handle = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(handle)
    except OSError as exc:  # some network and FUSE file systems cannot sync a folder: its renames are done, unforced
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(handle)


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: a temporary file beside it, which, once the block ends without an
    exception, gets the usual permissions, is fsynced and renamed onto ``path`` (then the folder is fsynced); an
    exception removes it and leaves ``path`` as it was. For what is written piece by piece (a video)."""
    path = Path(path)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w+b") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o666 & ~umask)  # mkstemp makes it private
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def write_atomically(path: str | os.PathLike, data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically (``atomic_file``)."""
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def sync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (folders after their entries), and ``root`` itself."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            file = Path(folder) / name
            if file.is_symlink():
                continue
            handle = os.open(file, os.O_RDONLY)
            try:
                os.fsync(handle)
            finally:
                os.close(handle)
        fsync_folder(Path(folder))


def _prefix(out: Path, state: str) -> str:
    return f".{out.name}.{state}-{os.getpid()}-"


def _sibling(out: Path, state: str) -> Path:
    """A new name beside ``out`` for one of its folders in ``state``, owned by this process."""
    return out.with_name(_prefix(out, state) + secrets.token_hex(4))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _discard(folder: Path, out: Path) -> None:
    """Delete ``folder``, first renamed to a ``building`` name, so that a kill halfway leaves nothing to restore."""
    doomed = _sibling(out, BUILDING)
    os.replace(folder, doomed)
    if doomed.is_symlink():  # an OUT that was a link: the link goes, never what it points to
        doomed.unlink()
    else:
        shutil.rmtree(doomed, ignore_errors=True)


def _swap_in(ready: Path, out: Path) -> None:
    """Steps 3-5: put the finished folder ``ready`` at ``out``, the old ``out`` aside and then deleted (put back if
    ``ready`` cannot be moved)."""
    old = None
    if out.exists() or out.is_symlink():
        old = _sibling(out, OLD)
        os.replace(out, old)
    try:
        os.replace(ready, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    fsync_folder(out.parent)
    if old is not None:
        _discard(old, out)


def publish_folder(staging: Path, out: Path) -> Path:
    """Move the finished folder ``staging`` onto ``out`` durably, through the steps in the module docstring; an old
    ``out`` is deleted once the new one is in place."""
    sync_tree(staging)
    ready = _sibling(out, READY)
    os.replace(staging, ready)
    fsync_folder(out.parent)
    _swap_in(ready, out)
    return out


def remove_stale_builds(out: Path) -> list[Path]:
    """Finish or undo what killed builds of ``out`` left beside it, and return the folders deleted.

    A killed process's ``ready`` folder is published (the newest by modification time, if several: the others are
    deleted); where ``out`` is still missing, a killed process's ``old`` copy is put back (the newest); everything
    else of a killed process (unfinished builds, superseded copies) is deleted. Siblings of running processes are
    left alone.
    """
    if not out.parent.is_dir():
        return []
    stale: dict[str, list[Path]] = {BUILDING: [], READY: [], OLD: []}
    for candidate in out.parent.glob(f".{glob.escape(out.name)}.*-*"):
        match = SIBLING.match(candidate.name)
        if match is None or match["name"] != out.name or _alive(int(match["pid"])):
            continue
        state = OLD if (match["state"], match["id"]) == (BUILDING, LEGACY_OLD) else match["state"]
        stale[state].append(candidate)
    ready, old = (sorted(stale[state], key=lambda folder: folder.stat().st_mtime_ns) for state in (READY, OLD))
    if ready:
        _swap_in(ready.pop(), out)
    if old and not (out.exists() or out.is_symlink()):
        os.replace(old.pop(), out)
        fsync_folder(out.parent)
    for folder in (*ready, *old):
        _discard(folder, out)
    for folder in stale[BUILDING]:
        shutil.rmtree(folder, ignore_errors=True)
    return [*ready, *old, *stale[BUILDING]]


def remove_stale_builds_in(parent: Path) -> list[Path]:
    """``remove_stale_builds`` for every folder whose builds left siblings in ``parent``; the folders deleted."""
    names = {match["name"] for match in map(SIBLING.match, (p.name for p in parent.glob(".*"))) if match}
    return [folder for name in sorted(names) for folder in remove_stale_builds(parent / name)]


@contextmanager
def building_folder(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty sibling folder to build ``out`` in; on success it is published onto ``out``
    (``publish_folder``), on any failure it is deleted. What killed builds of ``out`` left is dealt with first
    (``remove_stale_builds``).

    The folder is world-readable (unlike ``mkdtemp``'s), since bundles and models are meant to be shared.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(out)
    staging = Path(tempfile.mkdtemp(prefix=_prefix(out, BUILDING), dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
        yield staging
        publish_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
