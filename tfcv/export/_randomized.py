"""The `predict_randomized` signature: its configuration and its graph pieces."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

import keras
import tensorflow as tf

from tfcv import _checks, _compat
from tfcv.layers import Augmentation
from tfcv.layers.randomized import DROPOUT_LAYERS

__all__ = ["Randomized"]


@dataclasses.dataclass(frozen=True)
class Randomized:
    """Configures the `predict_randomized` signature.

    The signature tiles the batch `samples` times and runs the model once
    (per fold) on the tiled batch with `training=False` inside
    `tfcv.layers.randomized_inference`: augmentation layers randomize and
    dropout layers drop, while BatchNormalization and every other layer stay
    in inference mode and no moving statistic is updated. With a `CVResult`
    the samples are spread as evenly as possible over the fold models and
    every fold gets the same weight in the statistics.

    Args:
        samples: `int`. Randomized forward passes per input. Defaults to `16`.
        augmentation: `bool`. Randomize `tfcv.layers.Augmentation` layers.
            Defaults to `True`.
        mc_dropout: `bool`. Keep dropout layers active (Monte Carlo dropout).
            Defaults to `True`.
        seed: `int` or `None`. If set, the random generators of the exported
            graph start from states derived from it, so a freshly loaded
            bundle replays the same sequence of randomized outputs.
            Defaults to `None` (the states the model has).

    Measured on the digits (`bench/uncertainty.py`, README "Uncertainty"):
    uncalibrated, the randomized mean is worse calibrated than the fold
    ensemble on clean data and better under strong shift; calibrated
    (`export_saved_model(..., calibration="temperature")`) it has the
    lowest clean NLL. Both sources stay on because each wins somewhere;
    with a `tfcv.layers.Augmentation` layer and clean traffic,
    `mc_dropout=False` does as well, and more `samples` help.

    Example:

    >>> tfcv.export.export_saved_model(result, "models/digits",
    ...     randomized=tfcv.export.Randomized(32, mc_dropout=False))
    """

    samples: int = 16
    _: dataclasses.KW_ONLY
    augmentation: bool = True
    mc_dropout: bool = True
    seed: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "samples", _checks.positive_int("samples", self.samples))
        for name in ("augmentation", "mc_dropout"):
            _checks.check_bool(name, getattr(self, name))
        _checks.non_negative_int("seed", self.seed, optional=True)

    def to_dict(self) -> dict:
        return {"samples": self.samples, "augmentation": bool(self.augmentation),
                "mc_dropout": bool(self.mc_dropout), "seed": self.seed}

    @classmethod
    def from_dict(cls, config: Mapping | Randomized) -> Randomized:
        if isinstance(config, Randomized):
            return config
        return cls(**dict(config))


def has_random_layers(layer: Any, randomized: Randomized) -> bool:
    """Whether `layer` is, or holds, a layer that `randomized` randomizes."""
    kinds = (Augmentation,) * bool(randomized.augmentation) + DROPOUT_LAYERS * bool(randomized.mc_dropout)
    if not isinstance(layer, keras.layers.Layer):
        return False
    return any(isinstance(inner, kinds) for inner in _compat.flatten_layers(layer, include_self=True))


def split_at_randomness(model: keras.Model, randomized: Randomized) -> tuple[keras.Model, keras.Model] | None:
    """`(prefix, suffix)` models around the first randomized layers of a
    functional model, or `None` when nothing before them can be shared.

    The prefix holds every layer that does not depend on a randomized one, so
    the randomized signature runs it once on the batch instead of once per
    sample; `suffix(prefix(x))` computes exactly `model(x)`.
    """
    found = _compat.nodes_by_depth(model)
    if found is None:
        return None
    graph, nodes_by_depth = found
    if len(graph.inputs) != 1:
        return None
    random_ids: set[int] = set()
    cut: dict[int, Any] = {}
    for depth in sorted(nodes_by_depth, reverse=True):
        for node in nodes_by_depth[depth]:
            inputs = list(node.input_tensors)
            if not inputs:
                continue
            if has_random_layers(node.operation, randomized) or any(id(t) in random_ids for t in inputs):
                random_ids.update(id(t) for t in node.output_tensors)
                cut.update({id(t): t for t in inputs if id(t) not in random_ids})
    if not cut or any(id(t) not in random_ids for t in graph.outputs):
        return None
    tensors = list(cut.values())
    if all(t is graph.inputs[0] for t in tensors):
        return None
    shared = tensors[0] if len(tensors) == 1 else tensors
    try:
        prefix = keras.Model(graph.inputs[0], shared)
        suffix = keras.Model(shared, graph.output)
    except Exception as error:  # noqa: BLE001 - any graph Keras cannot cut still exports, only slower
        warnings.warn(
            f"predict_randomized runs every layer of model {model.name!r} once per sample: it could not be "
            f"split before its first randomized layer ({type(error).__name__}: {error}).",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return prefix, suffix


def tile(tensor: tf.Tensor, count: int) -> tf.Tensor:
    return tf.tile(tensor, [count] + [1] * (len(tensor.shape) - 1))


def _two_columns(p):
    return tf.concat([1.0 - p, p], axis=-1) if p.shape[-1] == 1 else p


def entropy(mean: tf.Tensor) -> tf.Tensor:
    """Predictive entropy (nats) of mean class probabilities."""
    p = _two_columns(mean)
    return -tf.reduce_sum(p * tf.math.log(tf.clip_by_value(p, 1e-12, 1.0)), axis=-1)


def agreement(draws: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Weighted fraction of the draws whose class is the (weighted) mode."""
    if draws.shape[-1] == 1:
        classes = tf.cast(draws[..., 0] > 0.5, tf.int32)
        n_classes = 2
    else:
        classes = tf.argmax(draws, axis=-1, output_type=tf.int32)
        n_classes = draws.shape[-1]
    wb = tf.reshape(weights, [-1] + [1] * len(classes.shape[1:]) + [1])
    votes = tf.reduce_sum(tf.one_hot(classes, n_classes) * wb, axis=0)
    return tf.reduce_max(votes, axis=-1)
