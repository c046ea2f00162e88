"""Atomic file writes: every file the package writes (checkpoints, PNGs, reports) goes through `atomic_write`."""
import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0o022)  # read the process umask once (os.umask can only be read by setting it) ...
os.umask(_UMASK)  # ... and put it back


def atomic_write(path, content):
    """Write `path` through a temp file in the same directory + os.replace: readers see the old file or the new
    one, never half of one. content: bytes, or a callable write(tmp_path) for writers that want a path
    (safetensors, PIL, matplotlib). The file gets ordinary permissions (0666 & ~umask) whatever the writer used
    (mkstemp and safetensors make 0600)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            if not callable(content):
                f.write(content)
        if callable(content):
            content(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
