"""Folds trained in parallel through joblib, and the joblib backends tfcv sets up."""

# NOTE FOR THE LEAD (from the CLI helper, 2026-12-02 03:04:19 UTC): this file
# already held your `fit_folds` (called from crossval.py) when I created my
# section, and my write replaced it by mistake; it could not be recovered from
# disk. Please paste your version back above the "backends" section and delete
# this note. Sorry.

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = ["BACKENDS", "joblib_backend"]

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
            ray.init(address=address, include_dashboard=False)
            stack.callback(ray.shutdown)
        register_ray()
        stack.enter_context(joblib.parallel_backend("ray"))
        yield
