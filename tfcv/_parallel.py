"""The joblib strategy: folds trained at once in worker processes.

As in scikit-learn's `cross_validate(n_jobs=...)`, each fold goes to the
same per-fold function (`tfcv._fold.fit_and_score`) in a joblib worker of
the active backend (local processes by default; Ray, Dask or Spark inside
`joblib.parallel_backend(...)`). A worker returns plain data (weights,
optimizer state, scores, predictions, history), never a pickled model; the
parent rebuilds each fold's model and publishes it. Local workers start
TensorFlow through `tfcv._tf_startup`, so that its startup log lines stay
off stderr as they do in the `tfcv` command; so do the workers of a Ray
session that `joblib_backend` starts. `joblib_backend` sets up the backends
tfcv's command line offers (local processes, Ray).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from tfcv._tf_startup import start_tensorflow

if TYPE_CHECKING:
    from tfcv._fold import FoldSettings

__all__ = ["BACKENDS", "fit_folds", "joblib_backend"]


def fit_folds(settings: FoldSettings, todo, seeds, source, *, fold_cbs, plain_cbs, store, n_jobs) -> dict:
    """Trains the folds in `todo` through joblib; returns their outcomes,
    each published (run directory, `on_fold_end`) as it arrives."""
    import cloudpickle
    import joblib

    from tfcv._fold import build_fold_model, build_optimizer, publish_fold
    from tfcv.callbacks import FoldProgress
    from tfcv.result import _FoldOutcome

    try:
        cloudpickle.dumps(settings.build_fn)
    except Exception as error:
        raise TypeError(
            f"n_jobs={n_jobs} runs folds in other processes, but `build_fn` ({settings.build_fn!r}) cannot be "
            f"pickled: {error}. Use a module-level function or a tfcv.ModelBuilder(spec) as build_fn."
        ) from error
    # Progress displays stay in this process: a worker's output would interleave.
    worker_cbs = [cb for cb in fold_cbs if not isinstance(cb, FoldProgress)] + plain_cbs
    n_workers = min(len(todo), joblib.effective_n_jobs(n_jobs))
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    tasks = (
        joblib.delayed(_fit_fold_in_worker)(
            settings, k, seeds[k], source, worker_cbs, None if store is None else store.backup_dir(k), threads,
        )
        for k in todo
    )
    # Save each fold as soon as it ends where the backend can stream results
    # (local processes); Ray's backend returns them all at the end.
    backend, _ = joblib.parallel.get_active_backend()
    return_as = "generator_unordered" if getattr(backend, "supports_return_generator", False) else "list"
    trained = {}
    for k, payload in joblib.Parallel(n_jobs=n_jobs, return_as=return_as, **_worker_start(backend))(tasks):
        model = build_fold_model(settings.build_fn, seeds[k])
        model.set_weights(payload.pop("weights"))
        # The optimizer's state too, so that the saved fold model is whole.
        build_optimizer(model)
        for variable, value in zip(model.optimizer.variables, payload.pop("optimizer")):
            variable.assign(value)
        outcome = _FoldOutcome(model, **payload)
        publish_fold(k, outcome, store, fold_cbs)
        trained[k] = outcome
    return trained


def _worker_start(backend) -> dict:
    """The `joblib.Parallel` arguments that make a local process start
    TensorFlow quietly (`tfcv._tf_startup`) before its first task: unpickling
    a task imports Keras, so TensorFlow's startup log lines would come out
    unfiltered in every worker. A backend set up with its own initializer
    keeps it; other backends' workers log where their cluster sends it."""
    import joblib

    loky = joblib.parallel.BACKENDS.get("loky")
    if loky is None or not isinstance(backend, loky) or "initializer" in backend.backend_kwargs:
        return {}
    return {"initializer": start_tensorflow}


def _fit_fold_in_worker(settings: FoldSettings, k, seed, source, callbacks, backup_dir, threads):
    """One fold in a joblib worker; returns plain data, not a pickled model."""
    import tensorflow as tf

    from tfcv import _compat
    from tfcv._fold import fit_and_score
    from tfcv.callbacks import FoldCallback

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # this worker already ran TensorFlow; its thread pools are fixed
    if settings.deterministic:
        _compat.enable_op_determinism()
    for cb in callbacks:
        if isinstance(cb, FoldCallback):
            cb.fold = k
    outcome = fit_and_score(settings, k, seed, source, callbacks=callbacks, backup_dir=backup_dir)
    return k, {
        "weights": outcome.model.get_weights(),
        "optimizer": [v.numpy() for v in outcome.model.optimizer.variables],
        "scores": outcome.scores,
        "val_predictions": outcome.val_predictions,
        "history": outcome.history,
        "info": outcome.info,
        "val_targets": outcome.val_targets,
    }


# ---------------------------------------------------------------- backends

#: The joblib backends `joblib_backend` sets up: local processes, or a Ray cluster.
BACKENDS = ("loky", "ray")


def joblib_backend(
    backend: str | None = None, *, address: str | None = None
) -> contextlib.AbstractContextManager:
    """A context in which the `n_jobs` folds of `fit` run on a joblib backend.

    With `"ray"` the context joins the cluster at `address` (or starts a
    local one), registers Ray's joblib backend, and shuts Ray down on exit; a
    Ray session the caller already started is used as it is and left
    running. The arguments are checked when it is called, before any work.

    Args:
        backend: `str`. `"loky"` (local processes) or `"ray"`. Defaults to
            `"loky"`.
        address: `str`. With `backend="ray"`, the Ray cluster to join, as
            `ray.init(address=...)` takes it. Defaults to a new local one.

    Returns:
        A context manager.

    Raises:
        ValueError: For an unknown backend, or an address without Ray.
        ImportError: For `"ray"` when Ray is not installed.

    Example:

    >>> with joblib_backend("ray", address="auto"):
    ...     result = cv.fit(x, y, n_jobs=-1)
    """
    import joblib

    if backend is None:
        backend = "loky"
    if backend not in BACKENDS:
        raise ValueError(
            f"Invalid value for argument `backend`. Received: backend={backend!r}. "
            f"Expected one of {list(BACKENDS)}."
        )
    if address is not None and backend != "ray":
        raise ValueError(
            f"Invalid value for argument `address`. Received: address={address!r} with backend={backend!r}. "
            "An address is the Ray cluster to join: it needs backend='ray'."
        )
    if backend == "loky":
        return joblib.parallel_backend("loky")
    try:
        import ray
        from ray.util.joblib import register_ray
    except ImportError as error:
        raise ImportError("backend='ray' needs Ray: pip install 'tfcv[ray]'") from error
    return _ray_backend(ray, register_ray, address)


@contextlib.contextmanager
def _ray_backend(ray, register_ray, address: str | None) -> Iterator[None]:
    import joblib

    with contextlib.ExitStack() as stack:
        if not ray.is_initialized():
            # Ray runs the hook in every worker it starts for this job, before
            # the first task: TensorFlow starts as quietly as in loky's workers.
            hook = {"worker_process_setup_hook": f"{start_tensorflow.__module__}.{start_tensorflow.__name__}"}
            ray.init(address=address, include_dashboard=False, runtime_env=hook)
            stack.callback(ray.shutdown)
        register_ray()
        stack.enter_context(joblib.parallel_backend("ray"))
        yield
