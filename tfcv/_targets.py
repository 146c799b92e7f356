"""The targets and inputs, checked against the model before any training.

`CrossValidator.fit` builds fold 0's model first (to fingerprint the run);
`check_against_model` then compares the data with that model, so that labels
the model cannot output, samples of the wrong shape and data with nothing to
learn are refused in tfcv's words before any fold trains. Left alone they
fail deep inside TensorFlow ("Graph execution error") or, worse, train
silently on nothing: a one-hot encoding of a label >= the output units is a
row of zeros, which the loss scores as zero.

The fold sources call the data-only checks as they read the data:
`check_samples` and `read_targets` on in-memory arrays (string class labels
become integers, sorted as scikit-learn's `LabelEncoder` sorts them, and keep
their names), `check_element` and `check_fold_labels` on every dataset a
fold streams.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import keras
import numpy as np

from tfcv import _checks

_REGRESSION_LOSSES = ("meansquared", "mse", "meanabsolute", "mae", "huber", "logcosh", "mape", "msle", "poisson",
                      "cosine")


class DataView(NamedTuple):
    """What a fold source shows of its data for the checks.

    `sample_shape` and `sample_text` describe one sample of `x` (`None` when
    the samples are not one tensor); `labels` are the targets (all of them,
    or fold 0's validation targets for streamed folds, `complete=False`);
    `where` names them in messages; `class_names` are the names of string
    labels already mapped to integers.
    """

    sample_shape: tuple | None
    sample_text: bool
    labels: np.ndarray
    where: str
    complete: bool
    class_names: list[str] | None = None


# ------------------------------------------------- reading the data


def check_samples(x: Any) -> np.ndarray:
    """`x` as an array of samples that TensorFlow can take.

    Raises:
        TypeError: `x` is an object array of anything but strings or bytes
            (ragged samples, `None`, Python objects).
        ValueError: Its samples have different shapes, or it holds NaN or
            infinite values.
    """
    try:
        x = np.asarray(x)
    except ValueError as error:
        raise ValueError(
            f"Invalid value for argument `x`: its samples do not all have one shape ({error}). Expected an "
            "array of samples of one shape: pad or resize them first, or pass a callable returning tf.data "
            "datasets as `x`."
        ) from None
    if x.dtype == object and x.size:
        odd = next((v for v in x.flat if not isinstance(v, (str, bytes))), None)
        text = [isinstance(v, str) for v in x.flat]
        if odd is not None or (any(text) and not all(text)):
            kind = type(odd).__name__ if odd is not None else "str and bytes"
            raise TypeError(
                f"Invalid value for argument `x`. Received: an array of dtype object and shape {x.shape} "
                f"holding {kind} values. Expected a numeric array (or strings, for a model that takes text): "
                "convert it with np.asarray(x, dtype='float32'), or np.stack(...) its samples if they are arrays."
            )
    check_finite("x", x)
    return x


def read_targets(y: Any) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """`y` as given (for fingerprints and fold plans), `y` as the model
    trains on it, and the class names of string labels.

    String labels (`str`, `bytes`, or an object array of them) become
    `int64` indices into their sorted unique values, as scikit-learn's
    `LabelEncoder` maps them; the sorted values are the class names. Other
    targets are returned as they are.

    Raises:
        TypeError: `y` is an object array of anything but strings or
            numbers.
        ValueError: `y` is a scalar, string labels are not one per sample,
            or numeric targets hold NaN or infinite values.
    """
    y = np.asarray(y)
    if y.ndim == 0:
        raise _checks.invalid_argument("y", y.item(), "an array of targets, one per sample")
    if y.dtype == object and y.size:
        if all(isinstance(v, (str, bytes)) for v in y.flat):
            y = y.astype(str if isinstance(y.flat[0], str) else bytes)
        elif all(_checks.is_real(v) or isinstance(v, (bool, np.bool_)) for v in y.flat):
            y = np.asarray(y.tolist())
        else:
            odd = next(v for v in y.flat if not (_checks.is_real(v) or isinstance(v, (str, bytes, bool, np.bool_))))
            raise TypeError(
                f"Invalid value for argument `y`. Received: an array of dtype object holding "
                f"{type(odd).__name__} values ({odd!r}). Expected numbers (class labels or regression targets) or "
                "strings (class names): drop or impute the samples without a target."
            )
    if y.dtype.kind not in "US":
        check_finite("y", y)
        return y, y, None
    if y.ndim > 2 or (y.ndim == 2 and y.shape[1] != 1):
        raise ValueError(
            f"Invalid value for argument `y`. Received: string labels of shape {y.shape}. Expected one class "
            f"name per sample, of shape ({len(y)},)."
        )
    names, codes = np.unique(y.reshape(len(y)), return_inverse=True)
    class_names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names.tolist()]
    return y, codes.astype("int64"), class_names


def check_finite(name: str, values: np.ndarray, *, where: str | None = None) -> None:
    """Refuses NaN and infinite values, naming the first rows that hold them.

    Args:
        name: `str`. The argument (`"x"` or `"y"`).
        values: The array, one row per sample.
        where: `str` or `None`. Names the values instead of the argument
            (such as "fold 0's validation labels").
    """
    if values.ndim == 0 or not (np.issubdtype(values.dtype, np.number) and not np.issubdtype(values.dtype, np.integer)):
        return
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    rows = np.unique(np.nonzero(bad.reshape(len(values), -1))[0])
    kinds = []
    if np.isnan(values).any():
        kinds.append("NaN")
    if np.isinf(values).any():
        kinds.append("infinite")
    subject = f"Invalid value for argument `{name}`: it holds" if where is None else f"{where[0].upper()}{where[1:]} hold"
    raise ValueError(
        f"{subject} {' and '.join(kinds)} values in {len(rows)} samples (first rows: {rows[:5].tolist()}). "
        "Expected finite numbers; impute or drop those samples first."
    )


def check_fold_labels(labels: np.ndarray, k: int) -> None:
    """Refuses validation labels of fold `k`'s dataset that are strings or
    hold NaN or infinite values (a dataset's labels are the user's to map)."""
    where = f"fold {k}'s validation labels"
    if labels.dtype.kind in "USO":
        raise ValueError(
            f"Invalid value for argument `y`: {where} are strings {_preview(np.unique(labels).tolist())}. Expected "
            "integer class labels: map them in the dataset, for example with "
            "keras.layers.StringLookup(vocabulary=[...], num_oov_indices=0) applied to the labels."
        )
    check_finite("y", labels, where=where)


def check_element(element_spec: Any, k: int, name: str) -> None:
    """Refuses a fold dataset whose elements are not `(x, y)` pairs (or
    `(x, y, sample_weight)` triples).

    Raises:
        ValueError: Naming the fold, the dataset and what its elements are.
    """
    if isinstance(element_spec, tuple) and len(element_spec) in (2, 3):
        return
    raise ValueError(
        f"Fold {k}: `{name}` yields {_describe_element(element_spec)}, not (x, y) pairs, so it holds no labels. "
        "Expected batches of (x, y): map each element to (features, label), or load a TFDS dataset with "
        "as_supervised=True."
    )


def _describe_element(spec) -> str:
    if isinstance(spec, dict):
        return f"dicts with keys {sorted(spec)}"
    if isinstance(spec, tuple):
        return f"tuples of {len(spec)} {'element' if len(spec) == 1 else 'elements'}"
    shape = getattr(spec, "shape", None)
    if shape is not None:
        return f"single tensors of shape {tuple(shape)}"
    return f"elements of type {type(spec).__name__}"


# ------------------------------------------------- against the model


def check_against_model(source, model, task: str) -> dict:
    """Checks the data of `source` against fold 0's `model`, before training.

    Checked: `x`'s per-sample shape and kind (numbers or text) against the
    model's input; for classification, that there are at least two classes
    and that every integer label is one the model can output
    (`0 <= y < units`, `0` or `1` for one output unit) or, for one-hot
    labels, that their width is the output units, and that every compiled
    metric takes labels of that format (`tfcv.metrics.check_metric_labels`);
    for regression, that the target varies and has one value per output
    unit; string labels with a regression model or task are refused.

    Args:
        source: A fold source of `tfcv._fold_sources` (its `view()`).
        model: The compiled `keras.Model` built for fold 0.
        task: `"classification"` or `"regression"`.

    Returns:
        What the run records about its targets: `{"class_names": [...]}`
        for string labels, else `{}`.

    Raises:
        ValueError: Data the model cannot train on, with what it expects.
        TypeError: Text samples for a numeric input, or the reverse.
    """
    view = source.view()
    model_input, model_output = _only(model, "inputs"), _only(model, "outputs")
    if model_input is not None and view.sample_shape is not None:
        _check_input(view, model_input)
    loss_kind = _loss_kind(model)
    if view.class_names is not None and (task == "regression" or loss_kind == "regression"):
        reason = "task='regression'" if task == "regression" else f"the model's loss ({_loss_name(model)}) is a regression loss"
        raise ValueError(
            f"Invalid value for argument `y`. Received: string labels {_preview(view.class_names)}. Expected "
            f"numbers: {reason}, and class names cannot be regressed. Train a classifier on them (a softmax "
            f"over {len(view.class_names)} classes with task='classification'), or convert y to numbers "
            "first (y.astype('float32') if they are numbers written as text)."
        )
    units = _units(model_output)
    if task == "classification" and loss_kind == "regression" and view.labels.dtype.kind in "iub":
        _check_class_indices_for_loss(view.labels, units, model)
    if task == "classification" and loss_kind != "regression":
        _check_classes(view, units, model_output, model)
        from tfcv.metrics import check_metric_labels

        check_metric_labels(model, view.labels, where=view.where)
    elif task == "regression":
        _check_regression_target(view, units, model_output, model)
    return {"class_names": view.class_names} if view.class_names is not None else {}


def _check_input(view: DataView, model_input) -> None:
    expected = tuple(model_input.shape)[1:]
    text_input = str(model_input.dtype) == "string"
    if view.sample_text != text_input:
        received = "text (strings)" if view.sample_text else "numbers"
        raise TypeError(
            f"Invalid value for argument `x`. Received: x holds {received}. Expected "
            f"{'text' if text_input else 'numbers'}: the model's input takes {model_input.dtype} "
            f"(input shape {tuple(model_input.shape)})."
        )
    if _fits(view.sample_shape, expected):
        return
    shown = tuple("?" if d is None else d for d in expected)
    hint = ""
    known = [d for d in view.sample_shape if d is not None]
    if None not in expected and len(known) == len(view.sample_shape) and np.prod(known) == np.prod(expected):
        hint = f" Reshape it: x.reshape(-1, {', '.join(map(str, expected))})."
    raise ValueError(
        f"Invalid value for argument `x`: x has samples of shape {view.sample_shape}, the model expects "
        f"{shown} (input shape {tuple(model_input.shape)}).{hint}"
    )


def _fits(sample: tuple, expected: tuple) -> bool:
    # Keras' functional models drop or add a trailing axis of size 1
    # (Functional._adjust_input_rank): (n, 8, 8) feeds an (8, 8, 1) input.
    if len(sample) == len(expected) + 1 and sample[-1] == 1:
        sample = sample[:-1]
    elif len(sample) + 1 == len(expected) and expected[-1] == 1:
        expected = expected[:-1]
    return len(sample) == len(expected) and all(
        s is None or e is None or s == e for s, e in zip(sample, expected)
    )


def _check_classes(view: DataView, units: int | None, model_output, model) -> None:
    labels = view.labels
    output = f"output shape {tuple(model_output.shape)}" if model_output is not None else "its output"
    loss = _loss_name(model).lower().replace("_", "")
    if _is_one_hot(labels):
        if units is not None and labels.shape[1] != units:
            raise ValueError(
                f"Invalid value for argument `y`. Received: one-hot labels of width {labels.shape[1]}. Expected "
                f"width {units}, the model's output units ({output}): give the model {labels.shape[1]} output "
                "units, or pass labels of that width."
            )
        if "sparse" in loss:
            raise ValueError(
                f"Invalid value for argument `y`. Received: one-hot labels of width {labels.shape[1]}. Expected "
                f"integer labels: the model's loss ({_loss_name(model)}) takes class indices. Pass "
                "y.argmax(axis=1), or compile with categorical_crossentropy."
            )
        classes = np.unique(labels.argmax(axis=1))
    elif labels.dtype.kind in "iub" or np.all(np.mod(labels, 1) == 0):
        classes = np.unique(labels)
        if units is not None and classes.size:
            _check_label_range(view, classes, units, output)
        _check_class_indices_for_loss(labels, units, model)
    else:
        return
    if view.complete and classes.size < 2:
        only = view.class_names[int(classes[0])] if view.class_names and classes.size else _py(classes[0])
        raise ValueError(
            f"Invalid value for argument `y`. Received: y with a single class ({only!r}) in all {len(labels)} "
            "samples. Expected at least two classes: a classifier that only ever sees one class has nothing "
            "to learn, and its scores mean nothing."
        )


def _check_class_indices_for_loss(labels: np.ndarray, units: int | None, model) -> None:
    """Refuses one class index per sample for several output units when the
    loss is one of Keras' own that compares labels with outputs element by
    element (every Keras loss but the sparse ones): categorical losses fail
    inside the graph, and others (mse, hinge, ...) broadcast `(n, 1)` labels
    over the units and train on nonsense. A loss of the user's own is
    trusted."""
    loss = _loss_name(model).lower().replace("_", "")
    if "sparse" in loss or (units or 0) < 2 or labels.size != len(labels) or not _is_keras_loss(model):
        return
    raise ValueError(
        f"Invalid value for argument `y`. Received: integer class labels of shape {labels.shape}. Expected "
        f"one-hot rows of width {units}: the model's loss ({_loss_name(model)}) compares the labels with its "
        f"{units} output units one by one. Pass keras.utils.to_categorical(y, {units}), or compile with "
        "sparse_categorical_crossentropy."
    )


def _is_keras_loss(model) -> bool:
    """Whether the compiled loss is one of Keras' own (by name, class or function)."""
    loss = _single_loss(model)
    if isinstance(loss, str):
        try:
            keras.losses.get(loss)
        except (ValueError, TypeError):
            return False
        return True
    return (getattr(loss, "__module__", None) or "").startswith("keras.")


def _is_one_hot(labels: np.ndarray) -> bool:
    """One-hot, smoothed or mixed label rows (each sums to 1), as opposed to
    integer labels of shape `(n, 1)` or one label per position."""
    if labels.ndim != 2 or labels.shape[1] < 2:
        return False
    values = labels.astype("float64")
    return bool(np.all((values >= 0) & (values <= 1)) and np.allclose(values.sum(axis=1), 1))


def _check_label_range(view: DataView, classes: np.ndarray, units: int, output: str) -> None:
    low, high = _py(classes.min()), _py(classes.max())
    if view.class_names is not None:
        received = (f"{len(view.class_names)} class names {_preview(view.class_names)}, mapped to labels 0 to "
                    f"{len(view.class_names) - 1} in sorted order")
    else:
        received = f"class labels from {low} to {high} ({classes.size} classes)"
    if view.where != "y":
        received = f"{view.where}: {received}"
    needed = max(int(high) + 1, 2)
    if units == 1:
        if low >= 0 and high <= 1:
            return
        raise ValueError(
            f"Invalid value for argument `y`. Received: {received}. Expected labels 0 and 1: the model has one "
            f"output unit, a binary classifier ({output}). For {needed} classes give it {needed} output units "
            f"with a softmax (num_classes: {needed} in a model spec); for a numeric target pass task='regression'."
        )
    if low >= 0 and high < units:
        return
    if low < 0:
        problem = f"label {low} is negative"
        fix = "Map the labels to 0, 1, ... first (sklearn.preprocessing.LabelEncoder does)."
    else:
        problem = f"labels go up to {high} but the model outputs {units} classes"
        fix = f"Give the model {needed} output units (num_classes: {needed} in a model spec), or relabel y."
    raise ValueError(
        f"Invalid value for argument `y`. Received: {received}. Expected labels 0 <= y < {units}: {problem} "
        f"({output}). {fix}"
    )


def _check_regression_target(view: DataView, units: int | None, model_output, model) -> None:
    labels = view.labels
    columns = labels.reshape(len(labels), -1).astype("float64")
    width = columns.shape[1]
    if units is not None and model_output is not None and len(model_output.shape) <= 2 and width != units:
        fractional = columns[np.mod(columns, 1) != 0]
        if _loss_kind(model) == "classification" and fractional.size:
            raise ValueError(
                f"Invalid value for argument `y`. Received: y with values that are not class labels (such as "
                f"{_py(fractional[0])}), read as a regression target of {width} value(s) per sample, for a model "
                f"with {units} outputs and a classification loss ({_loss_name(model)}). Expected integer class "
                f"labels 0 to {units - 1}, class names, or one-hot rows of width {units}; or a regression model "
                "and loss for this target."
            )
        raise ValueError(
            f"Invalid value for argument `y`. Received: y with {width} values per sample (shape "
            f"{labels.shape}). Expected {units}, the model's outputs per sample (output shape "
            f"{tuple(model_output.shape)}): a loss would broadcast one against the other."
        )
    if not view.complete or not len(columns):
        return
    constant = np.nonzero(np.ptp(columns, axis=0) == 0)[0]
    if constant.size:
        which = "" if width == 1 else f" in column {int(constant[0])} (of {width})"
        raise ValueError(
            f"Invalid value for argument `y`. Received: a constant target{which}: all {len(columns)} values are "
            f"{_py(columns[0, constant[0]])}. Expected a target that varies: against a constant target every "
            "score (r2 in particular) is meaningless."
        )


# ------------------------------------------------- what the model is


def _only(model, attribute: str):
    """The model's one input (or output) tensor; `None` for a model with
    several, or one not built on symbolic inputs (a subclassed model)."""
    try:
        tensors = getattr(model, attribute)
    except (AttributeError, ValueError):
        return None
    if tensors is None:
        return None
    if not isinstance(tensors, (list, tuple)):
        tensors = [tensors]
    if len(tensors) != 1 or getattr(tensors[0], "shape", None) is None:
        return None
    return tensors[0]


def output_units(model) -> int | None:
    """The output units of a model with one symbolic output (`1` for an
    output of shape `(batch,)`); `None` for several outputs, a subclassed
    model or a last dimension not known before the model is called."""
    return _units(_only(model, "outputs"))


def _units(model_output) -> int | None:
    if model_output is None:
        return None
    shape = tuple(model_output.shape)
    if len(shape) < 2:
        return 1
    return shape[-1] if _checks.is_int(shape[-1]) else None


def _single_loss(model):
    """The compiled loss, unwrapped from a one-output list or dict."""
    loss = getattr(model, "loss", None)
    if isinstance(loss, (list, tuple)) and len(loss) == 1:
        loss = loss[0]
    if isinstance(loss, dict) and len(loss) == 1:
        loss = next(iter(loss.values()))
    return loss


def _loss_name(model) -> str:
    loss = _single_loss(model)
    if isinstance(loss, str):
        return loss
    return getattr(loss, "__name__", None) or type(loss).__name__


def _loss_kind(model) -> str | None:
    """`"classification"`, `"regression"`, or `None` when the compiled loss
    does not say."""
    name = _loss_name(model).lower().replace("_", "")
    if "crossentropy" in name or "hinge" in name or "focal" in name:
        return "classification"
    if any(part in name for part in _REGRESSION_LOSSES):
        return "regression"
    return None


def _preview(names) -> str:
    shown = ", ".join(repr(_py(n)) for n in list(names)[:4])
    return f"({shown}{', ...' if len(names) > 4 else ''})"


def _py(value):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
