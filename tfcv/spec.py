"""The model spec as data: `ModelSpec` and its sections.

`ModelSpec` describes a functional Keras model as plain data (a mapping, or
YAML); `tfcv.build_model` turns it into a compiled model. Everything is
checked when the spec is made, and an invalid spec raises a `SpecError`
naming the key path (`backbone.blocks[2].pooling`), the value received and
what is accepted.

This module is the spec's public face: `SpecError` and its kinds (worded in
`tfcv._spec_checks`, with the checks every section uses), the `Training`
section and `optimizer_class` (`tfcv._spec_training`) and `read_yaml`
(`tfcv._yaml`) are importable from here.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras

from tfcv._checks import is_int, is_real
from tfcv._spec_checks import (
    SpecError,
    SpecTypeError,
    SpecValueError,
    check_activation,
    check_bool,
    check_choice,
    check_int,
    check_int_or_pair,
    check_keys,
    check_real,
    check_section,
    freeze,
    invalid,
    plain,
)
from tfcv._spec_training import Training, optimizer_class
from tfcv._yaml import read_yaml
from tfcv.layers.augmentation import check_augmentations
from tfcv.layers.mixing import BatchMixer

__all__ = [
    "Backbone",
    "ConvBlock",
    "FineTune",
    "Head",
    "ModelSpec",
    "Preprocessing",
    "SpecError",
    "SpecTypeError",
    "SpecValueError",
    "Text",
    "Training",
    "application_names",
    "optimizer_class",
    "read_yaml",
]

_TASKS = ("classification", "regression")
_BLOCK_POOLINGS = ("max", "avg", None)
_HEAD_POOLINGS = ("avg", "max", "flatten")
_BATCH_MIXING = ("mixup", "cutmix")
# Arguments of a keras.applications function that the spec sets itself.
_MANAGED_APPLICATION_ARGS = ("include_top", "weights", "input_shape", "input_tensor", "classes",
                             "classifier_activation", "pooling")


def _set(obj, name, value):
    object.__setattr__(obj, name, value)


# -------------------------------------------------------------- sections


@dataclass(frozen=True)
class Preprocessing:
    """The `preprocessing` section: deterministic steps run before augmentation.

    Args:
        rescaling: `float` scale, `[scale, offset]`, or `None`. A
            `keras.layers.Rescaling` named `rescaling` (`1/255` for uint8
            images). Defaults to `None`.
        resizing: `[height, width]` or `None`. A `keras.layers.Resizing`
            named `resizing` (bilinear). Defaults to `None`.
        normalization: `True` for a `keras.layers.Normalization` named
            `normalization` (per channel) whose mean and variance the
            cross-validator adapts on each fold's training split,
            `{"mean": [...], "variance": [...]}` for fixed statistics, or
            `False`. Defaults to `False`.
        value_range: `[low, high]` of the pixel values after rescaling: what
            brightness, contrast and the other value-dependent augmentations
            assume. Defaults to `[0, 1]`.
    """

    rescaling: Any = None
    resizing: Any = None
    normalization: Any = False
    value_range: Any = (0.0, 1.0)

    def __post_init__(self):
        if self.rescaling is not None:
            value = self.rescaling
            if is_real(value):
                _set(self, "rescaling", float(value))
            elif isinstance(value, (list, tuple)) and len(value) == 2 and all(is_real(v) for v in value):
                _set(self, "rescaling", (float(value[0]), float(value[1])))
            else:
                raise invalid("rescaling", value, "a scale such as 0.00392 (1/255), [scale, offset] or null")
        if self.resizing is not None:
            value = self.resizing
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise invalid("resizing", value, "[height, width] or null")
            _set(self, "resizing", tuple(check_int(f"resizing[{i}]", v, minimum=1) for i, v in enumerate(value)))
        value = self.normalization
        if isinstance(value, Mapping):
            value = freeze(value)
            if set(value) != {"mean", "variance"}:
                raise invalid("normalization", dict(value), "true, false or {mean: [...], variance: [...]}")
            for key in ("mean", "variance"):
                stats = value[key]
                if not (is_real(stats) or (isinstance(stats, (list, tuple)) and stats
                                           and all(is_real(v) for v in stats))):
                    raise invalid(f"normalization.{key}", stats, "a number or a list of numbers (one per channel)")
            mean, variance = value["mean"], value["variance"]
            if is_real(mean) != is_real(variance) or len(_numbers(mean)) != len(_numbers(variance)):
                raise invalid("normalization", dict(value), "`mean` and `variance` of the same shape (Keras' "
                              "Normalization needs it): two numbers, or two lists of one number per channel")
            if any(v < 0 for v in _numbers(variance)):
                raise invalid("normalization.variance", value["variance"], "variances >= 0")
            _set(self, "normalization", {k: value[k] for k in ("mean", "variance")})
        elif not isinstance(value, bool):
            raise invalid("normalization", value, "true, false or {mean: [...], variance: [...]}", SpecTypeError)
        value = self.value_range
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(is_real(v) for v in value)
                and value[0] < value[1]):
            raise invalid("value_range", value, "[low, high] with low < high, such as [0, 1] or [0, 255]")
        _set(self, "value_range", (float(value[0]), float(value[1])))


@dataclass(frozen=True)
class ConvBlock:
    """One block of a conv backbone: conv, batch norm, (residual add),
    activation, pooling, dropout.

    Layers are named `block<i>_conv`, `block<i>_bn`, `block<i>_shortcut` and
    `block<i>_add` (residual), `block<i>_act`, `block<i>_pool` and
    `block<i>_dropout`, counting blocks from 1.

    Args:
        filters: `int`. Defaults to `32`.
        kernel_size: `int` or `[h, w]`. Defaults to `3`.
        strides: `int` or `[h, w]`. Defaults to `1`.
        batch_norm: `bool`. Defaults to `True`.
        activation: Keras activation name. Defaults to `"relu"`.
        pooling: `"max"`, `"avg"` (2x2) or `None`. Defaults to `"max"`.
        dropout: `float` in `[0, 1)`. Defaults to `0.0`.
        residual: `bool`. Add the block's input (through a 1x1 conv when
            the shape changes) before the activation. Defaults to `False`.
    """

    filters: int = 32
    kernel_size: Any = 3
    strides: Any = 1
    batch_norm: bool = True
    activation: str = "relu"
    pooling: str | None = "max"
    dropout: float = 0.0
    residual: bool = False

    def __post_init__(self):
        _set(self, "filters", check_int("filters", self.filters, minimum=1))
        _set(self, "kernel_size", check_int_or_pair("kernel_size", self.kernel_size))
        _set(self, "strides", check_int_or_pair("strides", self.strides))
        _set(self, "batch_norm", check_bool("batch_norm", self.batch_norm))
        check_activation("activation", self.activation)
        check_choice("pooling", self.pooling, _BLOCK_POOLINGS)
        _set(self, "dropout", check_real("dropout", self.dropout, low=0.0, high=1.0, high_open=True))
        _set(self, "residual", check_bool("residual", self.residual))


_DEFAULT_BLOCKS = (ConvBlock(32), ConvBlock(64))


@dataclass(frozen=True)
class FineTune:
    """The `backbone.fine_tune` section: two-phase fine-tuning of a
    pretrained `application` backbone in every fold.

    Phase 1 (the first `freeze_epochs` epochs) trains the head on a frozen
    backbone; phase 2 lets the top `unfreeze` layers of the backbone train
    at `learning_rate * learning_rate_factor`, as Keras' transfer-learning
    guide prescribes. BatchNormalization layers of the backbone stay in
    inference mode in both phases. `tfcv.builder.FineTuning` (from
    `ModelBuilder.callbacks()`; `tfcv run` adds it) switches phases.

    Args:
        freeze_epochs: `int` >= 1. Epochs of phase 1. Defaults to `3`.
        unfreeze: `int` >= 1 (top layers) or `"all"`. Defaults to `"all"`.
        learning_rate_factor: `float` in (0, 1]. Defaults to `0.1`.
    """

    freeze_epochs: int = 3
    unfreeze: Any = "all"
    learning_rate_factor: float = 0.1

    def __post_init__(self):
        _set(self, "freeze_epochs", check_int("freeze_epochs", self.freeze_epochs, minimum=1))
        if self.unfreeze != "all":
            if not is_int(self.unfreeze):
                raise invalid("unfreeze", self.unfreeze, "an int >= 1 (top layers) or 'all'", SpecTypeError)
            _set(self, "unfreeze", check_int("unfreeze", self.unfreeze, minimum=1))
        _set(self, "learning_rate_factor", check_real("learning_rate_factor", self.learning_rate_factor, low=0.0))
        if not 0.0 < self.learning_rate_factor <= 1.0:
            raise invalid("learning_rate_factor", self.learning_rate_factor, "a float in (0, 1]")


@dataclass(frozen=True)
class Backbone:
    """The `backbone` section: conv blocks, or a `keras.applications` model.

    Args:
        blocks: List of `ConvBlock` settings (dicts, or an int as shorthand
            for `{"filters": n}`). Defaults to two blocks of 32 and 64
            filters with max pooling when `application` is `None`.
        application: Name of a `keras.applications` model such as
            `"MobileNetV3Small"`, `"EfficientNetB0"` or `"ResNet50"`, built
            with `include_top=False` as a nested model named `backbone`.
            The preprocessing it expects is part of the model: a
            `Rescaling` named `backbone_preprocessing` (after a channel
            reorder for caffe-style applications such as ResNet50 and VGG)
            takes pixels in `preprocessing.value_range` to what the
            application's `preprocess_input` makes of 0-255 pixels (see
            `tfcv.builder.application_preprocessing`), so exported models
            need nothing else. Defaults to `None`.
        weights: `None` (random initialization), `"imagenet"` (Keras
            downloads the file once into `~/.keras/models` or reuses it
            from there; offline, the error names the file to place) or the
            path of a local weights file. Defaults to `None`.
        fine_tune_layers: `int`. Train only the top `n` layers of the
            application (`0` freezes it; frozen BatchNormalization layers
            run in inference mode), or `None` to train all. Defaults to
            `None`.
        options: `dict` of further arguments for the application function
            (`alpha`, `minimalistic`, `include_preprocessing`, ...).
            `include_preprocessing: false` also leaves out
            `backbone_preprocessing`: the application then gets the pixels
            as the `preprocessing` section leaves them.
        fine_tune: A `FineTune` or its mapping: two-phase fine-tuning, or
            `None`. Defaults to `None`.
    """

    blocks: Any = None
    application: str | None = None
    weights: str | None = None
    fine_tune_layers: int | None = None
    options: Any = field(default_factory=dict)
    fine_tune: Any = None

    def __post_init__(self):
        if self.application is None:
            for name, default in (("weights", None), ("fine_tune_layers", None), ("fine_tune", None)):
                if getattr(self, name) != default:
                    raise invalid(name, getattr(self, name), "null: it only applies to an `application` backbone")
            if self.options:
                raise invalid("options", self.options, "{}: it only applies to an `application` backbone")
            blocks = _DEFAULT_BLOCKS if self.blocks is None else self.blocks
            if isinstance(blocks, (str, bytes, Mapping)) or not isinstance(blocks, Sequence):
                raise invalid("blocks", blocks, "a list of conv blocks", SpecTypeError)
            checked = []
            for i, block in enumerate(blocks):
                if is_int(block):
                    block = {"filters": block}
                checked.append(check_section(ConvBlock, block, f"blocks[{i}]"))
            _set(self, "blocks", tuple(checked))
        else:
            if self.blocks is not None:
                raise invalid("blocks", self.blocks, "null when `application` is set (one backbone or the other)")
            names = application_names()
            if self.application not in names:
                close = [n for n in names if n.lower().startswith(str(self.application).lower()[:6])]
                raise invalid("application", self.application,
                               f"a keras.applications model name such as {close or ['MobileNetV3Small', 'EfficientNetB0', 'ResNet50']}")
            if self.weights is not None and not isinstance(self.weights, (str, os.PathLike)):
                raise invalid("weights", self.weights, "null or the path of a local weights file", SpecTypeError)
            if self.weights is not None:
                _set(self, "weights", os.fspath(self.weights))
            _set(self, "fine_tune_layers", check_int("fine_tune_layers", self.fine_tune_layers, minimum=0, optional=True))
            if self.fine_tune is not None:
                if self.fine_tune_layers is not None:
                    raise invalid("fine_tune_layers", self.fine_tune_layers,
                                   "null with `fine_tune` (set fine_tune.unfreeze instead)")
                _set(self, "fine_tune", check_section(FineTune, self.fine_tune, "fine_tune"))
            if not isinstance(self.options, Mapping):
                raise invalid("options", self.options, "a mapping of keras.applications arguments", SpecTypeError)
            accepted = [p for p in inspect.signature(getattr(keras.applications, self.application)).parameters
                        if p not in _MANAGED_APPLICATION_ARGS]
            for key in self.options:
                if key not in accepted:
                    raise SpecValueError(f"options.{key}", f"keras.applications.{self.application} accepts "
                                          f"{accepted} here.", lead="Unknown key")
            _set(self, "options", freeze(self.options))


@dataclass(frozen=True)
class Text:
    """The `text` section: the model takes raw sentences (`input_shape: []`).

    Layers: `vectorize` (`TextVectorization`, lower-cased, punctuation
    stripped, its vocabulary adapted on each fold's training split),
    `embedding`, then `conv` (`Conv1D` with ReLU, unless `filters` is 0),
    then the head, whose `pooling` pools over the tokens.

    Args:
        max_tokens: `int` >= 3. Vocabulary size. Defaults to `20000`.
        sequence_length: `int`. Tokens kept per sentence. Defaults to `128`.
        embedding_dim: `int`. Defaults to `64`.
        filters: `int`. Width of the convolution, `0` for none (a pooled
            bag of embeddings). Defaults to `64`.
        kernel_size: `int`. Tokens one filter sees. Defaults to `5`.
    """

    max_tokens: int = 20000
    sequence_length: int = 128
    embedding_dim: int = 64
    filters: int = 64
    kernel_size: int = 5

    def __post_init__(self):
        _set(self, "max_tokens", check_int("max_tokens", self.max_tokens, minimum=3))
        for name in ("sequence_length", "embedding_dim", "kernel_size"):
            _set(self, name, check_int(name, getattr(self, name), minimum=1))
        _set(self, "filters", check_int("filters", self.filters, minimum=0))


@dataclass(frozen=True)
class Head:
    """The `head` section: pooling, dense layers and dropout.

    Layers: `head_pool` (or `head_flatten`), then per dense layer
    `head_dense<i>` and `head_dropout<i>` (or one `head_dropout` when there
    is no dense layer), then `predictions`.

    Args:
        pooling: `"avg"`, `"max"` (global pooling) or `"flatten"`. Defaults
            to `"avg"`.
        units: List of dense layer sizes. Defaults to `[64]`.
        dropout: `float` in `[0, 1)`. Defaults to `0.2`.
        activation: Activation of the dense layers. Defaults to `"relu"`.
    """

    pooling: str = "avg"
    units: Any = (64,)
    dropout: float = 0.2
    activation: str = "relu"

    def __post_init__(self):
        check_choice("pooling", self.pooling, _HEAD_POOLINGS)
        if isinstance(self.units, (str, bytes, Mapping)) or not isinstance(self.units, Sequence):
            raise invalid("units", self.units, "a list of dense layer sizes such as [64]", SpecTypeError)
        _set(self, "units", tuple(check_int(f"units[{i}]", u, minimum=1) for i, u in enumerate(self.units)))
        _set(self, "dropout", check_real("dropout", self.dropout, low=0.0, high=1.0, high_open=True))
        check_activation("activation", self.activation)


def _numbers(stats) -> list:
    """A fixed normalization statistic (a number or a list) as a list."""
    return list(stats) if isinstance(stats, (list, tuple)) else [stats]


def application_names() -> list[str]:
    """The model names of `keras.applications` usable as a backbone."""
    return sorted(n for n in dir(keras.applications) if n[:1].isupper() and callable(getattr(keras.applications, n)))


# -------------------------------------------------------------- the spec


@dataclass(frozen=True, repr=False)
class ModelSpec:
    """A model described as data; `build_model` turns it into a compiled
    functional `keras.Model`.

    The spec is a frozen dataclass whose sections are small frozen
    dataclasses (`Preprocessing`, `Backbone` with `ConvBlock`s, `Head`,
    `Training`); everything is validated when the spec is made, and an
    error names the key path (`backbone.blocks[2].pooling`), the value
    received and what is accepted. Only `input_shape` and, for
    classification, `num_classes` are required:

    ```yaml
    input_shape: [8, 8, 1]
    task: classification          # or regression (with num_outputs)
    num_classes: 10               # 2 = binary: one sigmoid unit
    preprocessing:
      rescaling: null             # scale or [scale, offset]
      resizing: null              # [height, width]
      normalization: true         # adapted per fold on the training split
      value_range: [0, 1]         # pixel range the augmentations assume
    augmentation:                 # see tfcv.layers.Augmentation
      - flip: horizontal
      - rotate: 0.05
      - mixup: 0.2                # batch-level: see tfcv.layers.BatchMixer
    backbone:
      blocks:
        - {filters: 32, kernel_size: 3, strides: 1, batch_norm: true,
           activation: relu, pooling: max, dropout: 0.0, residual: false}
        - {filters: 64, residual: true}
      # or: application: MobileNetV3Small, weights: imagenet (or a file),
      #     fine_tune_layers: null, options: {minimalistic: true},
      #     fine_tune: {freeze_epochs: 3, unfreeze: 20, learning_rate_factor: 0.1}
    head: {pooling: avg, units: [64], dropout: 0.2, activation: relu}
    training:
      optimizer: adam             # or {name: sgd, momentum: 0.9}
      learning_rate: 0.001
      schedule: {name: cosine, decay_steps: 1000, warmup_steps: 100}
      loss: auto
      metrics: auto
      label_smoothing: 0.1
    name: model
    # text: {max_tokens: 20000, sequence_length: 128}   # with input_shape: [] (see Text)
    ```

    The model's graph is `image` -> `rescaling` -> `resizing` ->
    `augmentation` -> `normalization` -> backbone -> head ->
    `predictions`, each step present only when the spec asks for it.
    Augmentation runs on rescaled, un-normalized pixels (so `value_range`
    means what it says) and is the identity at inference, so the
    normalization statistics that the cross-validator adapts (by feeding
    the fold's training split through the model in inference mode) are
    those of the real training images.

    Args:
        input_shape: `(height, width, channels)` of one input image.
        task: `"classification"` or `"regression"`. Defaults to
            `"classification"`.
        num_classes: `int` >= 2. Classification only; 2 makes a binary
            classifier with one sigmoid unit (labels 0/1), more a softmax
            over the classes (integer or one-hot labels).
        num_outputs: `int`. Regression only. Defaults to `1`.
        preprocessing: A `Preprocessing` or its mapping.
        augmentation: List of one-key dicts for `tfcv.layers.Augmentation`,
            plus optionally `{"mixup": alpha}` and `{"cutmix": factor}`,
            which mix labels too and so run on training batches (see
            `batch_mixer`).
        backbone: A `Backbone` or its mapping; also a list of blocks, or an
            application name. Defaults to two conv blocks.
        head: A `Head` or its mapping.
        training: A `Training` or its mapping.
        name: `str`. The model's name. Defaults to `"model"`.
        text: A `Text` or its mapping: a text model taking raw sentences
            (with `input_shape: []`; no preprocessing, augmentation or
            backbone), or `None` for images. Defaults to `None`.

    Example:

    >>> spec = tfcv.ModelSpec.from_dict({
    ...     "input_shape": [8, 8, 1], "task": "classification", "num_classes": 10,
    ...     "preprocessing": {"normalization": True},
    ...     "augmentation": [{"flip": "horizontal"}, {"rotate": 0.05}]})
    >>> result = tfcv.CrossValidator(tfcv.ModelBuilder(spec), folds=5).fit(x, y, epochs=10)
    """

    input_shape: Any
    task: str = "classification"
    num_classes: int | None = None
    num_outputs: int | None = None
    preprocessing: Any = field(default_factory=Preprocessing)
    augmentation: Any = ()
    backbone: Any = field(default_factory=Backbone)
    head: Any = field(default_factory=Head)
    training: Any = field(default_factory=Training)
    name: str = "model"
    text: Any = None

    def __post_init__(self):
        shape = self.input_shape
        if self.text is not None:
            if not isinstance(shape, (list, tuple)) or len(shape) != 0:
                raise invalid("input_shape", shape, "[] with `text` (one sentence per sample)", SpecTypeError)
            _set(self, "text", check_section(Text, self.text, "text"))
            for key, section in (("preprocessing", Preprocessing), ("backbone", Backbone)):
                if check_section(section, getattr(self, key), key) != section():
                    raise invalid(key, plain(getattr(self, key)), f"the default with `text`: a text model has no {key}")
            if self.augmentation:
                raise invalid("augmentation", plain(self.augmentation), "[] with `text`")
        elif not isinstance(shape, (list, tuple)) or len(shape) != 3:
            raise invalid("input_shape", shape, "[height, width, channels]", SpecTypeError)
        _set(self, "input_shape", tuple(check_int(f"input_shape[{i}]", d, minimum=1) for i, d in enumerate(shape)))
        check_choice("task", self.task, _TASKS)
        if self.task == "classification":
            if self.num_classes is None:
                raise SpecValueError("num_classes", "A classification spec needs `num_classes` (an int >= 2).",
                                      lead="Missing key")
            _set(self, "num_classes", check_int("num_classes", self.num_classes, minimum=2))
            if self.num_outputs is not None:
                raise invalid("num_outputs", self.num_outputs, "null for classification (set num_classes)")
        else:
            if self.num_classes is not None:
                raise invalid("num_classes", self.num_classes, "null for regression (set num_outputs)")
            _set(self, "num_outputs", check_int("num_outputs", 1 if self.num_outputs is None else self.num_outputs,
                                           minimum=1))
        _set(self, "preprocessing", check_section(Preprocessing, self.preprocessing, "preprocessing"))
        if isinstance(self.preprocessing.normalization, Mapping):
            channels = self.input_shape[-1]
            for key, stats in self.preprocessing.normalization.items():
                if len(_numbers(stats)) not in (1, channels):
                    raise invalid(f"preprocessing.normalization.{key}", plain(stats),
                                  f"one number, or one per channel: {channels} for input_shape {list(self.input_shape)}")
        backbone = self.backbone
        if isinstance(backbone, str):
            backbone = {"application": backbone}
        elif isinstance(backbone, (list, tuple)):
            backbone = {"blocks": backbone}
        _set(self, "backbone", check_section(Backbone, backbone, "backbone"))
        _set(self, "head", check_section(Head, self.head, "head"))
        _set(self, "training", check_section(Training, self.training, "training"))
        try:
            augmentation = check_augmentations(self.augmentation, path="augmentation", allow_batch_mixing=True,
                                               channels=self.input_shape[-1] if self.input_shape else 1)
        except (ValueError, TypeError) as error:
            if not hasattr(error, "path"):
                raise
            # The layer words its rejection for a Python caller; a spec reports it as a SpecError.
            kind = SpecTypeError if isinstance(error, TypeError) else SpecValueError
            raise kind(error.path, error.detail) from None
        _set(self, "augmentation", tuple(freeze(item) for item in augmentation))
        for name in _BATCH_MIXING:
            where = [i for i, item in enumerate(self.augmentation) if name in item]
            if len(where) > 1:
                raise invalid(f"augmentation[{where[1]}]", dict(self.augmentation[where[1]]),
                               f"at most one {name!r} item")
            if where and self.task != "classification":
                raise invalid(f"augmentation[{where[0]}]", dict(self.augmentation[where[0]]),
                               f"no {name!r} for regression: it mixes class labels")
        if self.backbone.fine_tune is not None and self.training.schedule is not None:
            raise invalid("training.schedule", dict(self.training.schedule),
                           "null with backbone.fine_tune, whose phase 2 scales the constant learning rate")
        if (self.task == "classification" and self.num_classes == 2
                and "categorical" in self.training.loss.replace("_", "").lower()):
            # One sigmoid unit: a categorical cross-entropy normalizes it to 1 (the loss is always 0 and
            # nothing trains), a sparse one finds label 1 out of range.
            raise invalid("training.loss", self.training.loss, "'auto', 'binary_crossentropy' or another loss for "
                          "the one sigmoid unit that num_classes: 2 builds (P(class 1)); for one unit per class, "
                          "categorical losses need num_classes >= 3")
        if self.training.label_smoothing and self.task != "classification":
            raise invalid("training.label_smoothing", self.training.label_smoothing, "0 for regression")
        if not isinstance(self.name, str) or not self.name:
            raise invalid("name", self.name, "a non-empty string", SpecTypeError)
        if "/" in self.name:
            # Keras refuses it when the model is built: '/' separates scopes in its names.
            raise invalid("name", self.name, "a model name without '/'")

    # -- conversions -----------------------------------------------------

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | ModelSpec, **overrides: Any) -> ModelSpec:
        """Makes a spec from a mapping (or returns an already-built spec).

        Args:
            d: A mapping with the keys of `ModelSpec`, or a `ModelSpec`.
            **overrides: Top-level keys that replace those of `d`, for
                example `input_shape` and `num_classes` taken from the data.

        Returns:
            A validated `ModelSpec`.

        Example:

        >>> spec = tfcv.ModelSpec.from_dict(config["model"], input_shape=x.shape[1:])
        """
        if isinstance(d, ModelSpec):
            if not overrides:
                return d
            d = d.to_dict()
        if not isinstance(d, Mapping):
            raise TypeError(
                f"Invalid value for argument `d`. Received: d={d!r} of type {type(d).__name__}. "
                "Expected a mapping (such as the `model:` section of a YAML file) or a ModelSpec."
            )
        d = {**d, **overrides}
        check_keys(cls, d, "")
        if "input_shape" not in d:
            raise SpecValueError("input_shape", "Every spec needs `input_shape: [height, width, channels]`.",
                                  lead="Missing key")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain dicts, lists and scalars, with every default
        filled in: `ModelSpec.from_dict(spec.to_dict()) == spec`."""
        return plain(self)

    @classmethod
    def from_yaml(cls, path_or_text: str | os.PathLike, **overrides: Any) -> ModelSpec:
        """Reads a spec from a YAML file or YAML text, with a safe loader.

        Floats written without a dot (`1e-3`) are read as numbers, not as
        the strings plain YAML 1.1 makes of them.

        Args:
            path_or_text: Path of a YAML file, or the YAML text itself.
            **overrides: As for `from_dict`.
        """
        return cls.from_dict(read_yaml(path_or_text), **overrides)

    def to_yaml(self) -> str:
        """The spec as YAML text: `ModelSpec.from_yaml(spec.to_yaml()) == spec`."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # -- what the builder and the cross-validator use ---------------------

    @property
    def model_augmentation(self) -> list[dict]:
        """The augmentation items that run inside the model (all but
        `mixup` and `cutmix`)."""
        return [dict(item) for item in self.augmentation if next(iter(item)) not in _BATCH_MIXING]

    def batch_mixer(self, seed: int | None = None) -> BatchMixer | None:
        """The `BatchMixer` for the spec's `mixup`/`cutmix` items, or `None`.

        It takes integer (or one-hot) labels and returns mixed images and
        mixed one-hot label rows; apply it to training batches only.
        """
        settings = {next(iter(item)): next(iter(item.values())) for item in self.augmentation
                    if next(iter(item)) in _BATCH_MIXING}
        if not settings:
            return None
        num_classes = self.num_classes if self.num_classes > 2 else None
        cutmix = settings.get("cutmix")
        return BatchMixer(
            mixup=settings.get("mixup"),
            cutmix=list(cutmix) if isinstance(cutmix, tuple) else cutmix,
            num_classes=num_classes,
            seed=seed,
        )

    def __repr__(self) -> str:
        changed = _changed(self, None)
        parts = [f"input_shape={self.input_shape}"]
        parts += [f"{k}={v!r}" for k, v in changed.items() if k != "input_shape"]
        return f"ModelSpec({', '.join(parts)})"


def _changed(spec, default) -> dict:
    """The fields of a spec (or section) that differ from their defaults."""
    out = {}
    for f in dataclasses.fields(spec):
        value = getattr(spec, f.name)
        if default is not None:
            base = getattr(default, f.name)
        elif f.default is not dataclasses.MISSING:
            base = f.default
        elif f.default_factory is not dataclasses.MISSING:
            base = f.default_factory()
        else:
            base = dataclasses.MISSING
        if dataclasses.is_dataclass(value) and type(value) is type(base):
            inner = _changed(value, base)
            if inner:
                out[f.name] = inner
        elif value != base:
            out[f.name] = plain(value)
    return out
