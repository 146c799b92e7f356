"""The run directory: the one place that knows its layout.

    run_dir/manifest.json          what the run is (data, model, settings)
    run_dir/plan.json              the FoldPlan
    run_dir/fold_<k>/              a finished fold, published atomically
    run_dir/.backup/fold_<k>/      the running fold's per-epoch backup
    run_dir/result.json            per-fold scores, mean, std, test scores
    run_dir/refit/                 the model refit on all the data (`refit=True`)
    run_dir/oof_predictions.npy    out-of-fold predictions, input order
    run_dir/test_set.npz           the held-out test rows of `tfcv run --test-size` (x, y)
    run_dir/plots/                 the figures of `tfcv run` (`tfcv.plots.save_run_plots`)

`_RunStore` writes a run as `CrossValidator.fit` goes (and refuses a
directory that holds a different run); `save_result` and `load_result` are
`CVResult.save` and `CVResult.load`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import warnings
import zipfile

import keras
import numpy as np

from tfcv import _atomic
from tfcv.folds import FoldPlan
from tfcv.result import CVResult, _FoldOutcome

_MANIFEST = "manifest.json"
_PLAN = "plan.json"
_RESULT = "result.json"
_OOF = "oof_predictions.npy"
_BACKUP = ".backup"
_LOCK = ".lock"
_CHECKPOINT = "checkpoint.npz"
_REFIT = "refit"
_TEST_SET = "test_set.npz"
_PLOTS = "plots"
# Run settings a manifest may lack because tfcv did not record them yet.
_RECORDED_LATER = ("strategy",)


def fold_dir(run_dir: str, k: int) -> str:
    return os.path.join(run_dir, f"fold_{k}")


class _RunStore:
    """Writes a run directory as `CrossValidator.fit` goes (see the module
    docstring for the layout).

    Used as a context manager: entering takes an exclusive lock on the
    directory (a second run on it fails at once, naming the holder's pid),
    leaving releases it. Nothing is ever written or deleted through a
    symbolic link inside the directory.
    """

    def __init__(self, run_dir):
        # The run directory itself may be a link the user made; below it,
        # tfcv follows none.
        self.run_dir = os.path.realpath(os.fspath(run_dir))
        self._lock = None

    def __enter__(self) -> _RunStore:
        os.makedirs(self.run_dir, exist_ok=True)
        self._lock = _DirectoryLock(self.run_dir)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def backup_dir(self, k) -> str:
        return self.inside(os.path.join(_BACKUP, f"fold_{k}"))

    def inside(self, relative: str) -> str:
        """`run_dir/relative`, refused if any part of it below the run
        directory is a symbolic link."""
        return _inside(self.run_dir, relative)

    def prepare(self, config: dict, plan: FoldPlan) -> None:
        _atomic.remove_leftovers(self.run_dir)
        if not _check_same_run(self.run_dir, plan, lambda stored: config):
            from tfcv import __version__

            _atomic.write_json(self.inside(_MANIFEST), {**config, "tfcv_version": __version__})
        if not os.path.exists(self.inside(_PLAN)):
            plan.save(self.inside(_PLAN))

    def load_finished(self, plan: FoldPlan, *, task: str, seeds: list[int], epochs: int) -> dict[int, _FoldOutcome]:
        """The folds already finished, each checked against the run."""
        finished = {}
        for k in range(len(plan)):
            path = fold_dir(self.run_dir, k)
            if os.path.lexists(path):
                finished[k] = _load_checked_fold(
                    self.run_dir, k, plan, scores=("loss",) + _TASK_SCORES.get(task, ()), seed=seeds[k], epochs=epochs
                )
        return finished

    def save_fold(self, k, outcome: _FoldOutcome) -> None:
        _save_fold(self.inside(f"fold_{k}"), outcome)
        self.remove_backup(k)

    def remove_backup(self, name) -> None:
        _atomic.remove_tree(self.backup_dir(name))

    def finish(self, result: CVResult) -> None:
        write_summary(result, self.run_dir)

    def save_refit(self, model: keras.Model, info: dict) -> None:
        with _atomic.directory(self.inside(_REFIT)) as tmp:
            model.save(os.path.join(tmp, "model.keras"))
            _atomic.write_json(os.path.join(tmp, "info.json"), info)

    def load_refit(self):
        """`(model, epochs)` of the refit model stored, or `None`."""
        return load_refit(self.run_dir)


def load_refit(run_dir: str):
    """`(model, epochs)` of `run_dir/refit/`, or `None` when absent."""
    path = _inside(run_dir, _REFIT)
    if not os.path.isdir(path):
        return None
    info = _read_json_checked(os.path.join(path, "info.json"), f"delete {path} to refit again")
    return load_model_safely(os.path.join(path, "model.keras")), info.get("epochs")


class _DirectoryLock:
    """An exclusive `flock` on `run_dir/.lock`, holding the owner's pid."""

    def __init__(self, run_dir: str):
        import fcntl

        path = _inside(run_dir, _LOCK)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(self.fd)
            raise RuntimeError(
                f"Run directory {run_dir!r} is in use by another tfcv run (pid {holder}). Wait for it to end, "
                "or use another run_dir."
            ) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        os.close(self.fd)  # closing the descriptor releases the flock


def _inside(run_dir: str, relative: str) -> str:
    path = run_dir
    for part in os.path.normpath(relative).split(os.sep):
        if part in ("", ".", ".."):
            raise ValueError(f"Invalid path {relative!r} inside run directory {run_dir!r}.")
        path = os.path.join(path, part)
        if os.path.islink(path):
            raise ValueError(
                f"{path!r} is a symbolic link. tfcv never writes, reads or deletes through links inside a run "
                "directory; remove the link (or use another run_dir)."
            )
    return path


def _check_same_run(run_dir: str, plan: FoldPlan, config_of) -> bool:
    """Refuses a run directory that holds another run than `plan` and the
    settings `config_of(stored manifest)` (or folds without a manifest);
    returns whether it holds a manifest."""
    manifest_path, plan_path = _inside(run_dir, _MANIFEST), _inside(run_dir, _PLAN)
    if not os.path.exists(manifest_path):
        orphans = _fold_dirs(run_dir)
        if orphans:
            raise ValueError(
                f"Run directory {run_dir!r} holds {', '.join(orphans)} but no {_MANIFEST}, so tfcv cannot "
                "check that they belong to this run and never adopts them. Delete them (or use a new run_dir) "
                "to start over."
            )
        return False
    stored = _read_json_checked(manifest_path, "delete the run directory to start over")
    differences = [
        _describe_difference(key, stored.get(key), value)
        for key, value in config_of(stored).items()
        if _normalize_json(stored.get(key)) != _normalize_json(value)
        # Manifests written before the strategy was recorded resume as they did.
        and not (key in _RECORDED_LATER and key not in stored)
    ]
    if os.path.exists(plan_path) and FoldPlan.load(plan_path) != plan:
        differences.append("the fold plan differs from the one stored")
    if differences:
        raise ValueError(
            f"Run directory {run_dir!r} holds a different run: "
            + "; ".join(differences)
            + ". Refusing to mix results: use a new run_dir, or delete this one to start over."
        )
    return True


def _fold_dirs(run_dir: str) -> list[str]:
    return sorted(name for name in os.listdir(run_dir) if re.fullmatch(r"fold_\d+", name))


def _read_json_checked(path: str, recovery: str):
    try:
        return _atomic.read_json(path)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} cannot be read ({error}); {recovery}.") from error


def _describe_difference(key, stored, received) -> str:
    if key == "data":
        return (
            f"the data differs (stored shape {tuple((stored or {}).get('x_shape', ()))}, "
            f"received shape {tuple(received['x_shape'])}, content digests differ)"
            if stored and stored.get("x_shape") == received["x_shape"]
            else f"the data differs (stored shape {tuple((stored or {}).get('x_shape', ()))}, received {tuple(received['x_shape'])})"
        )
    if key == "model":
        return "the model (architecture or compile settings) differs"
    if key == "strategy":
        return (
            f"strategy differs (stored strategy={stored!r}, received strategy={received!r}; the two draw batches "
            f"differently, so their folds do not mix: pass strategy={stored!r}, or --strategy {stored} to tfcv run)"
        )
    return f"{key} differs (stored {key}={stored!r}, received {key}={received!r})"


def _normalize_json(value):
    return json.loads(json.dumps(value, default=_atomic._json_default))


def _save_fold(path, outcome: _FoldOutcome) -> None:
    with _atomic.directory(path) as tmp:
        outcome.model.save(os.path.join(tmp, "model.keras"))
        _atomic.write_json(os.path.join(tmp, "history.json"), outcome.history)
        _atomic.write_json(os.path.join(tmp, "scores.json"), outcome.scores)
        _atomic.write_json(os.path.join(tmp, "info.json"), outcome.info)
        np.save(os.path.join(tmp, "val_predictions.npy"), outcome.val_predictions)
        if outcome.val_targets is not None:
            np.save(os.path.join(tmp, "val_targets.npy"), outcome.val_targets)


def _load_fold(path) -> _FoldOutcome:
    targets_path = os.path.join(path, "val_targets.npy")
    return _FoldOutcome(
        load_model_safely(os.path.join(path, "model.keras")),
        _atomic.read_json(os.path.join(path, "scores.json")),
        np.load(os.path.join(path, "val_predictions.npy"), allow_pickle=False),
        history=_atomic.read_json(os.path.join(path, "history.json")),
        info=_atomic.read_json(os.path.join(path, "info.json")),
        val_targets=np.load(targets_path, allow_pickle=False) if os.path.exists(targets_path) else None,
    )


_FOLD_FILES = ("model.keras", "scores.json", "history.json", "info.json", "val_predictions.npy")
_TASK_SCORES = {"classification": ("accuracy", "precision", "recall", "f1"), "regression": ("mse", "mae", "r2")}


def _load_checked_fold(run_dir, k, plan, *, scores, seed=None, epochs=None) -> _FoldOutcome:
    """Loads `run_dir/fold_<k>` and checks it belongs there: no link, every
    file present and readable, its fold index and seed, its number of epochs,
    complete scores, and one validation prediction per validation sample."""
    path = fold_dir(run_dir, k)
    recovery = f"delete {path} to retrain fold {k}"

    def refuse(problem):
        raise ValueError(f"Run directory {run_dir!r}: {problem}; {recovery}.")

    if os.path.islink(path) or not os.path.isdir(path):
        refuse(f"{path} is {'a symbolic link' if os.path.islink(path) else 'not a directory'}, not a fold tfcv wrote")
    for name in _FOLD_FILES:
        if os.path.islink(os.path.join(path, name)) or not os.path.isfile(os.path.join(path, name)):
            refuse(f"{os.path.join(path, name)} is missing")
    try:
        outcome = _load_fold(path)
    except (OSError, ValueError) as error:
        refuse(f"fold {k} cannot be read ({error})")
    info, stored = outcome.info, outcome.scores
    if not isinstance(info, dict) or info.get("fold") != k:
        refuse(f"{os.path.join(path, 'info.json')} is for fold {info.get('fold') if isinstance(info, dict) else None!r}, not fold {k}")
    if seed is not None and info.get("seed") != seed:
        refuse(f"{os.path.join(path, 'info.json')} was trained with seed {info.get('seed')!r}, this run's fold {k} uses {seed}")
    if epochs is not None and "epochs" in info and not (isinstance(info["epochs"], int) and 1 <= info["epochs"] <= epochs):
        refuse(f"{os.path.join(path, 'info.json')} records {info.get('epochs')!r} epochs, this run trains {epochs}")
    missing = [name for name in scores if not isinstance(stored, dict) or not isinstance(stored.get(name), (int, float))]
    if missing:
        refuse(f"{os.path.join(path, 'scores.json')} lacks the scores {missing}")
    if plan.uses_indices:
        n_val = len(plan.folds[k][1])
        for name, array in (("val_predictions.npy", outcome.val_predictions), ("val_targets.npy", outcome.val_targets)):
            if array is not None and (array.ndim == 0 or len(array) != n_val):
                refuse(f"{os.path.join(path, name)} holds {0 if array.ndim == 0 else len(array)} rows, "
                       f"fold {k} validates {n_val} samples")
    return outcome


def load_model_safely(path) -> keras.Model:
    """`keras.saving.load_model` with `safe_mode=True`, and an error that
    says which file refused to load and why."""
    path = os.fspath(path)
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, EOFError) as error:
        raise ValueError(f"{path!r} is corrupt or truncated ({error}): it is not a readable .keras archive.") from error
    if damaged is not None:
        raise ValueError(f"{path!r} is corrupt: its member {damaged!r} fails its checksum.")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as error:
        raise ValueError(
            f"Cannot load the model in {os.fspath(path)!r} safely: {error}. tfcv only loads models "
            "whose layers are Keras' own or registered with keras.saving.register_keras_serializable; "
            "Lambda layers and unregistered classes are refused (safe_mode=True)."
        ) from error


def save_result(result: CVResult, run_dir: str | os.PathLike) -> str:
    """`CVResult.save`: writes every fold not already present, the plan, the
    manifest (if absent) and the summary."""
    with _RunStore(run_dir) as store:
        run_dir = store.run_dir
        # The folds present are this run's (the directory may be the one `fit` wrote): another run's
        # would be kept under this result's summary.
        if not _check_same_run(run_dir, result.plan, lambda stored: {
                key: result.info.get(key) for key in stored if key != "tfcv_version"}):
            _atomic.write_json(store.inside(_MANIFEST), result.info)
        if not os.path.exists(store.inside(_PLAN)):
            result.plan.save(store.inside(_PLAN))
        for k in range(result.n_folds):
            path = store.inside(f"fold_{k}")
            if not os.path.isdir(path):
                outcome = _FoldOutcome(
                    result.models[k], {n: v[k] for n, v in result.scores.items()}, result.val_predictions[k],
                    history=result.histories[k], info={**result.fold_info[k], "fold": k},
                    val_targets=None if result.val_targets is None else result.val_targets[k],
                )
                _save_fold(path, outcome)
        write_summary(result, run_dir)
    return run_dir


def write_summary(result: CVResult, run_dir: str) -> None:
    """Writes `result.json` and `oof_predictions.npy`, each atomically."""
    _atomic.write_json(os.path.join(run_dir, _RESULT), {
        "task": result.task,
        "n_folds": result.n_folds,
        "scores": result.scores,
        "mean": {n: result.mean(n) for n in result.scores},
        "std": {n: result.std(n) for n in result.scores},
        "test_scores": result.test_scores,
        "info": result.info,
    })
    buffer = io.BytesIO()
    np.save(buffer, result.oof_predictions)
    _atomic.write_bytes(os.path.join(run_dir, _OOF), buffer.getvalue())


def save_test_set(run_dir: str | os.PathLike, x, y) -> str:
    """Keeps the held-out test rows of a run (`tfcv run --test-size`) in
    `run_dir/test_set.npz`, written atomically under the directory's lock,
    for `tfcv evaluate`."""
    x, y = np.asarray(x), np.asarray(y)
    # Sentences become fixed-width unicode so that reading them back needs no pickle.
    x, y = (a.astype(str) if a.dtype == object else a for a in (x, y))
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    with _RunStore(run_dir) as store:
        path = store.inside(_TEST_SET)
        _atomic.write_bytes(path, buffer.getvalue())
    return path


def plot_path(run_dir: str | os.PathLike, name: str) -> str:
    """`run_dir/plots/<name>`, refused if `plots` is a symbolic link."""
    return _inside(os.path.realpath(os.fspath(run_dir)), os.path.join(_PLOTS, name))


def load_test_set(run_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray] | None:
    """`(x, y)` kept by `save_test_set`, or `None` when the run held none out."""
    run_dir = os.fspath(run_dir)
    if not os.path.exists(os.path.join(run_dir, _PLAN)):
        raise FileNotFoundError(f"{run_dir!r} is not a tfcv run directory: it has no {_PLAN}.")
    path = _inside(os.path.realpath(run_dir), _TEST_SET)
    if not os.path.exists(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            x, y = stored["x"], stored["y"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise ValueError(
            f"{path} cannot be read ({error}); it is not the test set tfcv run --test-size wrote. "
            "Run again with --test-size, or evaluate on --data."
        ) from error
    if len(x) != len(y):
        raise ValueError(f"{path} holds {len(x)} inputs but {len(y)} labels; it is not a test set tfcv wrote.")
    return x, y


def load_result(run_dir: str | os.PathLike) -> CVResult:
    """`CVResult.load`: reads a run directory written by `fit` or `save`."""
    run_dir = os.fspath(run_dir)
    plan_path = os.path.join(run_dir, _PLAN)
    if not os.path.exists(plan_path):
        raise FileNotFoundError(f"{run_dir!r} is not a tfcv run directory: it has no {_PLAN}.")
    plan = FoldPlan.load(plan_path)
    missing = [k for k in range(len(plan)) if not os.path.lexists(fold_dir(run_dir, k))]
    if missing:
        raise ValueError(
            f"Run directory {run_dir!r} is unfinished: folds {missing} of {len(plan)} have not been "
            "trained. Resume it by running the same fit (or `tfcv run`) with this run_dir."
        )
    summary_path = os.path.join(run_dir, _RESULT)
    summary = _read_json_checked(summary_path, "delete it and load again") if os.path.exists(summary_path) else {}
    manifest_path = os.path.join(run_dir, _MANIFEST)
    manifest = _read_json_checked(manifest_path, "the run cannot be checked") if os.path.exists(manifest_path) else {}
    info = summary.get("info") or manifest
    task = summary.get("task") or info.get("task", "classification")
    seeds = info.get("seeds") or [None] * len(plan)
    scores = list(summary.get("scores") or {}) or _TASK_SCORES.get(task, ())
    outcomes = [
        _load_checked_fold(run_dir, k, plan, scores=scores, seed=seeds[k] if k < len(seeds) else None,
                           epochs=info.get("epochs"))
        for k in range(len(plan))
    ]
    result = CVResult._from_outcomes(outcomes, plan, task, n_samples=None, info=info)
    result.test_scores = summary.get("test_scores")
    refit = load_refit(run_dir)
    if refit is not None:
        result.refit_model = refit[0]
    return result


# ------------------------------------------------------- run identity


def model_fingerprint(model: keras.Model) -> str:
    """A digest of a model's architecture and compile settings, independent
    of the auto-generated layer names Keras assigns."""
    def scrub(obj):
        if isinstance(obj, dict):
            return {k: scrub(v) for k, v in sorted(obj.items()) if k not in ("name", "seed")}
        if isinstance(obj, (list, tuple)):
            return [scrub(v) for v in obj]
        return obj

    parts = []
    for layer in _all_layers(model):
        try:
            config = layer.get_config()
        except NotImplementedError:
            config = {}
        parts.append([type(layer).__name__, scrub(config)])
    parts.append([[list(w.shape), str(w.dtype)] for w in model.weights])
    try:
        parts.append(scrub(model.get_compile_config()))
    except Exception:  # noqa: BLE001 - custom compile settings may not serialize
        pass
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def weights_fingerprint(sample_weight) -> str | None:
    """A digest of `fit`'s `sample_weight`, or `None` without one."""
    if sample_weight is None:
        return None
    weights = np.ascontiguousarray(np.asarray(sample_weight, dtype="float64"))
    return hashlib.sha256(weights.tobytes()).hexdigest()


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


# ------------------------------------------------------------ resume


class FoldCheckpoint(keras.callbacks.Callback):
    """Backs up, at the end of every epoch, everything that decides the rest
    of a fold, in one file written all-or-nothing.

    The file holds the value of every state variable (weights, the random
    generators' states of dropout and augmentation layers, BatchNormalization
    statistics, optimizer state), the simple state of the Keras callbacks
    (EarlyStopping's counters and best weights, ModelCheckpoint's best value,
    ReduceLROnPlateau's counters, ... including those that `FoldModelCheckpoint`
    and the other per-fold callbacks run), whether training was stopped, and
    every epoch's logs. The data stream needs no state: a resumed fold skips
    the batches of the epochs done. So a fold killed at any point resumes to
    exactly the scores of an uninterrupted run. Place it after the callbacks
    whose state it saves, so that their state at the end of the epoch is what
    is saved.

    Variables are restored by `restore`, before training; the callbacks'
    state when training begins, after their own `on_train_begin` (Keras'
    EarlyStopping and ReduceLROnPlateau reset themselves there).

    Args:
        backup_dir: `str`. The fold's backup directory.
        variables: The state variables to save and restore.
        callbacks: The Keras callbacks whose state is saved, or a function
            returning them when they exist only once the fold begins.
        model: The model whose `stop_training` flag is saved.
        own_logs: `bool`. Append each epoch's logs itself; `False` when the
            caller appends them (the stacked strategy, per fold).
    """

    _FORMAT = "tfcv.fold_checkpoint"

    def __init__(self, backup_dir: str, variables, callbacks=(), *, model=None, own_logs: bool = True):
        super().__init__()
        self.backup_dir = backup_dir
        self.path = os.path.join(backup_dir, _CHECKPOINT)
        self.variables = list(variables)
        self._state_callbacks = callbacks if callable(callbacks) else (lambda: list(callbacks))
        self.fold_model = model
        self.own_logs = own_logs
        self.logs: list[dict] = []
        self.stopped = False
        # (type names, {attribute: value} per callback) read by `restore`,
        # set on the callbacks in `on_train_begin`.
        self._restored_states = None

    def restore(self, *, max_epochs: int) -> int:
        """Restores the last backup; returns the number of epochs it covers
        (0 when there is none, or when it cannot be read: then a one-line
        warning says so and the fold starts over)."""
        if not os.path.lexists(self.path):
            return 0
        try:
            epoch = self._restore(max_epochs)
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as error:
            warnings.warn(
                f"The backup {self.path} cannot be read ({error}); this fold starts over from its first epoch.",
                UserWarning,
                stacklevel=2,
            )
            _atomic.remove_tree(self.backup_dir)
            self.logs, self.stopped, self._restored_states = [], False, None
            return 0
        return epoch

    def _restore(self, max_epochs: int) -> int:
        with np.load(self.path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode("utf-8"))
        if meta.get("format") != self._FORMAT:
            raise ValueError(f"not a tfcv checkpoint (format {meta.get('format')!r})")
        epoch, logs = meta["epoch"], meta["logs"]
        if not (isinstance(epoch, int) and 1 <= epoch <= max_epochs) or len(logs) != epoch:
            raise ValueError(f"it records epoch {epoch!r} with {len(logs)} epochs of logs, of {max_epochs}")
        values = [arrays[f"variable.{i}"] for i in range(meta["variables"])]
        if len(values) != len(self.variables) or any(
            tuple(v.shape) != tuple(value.shape) for v, value in zip(self.variables, values)
        ):
            raise ValueError("its variables do not match this fold's model")
        states = []
        for i, state in enumerate(meta["callbacks"]):
            restored = {}
            for key, kind in state.items():
                if kind == "json":
                    restored[key] = meta["callback_values"][str(i)][key]
                elif kind == "array":
                    restored[key] = arrays[f"callback.{i}.{key}"]
                elif kind == "scalar":
                    restored[key] = arrays[f"callback.{i}.{key}"].item()
                else:
                    restored[key] = [arrays[f"callback.{i}.{key}.{j}"] for j in range(int(kind))]
            states.append(restored)
        for variable, value in zip(self.variables, values):
            variable.assign(value)
        self._restored_states = (meta.get("callback_types"), states)
        self.logs, self.stopped = list(logs), bool(meta["stopped"])
        if self.fold_model is not None:
            self.fold_model.stop_training = self.stopped
        return epoch

    def on_train_begin(self, logs=None):
        if self._restored_states is None:
            return
        types, states = self._restored_states
        self._restored_states = None
        callbacks = self._state_callbacks()
        if types != [type(cb).__name__ for cb in callbacks]:
            warnings.warn(
                f"The backup {self.path} holds the state of the callbacks {types}, this fold runs "
                f"{[type(cb).__name__ for cb in callbacks]}; they continue from a fresh state.",
                UserWarning,
                stacklevel=2,
            )
            return
        for cb, state in zip(callbacks, states):
            for key, value in state.items():
                setattr(cb, key, value)

    def append(self, entry: dict) -> None:
        self.logs.append(entry)

    def on_epoch_end(self, epoch, logs=None):
        if self.own_logs:
            self.append({k: float(v) for k, v in (logs or {}).items()})
        self.write(epoch + 1)

    def write(self, epoch: int) -> None:
        arrays = {f"variable.{i}": np.asarray(v) for i, v in enumerate(self.variables)}
        callbacks = self._state_callbacks()
        states, values = [], {}
        for i, cb in enumerate(callbacks):
            state, values[str(i)] = {}, {}
            for key, value in vars(cb).items():
                if key in ("model", "_model"):
                    continue
                if value is None or isinstance(value, str):
                    state[key], values[str(i)][key] = "json", value
                elif isinstance(value, (bool, int, float, np.number, np.bool_)):
                    state[key], arrays[f"callback.{i}.{key}"] = "scalar", np.asarray(value)
                elif isinstance(value, np.ndarray) and value.dtype != object:
                    state[key], arrays[f"callback.{i}.{key}"] = "array", value
                elif isinstance(value, list) and value and all(
                        isinstance(v, np.ndarray) and v.dtype != object for v in value):
                    state[key] = str(len(value))
                    arrays.update({f"callback.{i}.{key}.{j}": v for j, v in enumerate(value)})
            states.append(state)
        stopped = bool(getattr(self.fold_model, "stop_training", False)) if self.fold_model is not None else False
        meta = {"format": self._FORMAT, "epoch": epoch, "variables": len(self.variables), "logs": self.logs,
                "callbacks": states, "callback_values": values,
                "callback_types": [type(cb).__name__ for cb in callbacks], "stopped": stopped}
        arrays["meta"] = np.frombuffer(json.dumps(meta, default=_atomic._json_default).encode("utf-8"), dtype=np.uint8)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        _atomic.write_bytes(self.path, buffer.getvalue())


def _merge_history(previous: list[dict], history: dict) -> dict:
    merged: dict[str, list[float]] = {}
    for logs in previous:
        for name, value in logs.items():
            merged.setdefault(name, []).append(float(value))
    for name, values in history.items():
        merged.setdefault(name, []).extend(float(v) for v in values)
    return merged
