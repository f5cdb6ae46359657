"""Writing a file atomically: a reader sees the old file or the new one, never half of it.

Used for everything the runtime and the exporter leave for people and programs to read: pictures
(``runtime.picture``), bundle manifests (``runtime.bundle``) and benchmark reports (``audiotoken-rt bench``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomically(path: str | os.PathLike, data: bytes) -> Path:
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
