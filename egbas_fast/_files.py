"""Atomic file writes: every file the package writes (checkpoints, PNGs, reports) goes through `atomic_write`;
`check_writable` tests an output directory before any work starts; `installed_file` finds a file that a
registry package ships (data, weights) without importing the package."""
import importlib.metadata
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


class OutputDirectoryError(ValueError):
    """The output directory cannot be created or written (a user error: the CLI prints it as one line)."""


def check_writable(out_dir):
    """Raise a clear error unless `out_dir` is (or can be created as) a writable directory. Creates nothing.

    Called before any expensive work, so a bad `--out` fails in a second instead of after the exploration.
    """
    path = Path(out_dir).expanduser().absolute()
    probe = path
    while not probe.exists():  # the first existing ancestor decides whether we may create the rest
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise OutputDirectoryError(f"output directory {str(path)!r}: {str(probe)!r} exists and is not a directory")
    try:  # really try (os.access says yes to root even on read-only or pseudo file systems); leaves nothing
        os.rmdir(tempfile.mkdtemp(dir=probe, prefix=".egbas-probe-"))
    except OSError as e:
        raise OutputDirectoryError(f"output directory {str(path)!r}: cannot create files in {str(probe)!r} "
                                   f"({e.strerror})") from None
    return path


def installed_file(package, filename, install, needed_for):
    """Path of `filename` inside the installed distribution `package`, found from its file list (the package is
    never imported). A missing package or file is an ImportError naming the `install` command."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise ImportError(f"{needed_for} needs the {package} package: run `{install}`") from None
    for file in dist.files or ():
        if file.name == filename:
            return Path(dist.locate_file(file))
    raise ImportError(f"{package} {dist.version} has no {filename}: run `{install}`")
