"""`export_saved_model`: write a bundle beside its base path, check it, then
publish it with one rename.

A server polling `base_path` sees either no new version or a complete,
checked one. Each export writes into a hidden `.tfcv-tmp-export-<pid>-*`
directory; one left by a process that is gone (killed mid-export) is removed
by the next export. Exports to one base path run one after the other (an
exclusive `flock` on the base path directory): each chooses its version once
the previous one has published.

Replacing a version (`overwrite=True`) swaps the new directory with the old
one in one `renameat2(RENAME_EXCHANGE)` on Linux file systems that support
it, so the version is never missing. Elsewhere it takes two renames (old
version aside into `.tfcv-tmp-export-<pid>-replacing-<version>-*/old`, new
one in); an export killed between them leaves no version directory, and the
next export to the same base path puts the old version back before anything
else.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import os
import re
import shutil
import signal
import stat
import warnings
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

from tfcv import _atomic, bundle
from tfcv.export._calibrated import Conformal
from tfcv.export._calibrated import check_arguments as check_calibration
from tfcv.export._calibrated import fit as fit_calibration
from tfcv.export._image_bytes import ImageBytes
from tfcv.export._randomized import Randomized
from tfcv.export._signatures import _ExportPlan, check_metadata
from tfcv.export._sources import CVResult, resolve
from tfcv.export._verify import check_bundle

__all__ = ["export_saved_model"]

_EXPORT_TEMP = _atomic.TEMP_PREFIX + "export-"
# Private fault injection for tests, comma-separated: "raise" raises and
# "kill" SIGKILLs the process at the last step before the version directory
# is renamed into place; "kill-between-renames" SIGKILLs an overwrite after
# its first rename (after the exchange, or after the old version moved
# aside); "no-exchange" replaces with two renames, as where RENAME_EXCHANGE
# is missing.
_FAULT_ENV = "TFCV_EXPORT_FAULT"
_REPLACING = "replacing-"


def export_saved_model(
    obj: keras.Model | CVResult | str | os.PathLike,
    base_path: str | os.PathLike,
    *,
    version: int | None = None,
    randomized: Randomized | None = Randomized(samples=16),  # noqa: B008 - a frozen dataclass
    warmup: bool | Any = True,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    image_bytes: bool = False,
    calibration: str | None = None,
    conformal: Conformal | None = None,
    calibration_data: tuple | None = None,
    model: str = "ensemble",
) -> str:
    """Writes a TensorFlow Serving bundle to `base_path/<version>`.

    The bundle is written into a hidden temporary directory inside
    `base_path`, checked (every signature's specs, `serving_default` against
    the in-memory model to 1e-5, every warmup record replayed) and only then
    renamed into place, so a server polling `base_path` never sees a partial
    version and a failed or killed export leaves no numeric directory behind.
    Leftovers of killed exports are removed by the next export. A second
    export to the same base path waits (with a `UserWarning`) until the
    first has published, then chooses its version.

    Args:
        obj: A `keras.Model`, a `CVResult` (exported as its fold ensemble),
            or the path of a run directory or `.keras` file, loaded with
            `safe_mode=True`.
        base_path: `str`. Directory that TF Serving polls for versions
            (`model_base_path`).
        version: `int`. Version to write, between 0 and 2**63 - 1 (TF
            Serving reads versions as int64 and never serves a larger one).
            Defaults to one above the highest present (1 for a new base
            path).
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
        overwrite: `bool`. Replace an existing version directory, with one
            atomic exchange where the file system allows it (see the module
            docstring). Defaults to `False`.
        image_bytes: `bool`. Also write `serving_bytes`,
            `predict_folds_bytes` and `predict_randomized_bytes` (one twin
            per signature) taking `image_bytes`, a batch of encoded images
            (JPEG, PNG, GIF, BMP) decoded, resized and scaled to the input
            range in the graph as `tfcv.sources` reads image folders. Needs
            a model taking images. Defaults to `False`.
        calibration: `"temperature"` or `None`. Fits one temperature per
            served classifier signature on out-of-fold predictions made the
            way that signature predicts (see `CVResult.calibration`) and
            applies it inside the signature (`serving_default`'s and
            `predict_folds`' fold probabilities, `predict_randomized`'s mean
            become `softmax(log(p) / T)`); the temperatures
            and the out-of-fold NLL and ECE before and after go to the
            metadata under `calibration`. Needs a `CVResult`. Defaults to
            `None`.
        conformal: A `tfcv.export.Conformal`, or `None`. Adds
            `predict_set` (classifiers: `set`, `set_size`) or
            `predict_interval` (regressors: `lower`, `upper`, CV+) with
            thresholds from the out-of-fold scores of the same predictor;
            the metadata records alpha, the method, the threshold and the
            out-of-fold coverage under `conformal`. Needs a `CVResult`.
            Defaults to `None`.
        calibration_data: `(x, y)`, the data the cross-validation ran on.
            Needed to calibrate `predict_randomized` (each fold model is
            randomized on its own validation fold); checked against the
            plan's fingerprint. Defaults to `None`.
        model: `"ensemble"` (the fold models) or `"refit"` (the model
            `fit(..., refit=True)` trained on all the data) of a `CVResult`;
            the bundle's metadata records which under `metadata.model`. A
            refit model is calibrated with the fold models' temperatures
            (as scikit-learn's `CalibratedClassifierCV(ensemble=False)`)
            and refuses `conformal`: no out-of-fold score is its own.
            Defaults to `"ensemble"`.

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
    base_path = os.path.abspath(os.fspath(base_path))
    if os.path.exists(base_path) and not os.path.isdir(base_path):
        raise ValueError(
            f"Invalid value for argument `base_path`. Received: base_path={base_path!r}, which is a file. "
            "Expected a directory (made if missing) to hold the version directories."
        )
    models, result = resolve(obj)
    if model not in ("ensemble", "refit"):
        raise ValueError(f"Invalid value for argument `model`. Received: model={model!r}. Expected 'ensemble' or 'refit'.")
    if model == "refit":
        if result is None or result.refit_model is None:
            raise ValueError("model='refit' needs a CVResult (or run directory) from fit(..., refit=True); this one "
                             "holds no refit model.")
        models = [result.refit_model]
    if result is not None:
        metadata = {**metadata, "model": model}
    check_calibration(calibration, conformal, calibration_data, randomized, model)
    plan = _ExportPlan(models, result, randomized, metadata, warmup)
    if image_bytes:
        plan.image_bytes = ImageBytes(plan)
    if calibration is not None or conformal is not None:
        plan.calibrated = fit_calibration(
            result, task=plan.task, n_outputs=len(plan.output_names), randomized=randomized,
            calibration=calibration, conformal=conformal, calibration_data=calibration_data,
            predictors=tuple(plan.signature_functions()), model=model,
        )

    model_name = os.path.basename(base_path)
    os.makedirs(base_path, exist_ok=True)
    with _export_lock(base_path):
        return _write_and_publish(plan, base_path, model_name, version, overwrite)


@contextlib.contextmanager
def _export_lock(base_path: str):
    """Holds an exclusive `flock` on the base path directory, so that two
    exports to it run one after the other: each chooses its version after
    the previous one has published (version=None would otherwise give both
    the same number, and the second would fail after all its work)."""
    fd = os.open(base_path, os.O_RDONLY)
    try:
        # No flock (Windows, some network file systems): exports run
        # unlocked, and a second writer of one version fails before
        # publishing, as it always has.
        with contextlib.suppress(ImportError, OSError):
            import fcntl

            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _wait_for_lock(fd, base_path)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _wait_for_lock(fd: int, base_path: str) -> None:
    import fcntl

    warnings.warn(f"Another export to {base_path!r} is running; waiting for it to finish.", UserWarning, stacklevel=5)
    fcntl.flock(fd, fcntl.LOCK_EX)


def _write_and_publish(plan: _ExportPlan, base_path: str, model_name: str, version: Any, overwrite: bool) -> str:
    _remove_export_leftovers(base_path)
    version = _choose_version(base_path, version, overwrite)
    target = os.path.join(base_path, str(version))

    tmp = _atomic.make_temp_dir(f"{_EXPORT_TEMP}{os.getpid()}-", base_path)
    try:
        signatures = plan.write_saved_model(tmp)
        loaded = tf.saved_model.load(tmp, tags=[bundle.SERVE_TAG])
        plan.compare_with_models(loaded)
        records = bundle.write_warmup(tmp, plan.warmup_requests(model_name=model_name)) if plan.warmup else 0
        bundle.write_metadata(
            tmp, plan.metadata(signatures, version=version, model_name=model_name, warmup_records=records),
        )
        check_bundle(tmp, loaded=loaded)
        _apply_umask(tmp)
        if "raise" in _faults():
            raise RuntimeError(f"Export failure injected by {_FAULT_ENV}=raise before publishing.")
        _kill_if("kill")
        _publish(tmp, target, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _faults() -> set[str]:
    return set(filter(None, os.environ.get(_FAULT_ENV, "").split(",")))


def _kill_if(point: str) -> None:
    if point in _faults():
        os.kill(os.getpid(), signal.SIGKILL)


def _apply_umask(root: str) -> None:
    """Gives every file and directory below `root` the mode a plain `open`
    or `mkdir` would under the user's umask, whatever the writers chose
    (mkdtemp and mkstemp make 0700/0600), so that a TF Serving process
    running as another user can read the bundle when the umask lets it."""
    mask = _atomic.umask()
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o777 & ~mask)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                executable = os.stat(path).st_mode & stat.S_IXUSR
                os.chmod(path, (0o777 if executable else 0o666) & ~mask)


def _publish(tmp: str, target: str, *, overwrite: bool) -> None:
    _atomic.fsync_tree(tmp)
    base_path = os.path.dirname(target)
    if os.path.exists(target):
        if not overwrite:
            raise FileExistsError(
                f"Version directory {target!r} appeared while exporting. Pass overwrite=True to replace it."
            )
        if "no-exchange" not in _faults() and _exchange(tmp, target):
            # `tmp` now holds the old version.
            _fsync_directory(base_path)
            _kill_if("kill-between-renames")
            _atomic.discard(tmp)
            return
        version = os.path.basename(target)
        aside = _atomic.make_temp_dir(f"{_EXPORT_TEMP}{os.getpid()}-{_REPLACING}{version}-", base_path)
        os.replace(target, os.path.join(aside, "old"))
        _kill_if("kill-between-renames")
        os.replace(tmp, target)
        _fsync_directory(base_path)
        _atomic.discard(aside)
    else:
        os.replace(tmp, target)
        _fsync_directory(base_path)


def _fsync_directory(path: str) -> None:
    # Makes the renames durable; not every file system can fsync a
    # directory, and the rename is done either way.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: str, b: str) -> bool:
    """Swaps two paths atomically with Linux's `renameat2(RENAME_EXCHANGE)`.

    Returns `False` (nothing changed) where the C library, the kernel or
    the file system does not provide it.
    """
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"Cannot exchange {a!r} with {b!r}: {os.strerror(code)}")


@functools.cache
def _renameat2():
    with contextlib.suppress(OSError, AttributeError, TypeError):
        function = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).renameat2
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        function.restype = ctypes.c_int
        return function
    return None


def _remove_export_leftovers(base_path: str) -> list[str]:
    """Removes temporary directories of exports whose process is gone,
    first putting back a version that an overwrite killed between its two
    renames had moved aside (unless that version has been written since)."""
    removed = []
    for name in sorted(os.listdir(base_path)):
        if not name.startswith(_EXPORT_TEMP):
            continue
        match = re.match(rf"(\d+)-(?:{_REPLACING}(\d+)-)?", name[len(_EXPORT_TEMP):])
        if match and int(match.group(1)) != os.getpid() and _process_alive(int(match.group(1))):
            continue
        full = os.path.join(base_path, name)
        if match and match.group(2) and bundle.is_version_name(match.group(2)):
            old, target = os.path.join(full, "old"), os.path.join(base_path, match.group(2))
            if bundle.saved_model_file(old) is not None and not os.path.lexists(target):
                os.replace(old, target)
                _fsync_directory(base_path)
        _atomic.discard(full)
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
        latest = max(bundle.existing_versions(base_path), default=0)
        if latest >= bundle.MAX_VERSION:
            raise ValueError(
                f"Cannot choose a version above {latest} in {base_path!r}: TF Serving reads versions as int64. "
                "Pass version=... explicitly."
            )
        return latest + 1
    version = bundle.check_version(version)
    if os.path.exists(os.path.join(base_path, str(version))) and not overwrite:
        raise FileExistsError(
            f"Version {version} already exists in {base_path!r}. Pass overwrite=True (tfcv export --overwrite) "
            "to replace it, or version=None (no --version) to write the next version."
        )
    return version
