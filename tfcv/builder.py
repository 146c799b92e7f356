"""ModelSpec -> keras.Model: describe a model once, as data, build it per fold.

The spec itself (`ModelSpec`, its sections, `SpecError`, `read_yaml`) lives
in `tfcv.spec`, and the loss and metric the builder compiles with in
`tfcv.metrics`; they are importable from here too, as they always were.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from tfcv.layers.augmentation import Augmentation
from tfcv.layers.gradient_gate import GradientGate
from tfcv.layers.mixing import BatchMixer

# The names imported `as` themselves are re-exported: they were importable
# from here before the spec and the metrics had modules of their own.
from tfcv.metrics import ClassAccuracy as ClassAccuracy
from tfcv.metrics import ClassCrossentropy as ClassCrossentropy
from tfcv.metrics import _class_accuracy as _class_accuracy
from tfcv.metrics import _dense_labels as _dense_labels
from tfcv.spec import Backbone, ConvBlock, Head, ModelSpec, Preprocessing, Training, optimizer_class
from tfcv.spec import SpecError as SpecError
from tfcv.spec import SpecTypeError as SpecTypeError
from tfcv.spec import SpecValueError as SpecValueError
from tfcv.spec import application_names as application_names
from tfcv.spec import read_yaml as read_yaml

__all__ = ["ModelSpec", "ModelBuilder", "build_model", "ConvBlock", "Backbone", "Head", "Preprocessing", "Training",
           "FineTuning", "application_preprocessing"]

_GATE = "fine_tune_gate"


# ------------------------------------------------------------ building


class ModelBuilder:
    """Builds a fresh compiled model from a spec on every call.

    This is what `tfcv.CrossValidator` takes as `build_fn`. It pickles as
    the spec's plain dict, so folds can be built in other processes.

    Args:
        spec: A `ModelSpec`, or a mapping for `ModelSpec.from_dict`.

    Attributes:
        spec: The `ModelSpec`.
        batch_mixer: The spec's `BatchMixer` for training batches, or
            `None` when the spec has no `mixup`/`cutmix` item.

    Example:

    >>> cv = tfcv.CrossValidator(tfcv.ModelBuilder(spec), folds=5)
    """

    def __init__(self, spec: ModelSpec | Mapping[str, Any]):
        self.spec = ModelSpec.from_dict(spec)

    def __call__(self) -> keras.Model:
        return build_model(self.spec)

    @property
    def batch_mixer(self) -> BatchMixer | None:
        return self.spec.batch_mixer()

    def callbacks(self) -> list[keras.callbacks.Callback]:
        """The callbacks the spec needs in `fit`: `FineTuning` when the
        backbone has a `fine_tune` section, else none."""
        fine_tune = self.spec.backbone.fine_tune
        if fine_tune is None:
            return []
        return [FineTuning(fine_tune.freeze_epochs, self.spec.training.learning_rate, fine_tune.learning_rate_factor)]

    def __getstate__(self):
        return {"spec": self.spec.to_dict()}

    def __setstate__(self, state):
        self.spec = ModelSpec.from_dict(state["spec"])

    def __eq__(self, other):
        return isinstance(other, ModelBuilder) and other.spec == self.spec

    __hash__ = None

    def __repr__(self) -> str:
        return f"ModelBuilder({self.spec!r})"


def build_model(spec: ModelSpec | Mapping[str, Any], *, compile: bool = True) -> keras.Model:
    """Builds the functional `keras.Model` a spec describes.

    Layer names follow the spec (`rescaling`, `resizing`, `augmentation`,
    `normalization`, `block1_conv`, ..., `backbone`, `head_pool`,
    `head_dense1`, `head_dropout1`, `predictions`), so `model.summary()`
    reads like the spec. A `normalization` layer is left un-adapted (unless
    the spec fixes its statistics): `tfcv.CrossValidator` adapts it on each
    fold's training split; outside cross-validation call
    `tfcv.preprocessing.adapt_preprocessing(model, x_train)` before `fit`.

    Args:
        spec: A `ModelSpec`, or a mapping for `ModelSpec.from_dict`.
        compile: `bool`. Compile with the spec's training settings.
            Defaults to `True`.

    Returns:
        A new `keras.Model` (compiled unless `compile=False`).

    Example:

    >>> model = tfcv.build_model({"input_shape": [8, 8, 1], "num_classes": 10})
    """
    spec = ModelSpec.from_dict(spec)
    if spec.text is not None:
        inputs = keras.Input((), dtype="string", name="text")
        x = _text(spec.text, inputs)
    else:
        inputs = keras.Input(spec.input_shape, name="image")
        x = _backbone(spec.backbone, _preprocess(spec, inputs), spec.preprocessing.value_range)
    x = _head(spec.head, x)
    if spec.task == "regression":
        outputs = keras.layers.Dense(spec.num_outputs, name="predictions", dtype="float32")(x)
    elif spec.num_classes == 2:
        outputs = keras.layers.Dense(1, activation="sigmoid", name="predictions", dtype="float32")(x)
    else:
        outputs = keras.layers.Dense(spec.num_classes, activation="softmax", name="predictions", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name=spec.name)
    if compile:
        model.compile(**_compile_arguments(spec))
    return model


def _preprocess(spec, x):
    p = spec.preprocessing
    if p.rescaling is not None:
        scale, offset = p.rescaling if isinstance(p.rescaling, tuple) else (p.rescaling, 0.0)
        x = keras.layers.Rescaling(scale, offset, name="rescaling")(x)
    if p.resizing is not None:
        x = keras.layers.Resizing(*p.resizing, name="resizing")(x)
    if spec.model_augmentation:
        x = Augmentation(spec.model_augmentation, value_range=p.value_range, name="augmentation")(x)
    if isinstance(p.normalization, Mapping):
        x = keras.layers.Normalization(mean=p.normalization["mean"], variance=p.normalization["variance"],
                                       name="normalization")(x)
    elif p.normalization:
        x = keras.layers.Normalization(axis=-1, name="normalization")(x)
    return x


def _backbone(backbone: Backbone, x, value_range=(0.0, 1.0)):
    if backbone.application is None:
        for i, block in enumerate(backbone.blocks, start=1):
            x = _conv_block(x, block, i)
        return x
    if backbone.options.get("include_preprocessing", True):
        x = _application_preprocessing(backbone.application, x, value_range)
    if backbone.fine_tune is None:
        return _application(backbone, tuple(x.shape[1:]))(x)
    # Inference mode throughout, BatchNormalization above all (Keras'
    # transfer-learning guide); the gate freezes it in phase 1.
    x = _application(backbone, tuple(x.shape[1:]))(x, training=False)
    return GradientGate(name=_GATE)(x)


def application_preprocessing(application: str, value_range=(0.0, 1.0), channels: int = 3):
    """What a `keras.applications` model expects of its input, as
    `(permutation, scale, offset)`: pixels in `value_range` are reordered
    along the channels by `permutation` (`None` to keep them) and become
    `pixel * scale + offset` per channel.

    It is the application's own `preprocess_input` (caffe: RGB -> BGR and
    the ImageNet mean subtracted from 0-255 pixels, as ResNet50 and VGG
    expect; "tf": -1 to 1; "torch": ImageNet mean and standard deviation;
    a pass-through for the applications that rescale inside the model,
    EfficientNet and MobileNetV3 among them, which then get 0-255),
    measured on a few pixels: every mode is affine per channel.

    Args:
        application: Name of a `keras.applications` model.
        value_range: `(low, high)` of the pixels the model receives.
            Defaults to `(0, 1)`.
        channels: `int`. Channels of the input. Defaults to `3`.

    Example:

    >>> tfcv.builder.application_preprocessing("ResNet50")[0]
    [2, 1, 0]
    """
    function = getattr(keras.applications, application)
    module = getattr(keras.applications, function.__module__.rsplit(".", 1)[-1], None)
    if module is None or not hasattr(module, "preprocess_input"):
        raise ValueError(f"keras.applications.{application} has no preprocess_input module tfcv knows.")
    # Black, then pure red, green and blue at 255.
    probe = np.concatenate([np.zeros((1, 3)), 255.0 * np.eye(3)]).astype("float32")[None, None]
    out = np.asarray(module.preprocess_input(probe.copy()), dtype="float64")[0, 0]
    offset, matrix = out[0], (out[1:] - out[0]) / 255.0
    permutation = [int(i) for i in np.argmax(np.abs(matrix), axis=0)]
    scale = matrix[permutation, range(3)]
    if sorted(permutation) != [0, 1, 2] or not np.allclose(matrix[permutation, range(3)] * np.eye(3),
                                                          matrix[permutation]):
        raise ValueError(f"keras.applications.{application}'s preprocess_input is not a per-channel affine map.")
    low, high = float(value_range[0]), float(value_range[1])
    # From value_range to the 0-255 pixels preprocess_input takes, then its map.
    scale = scale * 255.0 / (high - low)
    offset = offset - low * scale
    if channels != 3:
        # A grey (or other) input has no channel order: the average map.
        permutation, scale, offset = [0, 1, 2], np.full(channels, np.mean(scale)), np.full(channels, np.mean(offset))
    # Seven significant digits: the probe runs in float32, and 255.0000076 would read as a deliberate value.
    return ((None if permutation == [0, 1, 2] else permutation), [float(f"{v:.7g}") for v in scale],
            [float(f"{v:.7g}") for v in offset])


def _application_preprocessing(application: str, x, value_range):
    permutation, scale, offset = application_preprocessing(application, value_range, int(x.shape[-1]))
    if permutation is not None:
        x = keras.ops.take(x, permutation, axis=-1)
    if np.allclose(scale, 1.0) and np.allclose(offset, 0.0):
        return x
    return keras.layers.Rescaling(scale, offset, name="backbone_preprocessing")(x)


def _conv_block(x, block: ConvBlock, i: int):
    shortcut = x
    y = keras.layers.Conv2D(block.filters, block.kernel_size, strides=block.strides, padding="same",
                            use_bias=not block.batch_norm, name=f"block{i}_conv")(x)
    if block.batch_norm:
        # momentum=0.9: with tens of steps per epoch Keras' default 0.99
        # leaves the moving statistics far from the data for many epochs.
        y = keras.layers.BatchNormalization(momentum=0.9, name=f"block{i}_bn")(y)
    if block.residual:
        if tuple(shortcut.shape[1:]) != tuple(y.shape[1:]):
            shortcut = keras.layers.Conv2D(block.filters, 1, strides=block.strides, padding="same",
                                           name=f"block{i}_shortcut")(shortcut)
        y = keras.layers.Add(name=f"block{i}_add")([y, shortcut])
    y = keras.layers.Activation(block.activation, name=f"block{i}_act")(y)
    if block.pooling == "max":
        y = keras.layers.MaxPooling2D(2, padding="same", name=f"block{i}_pool")(y)
    elif block.pooling == "avg":
        y = keras.layers.AveragePooling2D(2, padding="same", name=f"block{i}_pool")(y)
    if block.dropout:
        y = keras.layers.Dropout(block.dropout, name=f"block{i}_dropout")(y)
    return y


def _application(backbone: Backbone, input_shape):
    if backbone.weights not in (None, "imagenet") and not os.path.isfile(backbone.weights):
        raise FileNotFoundError(
            f"Invalid value for `backbone.weights` in the model spec. Received: {backbone.weights!r}, "
            "which is not a file. Expected null, 'imagenet' or the path of a local weights file."
        )
    function = getattr(keras.applications, backbone.application)
    # A local file is loaded below, as the application itself would (`model.load_weights`), so that
    # a file it cannot load is told apart from arguments it refuses.
    local = backbone.weights not in (None, "imagenet")
    try:
        model = function(include_top=False, weights=None if local else backbone.weights, input_shape=input_shape,
                         **backbone.options)
    except Exception as error:
        if backbone.weights == "imagenet" and "fetch failure" in str(error):
            raise _download_error(backbone.application, error) from None
        if not isinstance(error, (ValueError, TypeError)):
            raise
        hint = (" Set `preprocessing.resizing` to a size it accepts (most need at least 32x32)."
                if re.search(r"size|shape", str(error), re.IGNORECASE) else "")
        raise type(error)(
            f"keras.applications.{backbone.application} refused the spec (`backbone`, with options "
            f"{dict(backbone.options)}) for images of shape {input_shape}: {error}{hint}"
        ) from None
    if local:
        try:
            model.load_weights(backbone.weights)
        except Exception as error:  # noqa: BLE001 - h5py, Keras and file errors alike
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(
                f"Invalid value for `backbone.weights` in the model spec. Received: {backbone.weights!r}, which "
                f"keras.applications.{backbone.application}(include_top=False, input_shape={input_shape}, "
                f"**{dict(backbone.options)}) cannot load: {reason}. Expected a weights file saved from that "
                "same backbone (`model.save_weights`), or null or 'imagenet'."
            ) from None
    model.name = "backbone"
    if backbone.fine_tune is not None:
        unfreeze = backbone.fine_tune.unfreeze
        top = model.layers if unfreeze == "all" else model.layers[-unfreeze:]
        for layer in model.layers:
            # BatchNormalization never trains: its statistics stay the pretrained ones.
            layer.trainable = any(layer is t for t in top) and not isinstance(layer, keras.layers.BatchNormalization)
    elif backbone.fine_tune_layers is not None:
        frozen = len(model.layers) - backbone.fine_tune_layers
        for layer in model.layers[:max(frozen, 0)]:
            layer.trainable = False
    return model


def _download_error(application: str, error: Exception) -> RuntimeError:
    url = re.search(r"https?://\S+?(?=[:\s]|$)", str(error))
    name = os.path.basename(url.group(0)) if url else f"the {application} ImageNet weights file"
    cache = os.path.join(os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")), "models")
    source = f" (from {url.group(0)})" if url else ""
    return RuntimeError(
        f"Could not download the ImageNet weights of keras.applications.{application} (`backbone.weights: "
        f"imagenet`): offline, place {name}{source} at {os.path.join(cache, name)}, or set `backbone.weights` to "
        "the path of a local weights file."
    )


class FineTuning(keras.callbacks.Callback):
    """Switches two-phase fine-tuning (`backbone.fine_tune` in a spec) at
    the start of every epoch, so a resumed fold lands in the right phase.

    Phase 1 (epochs before `freeze_epochs`): the backbone's gradient gate
    is closed and the learning rate is `learning_rate`. Phase 2: the gate
    opens (the top `unfreeze` layers train) and the learning rate becomes
    `learning_rate * learning_rate_factor`.

    Args:
        freeze_epochs: `int`. Epochs of phase 1.
        learning_rate: `float`. The spec's learning rate.
        learning_rate_factor: `float`. Its factor in phase 2.

    Example:

    >>> builder = tfcv.ModelBuilder(spec)
    >>> cv.fit(x, y, epochs=10, callbacks=builder.callbacks())
    """

    def __init__(self, freeze_epochs: int, learning_rate: float, learning_rate_factor: float):
        super().__init__()
        self.freeze_epochs = int(freeze_epochs)
        self.learning_rate = float(learning_rate)
        self.learning_rate_factor = float(learning_rate_factor)

    def on_epoch_begin(self, epoch, logs=None):
        fine_tuning = epoch >= self.freeze_epochs
        gates = [layer for layer in self.model.layers if layer.name == _GATE]
        if not gates:
            raise ValueError(
                f"FineTuning needs a model built from a spec with `backbone.fine_tune`; model "
                f"{self.model.name!r} has no layer {_GATE!r}."
            )
        for gate in gates:
            gate.gate.assign(1.0 if fine_tuning else 0.0)
        factor = self.learning_rate_factor if fine_tuning else 1.0
        self.model.optimizer.learning_rate.assign(self.learning_rate * factor)


def _text(text, x):
    x = keras.layers.TextVectorization(max_tokens=text.max_tokens, output_sequence_length=text.sequence_length,
                                       name="vectorize")(x)
    x = keras.layers.Embedding(text.max_tokens, text.embedding_dim, name="embedding")(x)
    if text.filters:
        x = keras.layers.Conv1D(text.filters, min(text.kernel_size, text.sequence_length), activation="relu",
                                name="conv")(x)
    return x


def _head(head: Head, x):
    tokens = len(x.shape) == 3
    if head.pooling == "avg":
        pool = keras.layers.GlobalAveragePooling1D if tokens else keras.layers.GlobalAveragePooling2D
        x = pool(name="head_pool")(x)
    elif head.pooling == "max":
        pool = keras.layers.GlobalMaxPooling1D if tokens else keras.layers.GlobalMaxPooling2D
        x = pool(name="head_pool")(x)
    else:
        x = keras.layers.Flatten(name="head_flatten")(x)
    for i, units in enumerate(head.units, start=1):
        x = keras.layers.Dense(units, activation=head.activation, name=f"head_dense{i}")(x)
        if head.dropout:
            x = keras.layers.Dropout(head.dropout, name=f"head_dropout{i}")(x)
    if not head.units and head.dropout:
        x = keras.layers.Dropout(head.dropout, name="head_dropout")(x)
    return x


def _compile_arguments(spec: ModelSpec) -> dict:
    training = spec.training
    learning_rate = _learning_rate(training.learning_rate, training.schedule)
    if isinstance(training.optimizer, Mapping):
        name = training.optimizer["name"]
        arguments = {k: copy.deepcopy(v) for k, v in training.optimizer.items() if k != "name"}
    else:
        name, arguments = training.optimizer, {}
    optimizer = optimizer_class(name)(learning_rate=learning_rate, **arguments)

    multiclass = spec.task == "classification" and spec.num_classes > 2
    smoothing = training.label_smoothing
    if training.loss == "auto":
        if spec.task == "regression":
            loss = "mean_squared_error"
        elif multiclass:
            loss = ClassCrossentropy(label_smoothing=smoothing)
        else:
            loss = keras.losses.BinaryCrossentropy(label_smoothing=smoothing)
    elif smoothing and training.loss == "categorical_crossentropy":
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
    elif smoothing and training.loss == "binary_crossentropy":
        loss = keras.losses.BinaryCrossentropy(label_smoothing=smoothing)
    else:
        loss = training.loss

    if training.metrics == "auto":
        metrics = ["accuracy"] if spec.task == "classification" else ["mae"]
    else:
        metrics = list(training.metrics)
    if multiclass and training.loss == "auto":
        # "accuracy" would pick sparse or categorical accuracy from the first
        # batch's labels; this one takes both, as the loss does.
        metrics = [ClassAccuracy(name="accuracy") if m in ("accuracy", "acc") else m for m in metrics]
    return {"optimizer": optimizer, "loss": loss, "metrics": metrics}


def _learning_rate(value: float, schedule: Mapping | None):
    if schedule is None:
        return value
    name = schedule["name"]
    schedules = keras.optimizers.schedules
    if name == "exponential":
        return schedules.ExponentialDecay(value, schedule["decay_steps"], schedule["decay_rate"],
                                          staircase=schedule["staircase"])
    warmup = schedule["warmup_steps"]
    if name == "constant":
        if not warmup:
            return value
        # CosineDecay with alpha=1 never decays: a warmup, then a constant.
        return schedules.CosineDecay(0.0, 1, alpha=1.0, warmup_target=value, warmup_steps=warmup)
    if warmup:
        return schedules.CosineDecay(0.0, schedule["decay_steps"], alpha=schedule["alpha"],
                                     warmup_target=value, warmup_steps=warmup)
    return schedules.CosineDecay(value, schedule["decay_steps"], alpha=schedule["alpha"])
