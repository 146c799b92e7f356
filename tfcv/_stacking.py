"""Whether the folds can be stacked, and what stacking them costs in memory:
what `CrossValidator(strategy="auto")` decides by (`tfcv._stacked` trains
them)."""

from __future__ import annotations

import os

import keras
import numpy as np

from tfcv import _compat


def stacking_problem(model: keras.Model) -> str | None:
    """Why `model` cannot be trained as one copy among others in a stacked
    graph, or `None` when it can."""
    if type(model).fit is not keras.Model.fit:
        return f"{type(model).__name__} overrides fit(), which a stacked graph never calls"
    for layer in _compat.flatten_layers(model, include_self=False):
        if getattr(layer, "stateful", False):
            return (
                f"layer {layer.name!r} ({type(layer).__name__}) is stateful: its state carries from one "
                "batch to the next, which interleaved folds cannot keep apart"
            )
    return None


def memory_estimate(model: keras.Model, n_folds: int, batch_size: int) -> int:
    """Bytes that `n_folds` copies of `model` need side by side while they
    train: per copy its variables four times over (weights, gradients and
    two optimizer slots, as Adam keeps) and, per training batch, every
    layer's output three times over (forward, backward, scratch). An
    estimate to choose a strategy by, not a measurement."""
    weights = sum(int(np.prod(v.shape)) * _itemsize(v.dtype) for v in model.variables)
    activations = 0
    for layer in model.layers:
        try:
            outputs = layer.output
        except (AttributeError, ValueError):  # a layer called more than once, or never
            continue
        for output in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
            shape = getattr(output, "shape", None)
            if shape is not None and all(d is not None for d in shape[1:]):
                activations += int(np.prod(shape[1:])) * _itemsize(output.dtype)
    return int(n_folds * (4 * weights + 3 * activations * batch_size))


def _itemsize(dtype) -> int:
    """Bytes per element of `dtype`; a string element counts as TensorFlow's
    string header (32 bytes), its text aside."""
    try:
        return np.dtype(dtype).itemsize
    except TypeError:
        return 32


def available_memory() -> int | None:
    """Bytes of memory available to this process (Linux' MemAvailable, or
    the free physical pages), or `None` when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
