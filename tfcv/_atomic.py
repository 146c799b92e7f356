"""Atomic writes: a crash never leaves a half-written file or directory.

Everything tfcv writes to disk goes to a temporary path beside its target and
is moved into place with `os.replace`, the one step that is atomic on POSIX
file systems.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

TEMP_PREFIX = ".tfcv-tmp-"

_umask_lock = threading.Lock()


def umask() -> int:
    """The process's umask: from /proc on Linux, elsewhere by setting and
    restoring it (briefly process-wide, hence the lock)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def make_temp_dir(prefix: str, parent: str) -> str:
    """`tempfile.mkdtemp`, with the permissions a plain `mkdir` would give
    under the user's umask (mkdtemp makes 0700: a bundle or run directory
    renamed from it would be unreadable to other users, such as a TF Serving
    process)."""
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.chmod(path, 0o777 & ~umask())
    return path


def fsync_tree(root: str) -> None:
    """Flushes every file below `root` (and the directories) to disk."""
    for directory, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(directory, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_directory(directory)


def _fsync_directory(path: str) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_tree(path: str | os.PathLike) -> None:
    """Removes `path` if it exists: a link is unlinked, never followed."""
    path = os.fspath(path)
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def discard(path: str | os.PathLike) -> None:
    """`remove_tree` for clean-ups that must not fail: errors are ignored.

    Unlike `shutil.rmtree(path, ignore_errors=True)`, which refuses a link
    and silently leaves it, a link (e.g. a version directory that was a
    link and has been swapped out) is removed.
    """
    path = os.fspath(path)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    try:
        # mkstemp makes 0600; a plain open() would honour the umask.
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_directory(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


@contextlib.contextmanager
def directory(path: str | os.PathLike) -> Iterator[str]:
    """Yields a temporary directory that is renamed to `path` on success.

    On any exception the temporary directory is removed and `path` is left
    exactly as it was. An existing `path` is never replaced (bundles, which
    may be, are published by `tfcv.export` with an atomic exchange).
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = make_temp_dir(TEMP_PREFIX, parent)
    try:
        yield tmp
        fsync_tree(tmp)
        if os.path.lexists(path):
            raise FileExistsError(f"Refusing to overwrite existing directory {path!r}.")
        os.replace(tmp, path)
        _fsync_directory(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_leftovers(parent: str | os.PathLike) -> list[str]:
    """Removes temporary directories and files left by an interrupted write."""
    removed = []
    if not os.path.isdir(parent):
        return removed
    for name in os.listdir(parent):
        if name.startswith(TEMP_PREFIX):
            full = os.path.join(parent, name)
            discard(full)
            removed.append(full)
    return removed
