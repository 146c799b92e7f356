"""The `training` section of the model spec: how `build_model` compiles.

`Training` (optimizer, learning rate and its schedule, loss, metrics, label
smoothing) and the optimizer names it accepts; `tfcv.spec` re-exports both.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras

from tfcv._spec_checks import (
    SpecTypeError,
    SpecValueError,
    at,
    check_bool,
    check_choice,
    check_int,
    check_real,
    freeze,
    invalid,
    plain,
)

_SCHEDULES = {
    "constant": {"warmup_steps"},
    "cosine": {"decay_steps", "alpha", "warmup_steps"},
    "exponential": {"decay_steps", "decay_rate", "staircase"},
}
_SMOOTHING_LOSSES = ("auto", "categorical_crossentropy", "binary_crossentropy")


def _set(obj, name, value):
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class Training:
    """The `training` section: how `build_model` compiles.

    Args:
        optimizer: Keras optimizer name (`"adam"`, `"adamw"`, `"sgd"`, ...)
            or `{"name": ..., <optimizer arguments>}` such as
            `{"name": "sgd", "momentum": 0.9}`. Defaults to `"adam"`.
        learning_rate: `float`. The (peak) learning rate. Defaults to
            `0.001`.
        schedule: `None`, or a learning rate schedule:
            `{"name": "cosine", "decay_steps": n, "alpha": 0.0,
            "warmup_steps": 0}` (`keras.optimizers.schedules.CosineDecay`,
            with a linear warmup from 0), `{"name": "exponential",
            "decay_steps": n, "decay_rate": r, "staircase": false}` or
            `{"name": "constant", "warmup_steps": n}` (warmup, then
            constant). Steps are optimizer steps (batches).
        loss: `"auto"` or a Keras loss name. `"auto"` is, for multi-class
            classification, categorical cross-entropy that takes integer
            labels and one-hot (or mixed) label rows alike; binary
            cross-entropy for two classes (one sigmoid unit); mean squared
            error for regression. Defaults to `"auto"`.
        metrics: `"auto"` (`["accuracy"]` for classification, `["mae"]` for
            regression) or a list of Keras metric names. Defaults to
            `"auto"`.
        label_smoothing: `float` in `[0, 1)`. Classification only, with loss
            `"auto"`, `"categorical_crossentropy"` or
            `"binary_crossentropy"`; integer labels are fine with `"auto"`.
            Defaults to `0.0`.
    """

    optimizer: Any = "adam"
    learning_rate: float = 1e-3
    schedule: Any = None
    loss: str = "auto"
    metrics: Any = "auto"
    label_smoothing: float = 0.0

    def __post_init__(self):
        optimizer = freeze(self.optimizer)
        if isinstance(optimizer, Mapping):
            if "name" not in optimizer:
                raise SpecValueError("optimizer.name", "An optimizer mapping needs a `name` such as 'sgd'.",
                                      lead="Missing key")
            name, arguments = optimizer["name"], {k: v for k, v in optimizer.items() if k != "name"}
        else:
            name, arguments = optimizer, {}
        cls = optimizer_class(name)
        accepted = [p for p in inspect.signature(cls.__init__).parameters
                    if p not in ("self", "learning_rate", "name", "kwargs")]
        for key in arguments:
            if key == "learning_rate":
                raise SpecValueError("optimizer.learning_rate", "Set `training.learning_rate` (and "
                                      "`training.schedule`) instead.", lead="Misplaced key")
            if key not in accepted:
                raise SpecValueError(f"optimizer.{key}", f"{cls.__name__} accepts {accepted}.",
                                      lead="Unknown key")
        _set(self, "optimizer", optimizer)
        _set(self, "learning_rate", check_real("learning_rate", self.learning_rate, low=0.0))
        if self.learning_rate == 0:
            raise invalid("learning_rate", self.learning_rate, "a number > 0")
        if arguments:
            try:
                # Keras checks an optimizer's argument values (momentum in [0, 1], one clipping mode)
                # only when it is made: make one now (about 8 ms), so build_model cannot fail on them.
                cls(learning_rate=self.learning_rate, **arguments)
            except (ValueError, TypeError) as error:
                raise SpecValueError("optimizer", f"Received: {plain(self.optimizer)!r}. keras.optimizers."
                                     f"{cls.__name__} refused it: {error}") from None
        if self.schedule is not None:
            _set(self, "schedule", _check_schedule(self.schedule))
        if not isinstance(self.loss, str):
            raise invalid("loss", self.loss, "'auto' or a Keras loss name", SpecTypeError)
        if self.loss != "auto":
            try:
                keras.losses.get(self.loss)
            except (ValueError, TypeError):
                raise invalid("loss", self.loss, "'auto' or a Keras loss name such as "
                               "'categorical_crossentropy' or 'huber'") from None
        metrics = self.metrics
        if metrics != "auto":
            if isinstance(metrics, (str, bytes)) or not isinstance(metrics, Sequence):
                raise invalid("metrics", metrics, "'auto' or a list of Keras metric names", SpecTypeError)
            for i, metric in enumerate(metrics):
                if metric in ("accuracy", "acc"):
                    continue
                try:
                    if not isinstance(metric, str):
                        raise TypeError(metric)
                    keras.metrics.get(metric)
                except (ValueError, TypeError):
                    raise invalid(f"metrics[{i}]", metric, "a Keras metric name such as 'accuracy', 'auc' "
                                   "or 'mae'") from None
            _set(self, "metrics", tuple(metrics))
        _set(self, "label_smoothing", check_real("label_smoothing", self.label_smoothing, low=0.0, high=1.0,
                                             high_open=True))
        if self.label_smoothing and self.loss not in _SMOOTHING_LOSSES:
            raise invalid("label_smoothing", self.label_smoothing,
                           f"0 with loss {self.loss!r}: only the losses {_SMOOTHING_LOSSES} smooth labels")


def _check_schedule(schedule) -> dict:
    if not isinstance(schedule, Mapping):
        raise invalid("schedule", schedule, "null or a mapping such as {name: cosine, decay_steps: 1000}",
                       SpecTypeError)
    name = schedule.get("name")
    with at("schedule"):
        check_choice("name", name, tuple(_SCHEDULES))
    for key in schedule:
        if key != "name" and key not in _SCHEDULES[name]:
            raise SpecValueError(f"schedule.{key}", f"A {name!r} schedule accepts {sorted(_SCHEDULES[name])}.",
                                  lead="Unknown key")
    checked = {"name": name}
    with at("schedule"):
        if name in ("cosine", "exponential"):
            if "decay_steps" not in schedule:
                raise SpecValueError("decay_steps", f"A {name!r} schedule needs `decay_steps`.", lead="Missing key")
            checked["decay_steps"] = check_int("decay_steps", schedule["decay_steps"], minimum=1)
        if name == "cosine":
            checked["alpha"] = check_real("alpha", schedule.get("alpha", 0.0), low=0.0, high=1.0)
        if name == "exponential":
            if "decay_rate" not in schedule:
                raise SpecValueError("decay_rate", "An 'exponential' schedule needs `decay_rate`.",
                                      lead="Missing key")
            checked["decay_rate"] = check_real("decay_rate", schedule["decay_rate"], low=0.0)
            checked["staircase"] = check_bool("staircase", schedule.get("staircase", False))
        if name in ("cosine", "constant"):
            checked["warmup_steps"] = check_int("warmup_steps", schedule.get("warmup_steps", 0), minimum=0)
    return checked


def optimizer_class(name) -> type:
    """The Keras optimizer class for a name such as `"adam"` or `"AdamW"`."""
    classes = {
        n.lower(): getattr(keras.optimizers, n) for n in dir(keras.optimizers)
        if isinstance(getattr(keras.optimizers, n), type)
        and issubclass(getattr(keras.optimizers, n), keras.optimizers.Optimizer)
        and getattr(keras.optimizers, n) is not keras.optimizers.Optimizer
        # Both wrap other optimizers, which a spec cannot describe.
        and n not in ("LossScaleOptimizer", "MultiOptimizer")
    }
    if not isinstance(name, str) or name.lower() not in classes:
        raise invalid("optimizer", name, f"a Keras optimizer name: one of {sorted(classes)}")
    return classes[name.lower()]
