"""Writing files and folders atomically: a reader sees the old one or the new one, never half of it.

Every output people or programs read goes through here:
- ``write_atomically`` (a file): pictures, bundle manifests, benchmark reports, TensorRT plans and timing caches,
  the training feature cache;
- ``building_folder`` (a folder built aside, then renamed into place): engine bundles, ``make-random`` models and
  training checkpoints. A build killed halfway leaves only a ``.<name>.building-<pid>-*`` sibling, which the
  next build of the same folder removes once the process that made it is gone.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def write_atomically(path: str | os.PathLike, data: bytes | memoryview) -> Path:
    """Write ``data`` to a temporary file beside ``path``, give it the usual permissions, then rename it onto ``path``."""
    path = Path(path)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o666 & ~umask)  # mkstemp makes it private
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return path


def _building_prefix(out: Path) -> str:
    return f".{out.name}.building-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_builds(out: Path) -> list[Path]:
    """Delete the ``.<name>.building-<pid>-*`` siblings of ``out`` whose process no longer runs; return them."""
    removed = []
    if not out.parent.is_dir():
        return removed
    for candidate in out.parent.glob(f"{_building_prefix(out)}*"):
        pid = candidate.name[len(_building_prefix(out)) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


def publish_folder(staging: Path, out: Path) -> Path:
    """Move a finished folder onto ``out``; an old ``out`` is moved aside first, then deleted."""
    old = None
    if out.exists():
        old = out.with_name(f"{_building_prefix(out)}{os.getpid()}-old")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


@contextmanager
def building_folder(out: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty sibling folder to build ``out`` in; on success it replaces ``out``, on any failure it is deleted.

    The folder is world-readable (unlike ``mkdtemp``'s), since bundles and models are meant to be shared.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(out)
    staging = Path(tempfile.mkdtemp(prefix=f"{_building_prefix(out)}{os.getpid()}-", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)
        yield staging
        publish_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
