"""The run directory: the one place that knows its layout.

    run_dir/manifest.json          what the run is (data, model, settings)
    run_dir/plan.json              the FoldPlan
    run_dir/fold_<k>/              a finished fold, published atomically
    run_dir/.backup/fold_<k>/      the running fold's per-epoch backup
    run_dir/result.json            per-fold scores, mean, std, test scores
    run_dir/oof_predictions.npy    out-of-fold predictions, input order

`_RunStore` writes a run as `CrossValidator.fit` goes (and refuses a
directory that holds a different run); `save_result` and `load_result` are
`CVResult.save` and `CVResult.load`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil

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


def fold_dir(run_dir: str, k: int) -> str:
    return os.path.join(run_dir, f"fold_{k}")


class _RunStore:
    """Writes a run directory as `CrossValidator.fit` goes (see the module
    docstring for the layout)."""

    def __init__(self, run_dir):
        self.run_dir = os.path.abspath(os.fspath(run_dir))

    def backup_dir(self, k) -> str:
        return os.path.join(self.run_dir, _BACKUP, f"fold_{k}")

    def prepare(self, config: dict, plan: FoldPlan) -> None:
        os.makedirs(self.run_dir, exist_ok=True)
        _atomic.remove_leftovers(self.run_dir)
        manifest_path = os.path.join(self.run_dir, _MANIFEST)
        plan_path = os.path.join(self.run_dir, _PLAN)
        if os.path.exists(manifest_path):
            stored = _atomic.read_json(manifest_path)
            differences = [
                _describe_difference(key, stored.get(key), value)
                for key, value in config.items()
                if _normalize_json(stored.get(key)) != _normalize_json(value)
            ]
            if os.path.exists(plan_path) and FoldPlan.load(plan_path) != plan:
                differences.append("the fold plan differs from the one stored")
            if differences:
                raise ValueError(
                    f"Run directory {self.run_dir!r} holds a different run: "
                    + "; ".join(differences)
                    + ". Refusing to mix results: use a new run_dir, or delete this one to start over."
                )
        else:
            from tfcv import __version__

            _atomic.write_json(manifest_path, {**config, "tfcv_version": __version__})
        if not os.path.exists(plan_path):
            plan.save(plan_path)

    def load_finished(self, n_folds) -> dict[int, _FoldOutcome]:
        finished = {}
        for k in range(n_folds):
            path = fold_dir(self.run_dir, k)
            if os.path.isdir(path):
                finished[k] = _load_fold(path)
        return finished

    def save_fold(self, k, outcome: _FoldOutcome) -> None:
        _save_fold(fold_dir(self.run_dir, k), outcome)
        shutil.rmtree(self.backup_dir(k), ignore_errors=True)

    def remove_backup(self, name) -> None:
        shutil.rmtree(self.backup_dir(name), ignore_errors=True)

    def finish(self, result: CVResult) -> None:
        write_summary(result, self.run_dir)


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
    return f"{key} differs (stored {key}={stored!r}, received {key}={received!r})"


def _normalize_json(value):
    return json.loads(json.dumps(value, default=_atomic._json_default))


def _save_fold(path, outcome: _FoldOutcome, *, overwrite=False) -> None:
    with _atomic.directory(path, overwrite=overwrite) as tmp:
        outcome.model.save(os.path.join(tmp, "model.keras"))
        _atomic.write_json(os.path.join(tmp, "history.json"), outcome.history)
        _atomic.write_json(os.path.join(tmp, "scores.json"), outcome.scores)
        _atomic.write_json(os.path.join(tmp, "info.json"), outcome.info)
        np.save(os.path.join(tmp, "val_predictions.npy"), outcome.val_predictions)
        if outcome.val_targets is not None:
            np.save(os.path.join(tmp, "val_targets.npy"), outcome.val_targets)


def _load_fold(path) -> _FoldOutcome:
    model = load_model_safely(os.path.join(path, "model.keras"))
    targets_path = os.path.join(path, "val_targets.npy")
    return _FoldOutcome(
        model,
        _atomic.read_json(os.path.join(path, "scores.json")),
        np.load(os.path.join(path, "val_predictions.npy"), allow_pickle=False),
        history=_atomic.read_json(os.path.join(path, "history.json")),
        info=_atomic.read_json(os.path.join(path, "info.json")),
        val_targets=np.load(targets_path, allow_pickle=False) if os.path.exists(targets_path) else None,
    )


def load_model_safely(path) -> keras.Model:
    """`keras.saving.load_model` with `safe_mode=True`, and an error that
    says which file refused to load and why."""
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
    run_dir = os.path.abspath(os.fspath(run_dir))
    os.makedirs(run_dir, exist_ok=True)
    plan_path = os.path.join(run_dir, _PLAN)
    if not os.path.exists(plan_path) or FoldPlan.load(plan_path) != result.plan:
        result.plan.save(plan_path)
    if not os.path.exists(os.path.join(run_dir, _MANIFEST)):
        _atomic.write_json(os.path.join(run_dir, _MANIFEST), result.info)
    for k in range(result.n_folds):
        path = fold_dir(run_dir, k)
        if not os.path.isdir(path):
            outcome = _FoldOutcome(
                result.models[k], {n: v[k] for n, v in result.scores.items()}, result.val_predictions[k],
                history=result.histories[k], info=result.fold_info[k],
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


def load_result(run_dir: str | os.PathLike) -> CVResult:
    """`CVResult.load`: reads a run directory written by `fit` or `save`."""
    run_dir = os.fspath(run_dir)
    plan_path = os.path.join(run_dir, _PLAN)
    if not os.path.exists(plan_path):
        raise FileNotFoundError(f"{run_dir!r} is not a tfcv run directory: it has no {_PLAN}.")
    plan = FoldPlan.load(plan_path)
    missing = [k for k in range(len(plan)) if not os.path.isdir(fold_dir(run_dir, k))]
    if missing:
        raise ValueError(
            f"Run directory {run_dir!r} is unfinished: folds {missing} of {len(plan)} have not been "
            "trained. Resume it by running the same fit (or `tfcv run`) with this run_dir."
        )
    outcomes = [_load_fold(fold_dir(run_dir, k)) for k in range(len(plan))]
    summary_path = os.path.join(run_dir, _RESULT)
    summary = _atomic.read_json(summary_path) if os.path.exists(summary_path) else {}
    manifest_path = os.path.join(run_dir, _MANIFEST)
    info = summary.get("info") or (_atomic.read_json(manifest_path) if os.path.exists(manifest_path) else {})
    task = summary.get("task") or info.get("task", "classification")
    result = CVResult._from_outcomes(outcomes, plan, task, n_samples=None, info=info)
    result.test_scores = summary.get("test_scores")
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


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


# ------------------------------------------------------------ resume


class _EpochLog(keras.callbacks.Callback):
    """Appends each epoch's logs to a JSON file, so a resumed fold keeps its
    full history (Keras' History only sees the epochs after the resume)."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.logs: list[dict] = []

    def read(self, n_epochs: int) -> list[dict]:
        if n_epochs == 0 or not os.path.exists(self.path):
            return []
        return _atomic.read_json(self.path)[:n_epochs]

    def on_epoch_end(self, epoch, logs=None):
        self.append({k: float(v) for k, v in (logs or {}).items()})

    def append(self, entry: dict) -> None:
        self.logs.append(entry)
        _atomic.write_json(self.path, self.logs)


def _backed_up_epoch(backup_dir) -> int:
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    try:
        return int(_atomic.read_json(path)["epoch"])
    except (ValueError, KeyError, json.JSONDecodeError):
        return 0


def _merge_history(previous: list[dict], history: dict) -> dict:
    merged: dict[str, list[float]] = {}
    for logs in previous:
        for name, value in logs.items():
            merged.setdefault(name, []).append(float(value))
    for name, values in history.items():
        merged.setdefault(name, []).extend(float(v) for v in values)
    return merged
