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
from collections.abc import Iterator
from typing import Any

import numpy as np

TEMP_PREFIX = ".tfcv-tmp-"


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
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
def directory(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[str]:
    """Yields a temporary directory that is renamed to `path` on success.

    On any exception the temporary directory is removed and `path` is left
    exactly as it was.
    """
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=parent)
    try:
        yield tmp
        if os.path.exists(path):
            if not overwrite:
                raise FileExistsError(f"Refusing to overwrite existing directory {path!r}.")
            # Move the old directory aside first so `path` is never missing
            # and never half-written.
            old = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=parent)
            os.replace(path, os.path.join(old, "old"))
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
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
            if os.path.isdir(full):
                shutil.rmtree(full, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(full)
            removed.append(full)
    return removed
