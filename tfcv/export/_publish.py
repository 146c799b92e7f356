"""`export_saved_model`: write a bundle beside its base path, check it, then
publish it with one rename.

A server polling `base_path` sees either no new version or a complete,
checked one. Each export writes into a hidden `.tfcv-tmp-export-<pid>-*`
directory; one left by a process that is gone (killed mid-export) is removed
by the next export.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import tempfile
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

from tfcv import _atomic, _checks, bundle
from tfcv.export._randomized import Randomized
from tfcv.export._signatures import _ExportPlan, check_metadata
from tfcv.export._sources import CVResult, resolve
from tfcv.export._verify import check_bundle

__all__ = ["export_saved_model"]

_EXPORT_TEMP = _atomic.TEMP_PREFIX + "export-"
# Private fault injection for tests: "raise" raises and "kill" SIGKILLs the
# process at the last step before the version directory is renamed into place.
_FAULT_ENV = "TFCV_EXPORT_FAULT"


def export_saved_model(
    obj: keras.Model | CVResult | str | os.PathLike,
    base_path: str | os.PathLike,
    *,
    version: int | None = None,
    randomized: Randomized | None = Randomized(samples=16),  # noqa: B008 - a frozen dataclass
    warmup: bool | Any = True,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> str:
    """Writes a TensorFlow Serving bundle to `base_path/<version>`.

    The bundle is written into a hidden temporary directory inside
    `base_path`, checked (every signature's specs, `serving_default` against
    the in-memory model to 1e-5, every warmup record replayed) and only then
    renamed into place, so a server polling `base_path` never sees a partial
    version and a failed or killed export leaves no numeric directory behind.
    Leftovers of killed exports are removed by the next export.

    Args:
        obj: A `keras.Model`, a `CVResult` (exported as its fold ensemble),
            or the path of a run directory or `.keras` file, loaded with
            `safe_mode=True`.
        base_path: `str`. Directory that TF Serving polls for versions
            (`model_base_path`).
        version: `int`. Version to write. Defaults to one above the highest
            present (1 for a new base path).
        randomized: A `Randomized` config, or `None` to leave the
            `predict_randomized` signature out. Defaults to
            `Randomized(samples=16)`.
        warmup: `True` writes warmup records of random inputs in the input
            range (see `metadata`), `False` writes none, and an array of
            samples writes random inputs in the value range of that array.
            Defaults to `True`.
        metadata: `dict` of extra information: `class_names` (list of
            `str`, defaults to `["0", "1", ...]` for classifiers), `task`
            (`"classification"` or `"regression"`, for a `keras.Model`;
            defaults to classification when the last activation is softmax
            or sigmoid), `input_range` (`[low, high]` of the input values,
            defaults to `[0, 1]` for float and `[0, 255]` for integer
            inputs). Any other JSON-serializable keys are stored as they are
            in `assets.extra/tfcv.json`.
        overwrite: `bool`. Replace an existing version directory. Defaults
            to `False`.

    Returns:
        The path of the published version directory.

    Example:

    >>> path = tfcv.export.export_saved_model(result, "serving/models/digits")
    >>> tfcv.export.verify(path)
    """
    if randomized is not None and not isinstance(randomized, Randomized):
        raise TypeError(
            f"Invalid value for argument `randomized`. Received: randomized={randomized!r}. "
            "Expected a tfcv.export.Randomized or None."
        )
    metadata = check_metadata(metadata)
    models, result = resolve(obj)
    plan = _ExportPlan(models, result, randomized, metadata, warmup)

    base_path = os.path.abspath(os.fspath(base_path))
    model_name = os.path.basename(base_path)
    os.makedirs(base_path, exist_ok=True)
    _remove_export_leftovers(base_path)
    version = _choose_version(base_path, version, overwrite)
    target = os.path.join(base_path, str(version))

    tmp = tempfile.mkdtemp(prefix=f"{_EXPORT_TEMP}{os.getpid()}-", dir=base_path)
    try:
        signatures = plan.write_saved_model(tmp)
        loaded = tf.saved_model.load(tmp, tags=[bundle.SERVE_TAG])
        plan.compare_with_models(loaded)
        records = bundle.write_warmup(tmp, plan.warmup_requests(model_name=model_name)) if plan.warmup else 0
        bundle.write_metadata(
            tmp, plan.metadata(signatures, version=version, model_name=model_name, warmup_records=records),
        )
        check_bundle(tmp, loaded=loaded)
        _inject_fault()
        _publish(tmp, target, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _inject_fault() -> None:
    fault = os.environ.get(_FAULT_ENV)
    if fault == "raise":
        raise RuntimeError(f"Export failure injected by {_FAULT_ENV}=raise before publishing.")
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)


def _publish(tmp: str, target: str, *, overwrite: bool) -> None:
    _fsync_tree(tmp)
    if os.path.exists(target):
        if not overwrite:
            raise FileExistsError(
                f"Version directory {target!r} appeared while exporting. Pass overwrite=True to replace it."
            )
        aside = tempfile.mkdtemp(prefix=f"{_EXPORT_TEMP}{os.getpid()}-old-", dir=os.path.dirname(target))
        os.replace(target, os.path.join(aside, "old"))
        os.replace(tmp, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, target)
    # Not every file system can fsync a directory; the rename is done either way.
    with contextlib.suppress(OSError):
        fd = os.open(os.path.dirname(target), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(root: str) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(directory, name), "rb") as f:
                os.fsync(f.fileno())


def _remove_export_leftovers(base_path: str) -> list[str]:
    """Removes temporary directories of exports whose process is gone."""
    removed = []
    for name in os.listdir(base_path):
        if not name.startswith(_EXPORT_TEMP):
            continue
        match = re.match(r"(\d+)-", name[len(_EXPORT_TEMP):])
        if match and int(match.group(1)) != os.getpid() and _process_alive(int(match.group(1))):
            continue
        full = os.path.join(base_path, name)
        shutil.rmtree(full, ignore_errors=True)
        removed.append(full)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _choose_version(base_path: str, version: Any, overwrite: bool) -> int:
    if version is None:
        return max(bundle.existing_versions(base_path), default=0) + 1
    version = _checks.non_negative_int("version", version, optional=True)
    if os.path.exists(os.path.join(base_path, str(version))) and not overwrite:
        raise FileExistsError(
            f"Version {version} already exists in {base_path!r}. Pass overwrite=True to replace it, "
            "or version=None to write the next version."
        )
    return version
