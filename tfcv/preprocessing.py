"""Per-fold adaptation: every data-fitted layer sees only the fold's training split.

A layer that learns from data before training (the mean and variance of a
`Normalization`, the bins of a `Discretization`, the vocabulary of a
`StringLookup`, `IntegerLookup` or `TextVectorization`) leaks the validation
split into the model if it is adapted on all the data. `adapt_preprocessing`
adapts each such layer of a fold's freshly built model on that fold's
training split only, wherever it sits in the model (nested models included),
on what actually reaches it (so a `Rescaling` in front of it counts).

This is a correctness rule, not an optimisation: a data-fitted layer tfcv
cannot adapt is refused with an error naming it.
"""

from __future__ import annotations

import inspect
from typing import Any

import keras
import numpy as np

from tfcv import _compat

__all__ = ["ADAPTED_LAYERS", "adapt_preprocessing", "holds_adapted_state"]

# Layer class -> the constructor argument that, when given, fixes what
# `adapt` would otherwise learn (read back through `get_config`).
_FIXED_BY = {
    keras.layers.Normalization: "mean",
    keras.layers.Discretization: "bin_boundaries",
    keras.layers.StringLookup: "vocabulary",
    keras.layers.IntegerLookup: "vocabulary",
    keras.layers.TextVectorization: "vocabulary",
}
ADAPTED_LAYERS = tuple(_FIXED_BY)


def needs_adapt(layer: keras.layers.Layer) -> bool:
    """Whether `layer` learns from data in `adapt` (its statistics or
    vocabulary were not fixed when it was constructed)."""
    for cls, argument in _FIXED_BY.items():
        if isinstance(layer, cls):
            return layer.get_config().get(argument) is None
    return False


def holds_adapted_state(model: keras.layers.Layer) -> bool:
    """Whether `model` holds a data-fitted layer, adapted or not. Such layers
    keep their statistics or lookup tables outside the model's variables,
    so a traced function of one fold's model cannot serve another fold."""
    return any(isinstance(layer, ADAPTED_LAYERS) for layer in _compat.flatten_layers(model))


def adapt_preprocessing(model: keras.Model, x: Any, *, batch_size: int = 256) -> list[str]:
    """Adapts the data-fitted layers of `model` on `x` only.

    Every `keras.layers.Normalization` without a fixed `mean`, every
    `Discretization` without fixed `bin_boundaries`, and every
    `StringLookup`, `IntegerLookup` and `TextVectorization` without a fixed
    `vocabulary` is adapted on what reaches it when `x` is fed to the model,
    in graph order, also inside nested functional models.

    Args:
        model: A functional or Sequential `keras.Model`.
        x: The fold's training inputs: an array, or a `tf.data.Dataset` of
            input batches (streamed folds); or a function of no arguments
            that returns them, called only if a layer needs adapting (so
            that a model without such layers never copies the split).
        batch_size: `int`. Batch size for computing what reaches a layer
            and for `adapt`. Defaults to `256`.

    Returns:
        The names of the adapted layers.

    Raises:
        ValueError: If a data-fitted layer sits where tfcv cannot feed it
            (inside a subclassed model or a custom layer), or the model holds
            a layer with an `adapt` method tfcv does not know.

    Example:

    >>> model = build_fn()
    >>> tfcv.preprocessing.adapt_preprocessing(model, x[train_idx])
    ['normalization']
    """
    _refuse_unknown_adaptable(model)
    adapted: list[str] = []
    if not _contains_adaptable(model):
        return adapted
    if callable(x) and not hasattr(x, "element_spec"):
        x = x()
    _adapt_recursive(model, x if hasattr(x, "element_spec") else np.asarray(x), batch_size, adapted)
    return adapted


def _contains_adaptable(layer) -> bool:
    return any(needs_adapt(inner) for inner in _compat.flatten_layers(layer))


def _adapt_recursive(model, data, batch_size, adapted):
    layers = getattr(model, "layers", None)
    if layers is None or not getattr(model, "inputs", None):
        names = [inner.name for inner in _compat.flatten_layers(model) if needs_adapt(inner)]
        raise ValueError(
            f"Cannot adapt {names} inside {model.name!r} ({type(model).__name__}) on each fold's training split: "
            "tfcv adapts data-fitted layers of functional and Sequential models, where it can compute what "
            "reaches them. Build this part as a functional model, or pass the statistics or vocabulary to the "
            "layer's constructor."
        )
    for layer in layers:
        if not _contains_adaptable(layer):
            continue
        feed = data
        reaching = _compat.call_input(layer)
        if reaching is not model.inputs[0]:
            probe = keras.Model(model.inputs, reaching)
            feed = np.asarray(probe.predict(array_batches(data, batch_size), verbose=0))
        if needs_adapt(layer):
            if "batch_size" in inspect.signature(layer.adapt).parameters:
                layer.adapt(feed, batch_size=batch_size)
            else:
                layer.adapt(_batched(feed, batch_size))
            adapted.append(layer.name)
        else:
            _adapt_recursive(layer, feed, batch_size, adapted)


def _batched(data, batch_size):
    """Arrays of strings as a batched `tf.data.Dataset` (the lookups'
    `adapt` does not take NumPy string arrays); anything else as it is."""
    if isinstance(data, np.ndarray) and data.dtype.kind in "USO":
        return array_batches(data, batch_size)
    return data


def array_batches(data, batch_size: int):
    """A NumPy array as a batched `tf.data.Dataset`, for Keras' `predict`;
    anything else as it is.

    Keras' `predict` does not take NumPy string arrays, and feeds other
    arrays through a parallel `map` that tf.data rewrites into a sequential
    one under op determinism (tfcv's default), with TensorFlow logging an
    E-level "NodeDef mentions attribute use_unbounded_threadpool" line to
    stderr each time.
    """
    if not isinstance(data, np.ndarray):
        return data
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(data.astype(str) if data.dtype.kind == "U" else data).batch(batch_size)


def _refuse_unknown_adaptable(model) -> None:
    for layer in _compat.flatten_layers(model, include_self=False):
        if isinstance(layer, ADAPTED_LAYERS) or isinstance(layer, keras.Model):
            continue
        if callable(getattr(layer, "adapt", None)):
            raise ValueError(
                f"Layer {layer.name!r} ({type(layer).__name__}) learns from data through `adapt`, which tfcv "
                f"cannot run on each fold's training split: it adapts {[c.__name__ for c in ADAPTED_LAYERS]}. "
                "Fix its state in the constructor, or use one of those layers."
            )
