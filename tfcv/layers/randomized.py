"""`randomized_inference`: randomized predictions from any Keras model.

Test-time augmentation and Monte-Carlo dropout both need a model that stays
in inference mode (BatchNormalization uses its moving statistics and updates
nothing) while its random layers keep randomizing. Keras has a single
`training` flag for both, so this module adds a second, narrower switch.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator

import keras

from tfcv import _compat

__all__ = ["randomized_inference"]

# Roots of the dropout family. Subclasses (SpatialDropout1D/2D/3D, a user's
# `class MyDropout(keras.layers.Dropout)`) are found when the context opens.
_DROPOUT_ROOTS = (keras.layers.Dropout, keras.layers.GaussianDropout, keras.layers.AlphaDropout)
# The same roots, for code that asks whether a model holds a dropout layer
# (isinstance covers the subclasses), such as tfcv.export.
DROPOUT_LAYERS: tuple[type, ...] = _DROPOUT_ROOTS

_local = threading.local()
_lock = threading.Lock()
_active_contexts = 0
_patched: dict[type, object] = {}


def augmentation_randomized() -> bool:
    """True while a `randomized_inference(augmentation=True)` context is
    active in the calling thread."""
    return getattr(_local, "flags", (False, False))[0]


def dropout_randomized() -> bool:
    """True while a `randomized_inference(dropout=True)` context is active in
    the calling thread."""
    return getattr(_local, "flags", (False, False))[1]


@contextlib.contextmanager
def randomized_inference(augmentation: bool = True, dropout: bool = True) -> Iterator[None]:
    """Makes models called in inference mode randomize their random layers.

    While the context is active in a thread, a model called (or traced, for
    example inside a `tf.function` or `keras.export.ExportArchive` endpoint)
    with `training=False` or no `training` argument:

    - randomizes every `tfcv.layers.Augmentation` layer as in training
      (if `augmentation=True`);
    - drops units in every `keras.layers.Dropout` (and its subclasses such as
      `SpatialDropout2D`), `GaussianDropout` and `AlphaDropout` layer as in
      training (if `dropout=True`);

    and leaves every other layer in inference mode: BatchNormalization
    normalizes with its moving statistics and updates nothing, and
    `keras.layers.GaussianNoise` and Keras' own `Random*` layers used outside
    `Augmentation` are untouched.

    The switch is read when a layer's `call` runs in Python: in eager mode
    on every call, inside a `tf.function` only while it is traced. A
    function traced inside the context stays randomized after the context
    exits (which is what an exported randomized signature needs), and one
    traced outside stays deterministic inside it. In particular Keras caches
    the function behind `model.predict`; call `model(x, training=False)`
    directly, or trace a new function, inside the context.

    Limits: dropout layers are switched by temporarily wrapping the `call`
    method of the dropout classes defined when the context opens, so a
    dropout class defined inside the context, or a custom layer that
    implements dropout itself (without subclassing a Keras dropout layer),
    is not randomized; nor is a direct `layer.call(x, False)` with
    `training` passed by position (`Layer.__call__` passes it by keyword). The
    flag is per thread: a model traced in another thread at the same time
    is not affected. Nested contexts restore the outer setting on exit.

    Args:
        augmentation: `bool`. Randomize `tfcv.layers.Augmentation` layers.
            Defaults to `True`.
        dropout: `bool`. Randomize dropout-family layers (Monte-Carlo
            dropout). Defaults to `True`.

    Example:

    >>> with tfcv.layers.randomized_inference():
    ...     samples = [model(x, training=False) for _ in range(16)]
    >>> # Monte-Carlo dropout only, no test-time augmentation:
    >>> with tfcv.layers.randomized_inference(augmentation=False):
    ...     serve = tf.function(lambda x: model(x, training=False))
    ...     serve.get_concrete_function(tf.TensorSpec([None, 8, 8, 1]))
    """
    for name, value in (("augmentation", augmentation), ("dropout", dropout)):
        if not isinstance(value, bool):
            raise TypeError(f"Invalid value for argument `{name}`. Received: {name}={value!r}. Expected a bool.")
    previous = getattr(_local, "flags", (False, False))
    _enter()
    _local.flags = (augmentation, dropout)
    try:
        yield
    finally:
        _local.flags = previous
        _exit()


def _enter() -> None:
    global _active_contexts
    with _lock:
        if _active_contexts == 0:
            for cls in _dropout_classes():
                _patched[cls] = _compat.replace_call(cls, _randomizing_call(cls.call))
        _active_contexts += 1


def _exit() -> None:
    global _active_contexts
    with _lock:
        _active_contexts -= 1
        # Restore only when no thread has a context open: another thread may
        # be tracing a model right now.
        if _active_contexts == 0:
            for cls, original in _patched.items():
                _compat.restore_call(cls, original)
            _patched.clear()


def _dropout_classes() -> list[type]:
    found: list[type] = []
    stack = list(_DROPOUT_ROOTS)
    while stack:
        cls = stack.pop()
        if cls in found:
            continue
        found.append(cls)
        stack.extend(cls.__subclasses__())
    return [cls for cls in found if "call" in vars(cls)]


def _randomizing_call(original):
    @functools.wraps(original)
    def call(self, *args, **kwargs):
        if dropout_randomized() and len(args) <= 1:
            kwargs["training"] = True
        return original(self, *args, **kwargs)

    return call
