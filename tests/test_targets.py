"""The targets and inputs, checked against the model before any training
(tfcv/_targets.py): labels the model cannot output, data with nothing to
learn, samples of the wrong shape or kind, datasets without labels, and
string labels mapped to integers with their class names kept."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcv
from tests.conftest import tfcv_in_process, tiny_classifier

NAMES = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])


@pytest.fixture()
def tiny_xy(small_digits):
    x, y = small_digits
    return x[:80].copy(), y[:80].copy()


class _Training(keras.callbacks.Callback):
    """Counts the `fit` calls that started."""

    def __init__(self):
        super().__init__()
        self.started = 0

    def on_train_begin(self, logs=None):
        self.started += 1


def refused(tmp_path, build, x, y, error, match, *, folds=2, task="auto", **fit_kwargs):
    """Asserts that `fit` raises `error` matching `match`, with at most the
    one model built for the check and nothing trained or written; returns
    the message."""
    built = []

    def counted():
        built.append(1)
        return build()

    training = _Training()
    run_dir = tmp_path / "run"
    cv = tfcv.CrossValidator(counted, folds=folds, task=task)
    with pytest.raises(error, match=match) as info:
        cv.fit(x, y, epochs=1, verbose=0, callbacks=[training], run_dir=run_dir, **fit_kwargs)
    assert len(built) <= 1 and training.started == 0
    assert not list(run_dir.glob("fold_*")) if run_dir.exists() else True
    return str(info.value)


def dense_model(input_shape, units, *, activation=None, loss="mse"):
    inputs = keras.Input(input_shape)
    outputs = keras.layers.Dense(units, activation=activation)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(0.01), loss)
    return model


# ------------------------------------------------- labels against the output units


def test_labels_beyond_the_output_units_are_refused(tiny_xy, tmp_path):
    # The case: a 3-class model on the 10 digits trained silently to accuracy 0.10.
    x, y = tiny_xy
    message = refused(tmp_path, lambda: tiny_classifier(num_classes=3), x, y, ValueError,
                      "labels go up to 9 but the model outputs 3 classes")
    assert message.startswith("Invalid value for argument `y`. Received: class labels from 0 to 9 (10 classes).")
    assert "num_classes: 10" in message


def test_labels_beyond_a_spec_models_classes_are_refused(tiny_xy, tmp_path):
    # The spec's softmax head with its own loss (ClassCrossentropy), as `tfcv run` builds it.
    x, y = tiny_xy
    spec = tfcv.ModelSpec.from_dict({"input_shape": [8, 8, 1], "num_classes": 3})
    refused(tmp_path, tfcv.ModelBuilder(spec), x, y, ValueError, "Expected labels 0 <= y < 3")


def test_negative_labels_are_refused(tiny_xy, tmp_path):
    x, y = tiny_xy
    refused(tmp_path, tiny_classifier, x, y - 1, ValueError, "label -1 is negative.*LabelEncoder")


def test_one_output_unit_takes_labels_0_and_1_only(tiny_xy, tmp_path):
    x, y = tiny_xy
    sigmoid = lambda: dense_model((8, 8, 1), 1, activation="sigmoid", loss="binary_crossentropy")  # noqa: E731
    refused(tmp_path, sigmoid, x, y, ValueError, "Expected labels 0 and 1: the model has one output unit")
    binary = (y >= 5).astype("int64")
    result = tfcv.CrossValidator(sigmoid, folds=2).fit(x, binary, epochs=1, verbose=0)
    assert result.task == "classification" and result.n_folds == 2


def test_one_hot_labels_must_be_as_wide_as_the_output(tiny_xy, tmp_path):
    x, y = tiny_xy
    one_hot = np.eye(10, dtype="float32")[y]
    categorical = lambda: dense_model((8, 8, 1), 10, activation="softmax", loss="categorical_crossentropy")  # noqa: E731
    refused(tmp_path, categorical, x, np.eye(5, dtype="float32")[y % 5], ValueError,
            "one-hot labels of width 5. Expected width 10")
    result = tfcv.CrossValidator(categorical, folds=2).fit(x, one_hot, epochs=1, verbose=0)
    assert result.n_folds == 2
    # Each Keras loss takes one of the two formats; the other fails inside the graph.
    refused(tmp_path, tiny_classifier, x, one_hot, ValueError,
            r"one-hot labels of width 10. Expected integer labels: the model's loss \(sparse_categorical_crossentropy\)")
    refused(tmp_path, categorical, x, y, ValueError, r"Expected one-hot rows of width 10.*to_categorical\(y, 10\)")


@pytest.mark.parametrize("loss", ["mse", "hinge", "kl_divergence", "binary_crossentropy",
                                  keras.losses.MeanSquaredError(), keras.losses.poisson])
def test_class_indices_are_refused_by_every_keras_loss_that_compares_them_unit_by_unit(tiny_xy, tmp_path, loss):
    # Keras' own losses other than the sparse ones compare the labels with the
    # outputs element by element: (n,) labels failed inside the graph
    # ("Incompatible shapes: [32] vs. [32,10]") and (n, 1) ones broadcast.
    x, y = tiny_xy
    build = lambda: dense_model((8, 8, 1), 10, activation="softmax", loss=loss)  # noqa: E731
    for labels in (y, y[:, None]):
        refused(tmp_path, build, x, labels, ValueError,
                r"integer class labels of shape \(80,( 1)?\)\. Expected one-hot rows of width 10: the model's loss "
                r"\(\w+\) compares the labels with its 10 output units.*to_categorical\(y, 10\)")
    if loss == "mse":  # once: the format it takes trains, and a loss of the user's own is trusted
        assert tfcv.CrossValidator(build, folds=2).fit(x, np.eye(10, dtype="float32")[y], epochs=1,
                                                       verbose=0).n_folds == 2

        def own_loss(labels, outputs):
            return keras.losses.sparse_categorical_crossentropy(labels, outputs)

        own = lambda: dense_model((8, 8, 1), 10, activation="softmax", loss=own_loss)  # noqa: E731
        assert tfcv.CrossValidator(own, folds=2).fit(x, y, epochs=1, verbose=0).n_folds == 2


def test_fractional_labels_for_a_classifier_are_named_as_not_class_labels(tiny_xy, tmp_path):
    # Read as a regression target (task="auto"), they met the softmax's 10
    # outputs with "y with 1 values per sample ... Expected 10".
    x, y = tiny_xy
    refused(tmp_path, tiny_classifier, x, y + 0.5, ValueError,
            r"y with values that are not class labels \(such as \d\.5\), read as a regression target of 1 "
            r"value\(s\) per sample, for a model with 10 outputs and a classification loss "
            r"\(sparse_categorical_crossentropy\)\. Expected integer class labels 0 to 9")
    # A regression model's width mismatch keeps its own message.
    refused(tmp_path, lambda: dense_model((8, 8, 1), 3), x, y + 0.5, ValueError,
            r"y with 1 values per sample .*Expected 3, the model's outputs per sample")


# ------------------------------------------------- nothing to learn


def test_a_single_class_is_refused(tiny_xy, tmp_path):
    x, _ = tiny_xy
    refused(tmp_path, tiny_classifier, x, np.full(len(x), 7), ValueError,
            r"single class \(7\) in all 80 samples. Expected at least two classes")
    refused(tmp_path, tiny_classifier, x, np.full(len(x), "cat"), ValueError, r"single class \('cat'\)")


def test_a_constant_regression_target_is_refused(tmp_path, rng):
    x = rng.normal(size=(60, 4)).astype("float32")
    build = lambda: dense_model((4,), 1)  # noqa: E731
    refused(tmp_path, build, x, np.full(60, 3.5, "float32"), ValueError,
            "a constant target: all 60 values are 3.5")
    two = np.stack([rng.normal(size=60), np.zeros(60)], axis=1).astype("float32")
    refused(tmp_path, lambda: dense_model((4,), 2), x, two, ValueError, r"constant target in column 1 \(of 2\)")


def test_a_regression_target_must_match_the_outputs(tmp_path, rng):
    # MSE would broadcast (n, 3) targets against (n, 1) predictions without a word.
    x = rng.normal(size=(60, 4)).astype("float32")
    refused(tmp_path, lambda: dense_model((4,), 1), x, rng.normal(size=(60, 3)).astype("float32"), ValueError,
            r"y with 3 values per sample \(shape \(60, 3\)\). Expected 1")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_in_y_are_refused_with_their_rows(tiny_xy, tmp_path, bad):
    x, y = tiny_xy
    y = y.astype("float32")
    y[[3, 9]] = bad
    kind = "NaN" if np.isnan(bad) else "infinite"
    message = refused(tmp_path, tiny_classifier, x, y, ValueError,
                      rf"argument `y`: it holds {kind} values in 2 samples \(first rows: \[3, 9\]\)")
    assert "impute or drop" in message


# ------------------------------------------------- string labels


def test_string_labels_are_mapped_to_sorted_integers_and_learned(small_digits, tmp_path):
    x, y = small_digits
    names = NAMES[y]
    run_dir = tmp_path / "run"
    result = tfcv.CrossValidator(tiny_classifier, folds=2, seed=1).fit(
        x, names, epochs=2, batch_size=32, run_dir=run_dir, verbose=0
    )
    assert result.info["class_names"] == sorted(NAMES.tolist())
    # Chance is 0.1: the names were learned as ten classes.
    assert result.mean("accuracy") > 0.3
    # Sorted as LabelEncoder sorts: the same run as on its integer codes.
    codes = np.searchsorted(np.array(sorted(NAMES.tolist())), names)
    coded = tfcv.CrossValidator(tiny_classifier, folds=2, seed=1).fit(x, codes, epochs=2, batch_size=32, verbose=0)
    assert coded.scores == result.scores
    np.testing.assert_array_equal(coded.oof_predictions, result.oof_predictions)
    predicted = np.array(result.info["class_names"])[result.oof_predictions.argmax(axis=1)]
    assert np.mean(predicted == names) == pytest.approx(np.mean(coded.oof_predictions.argmax(axis=1) == codes))
    assert tfcv.CVResult.load(run_dir).info["class_names"] == result.info["class_names"]

    # The same labels, as pandas hands them over (dtype object), are the same run: its folds are reused.
    training = _Training()
    again = tfcv.CrossValidator(tiny_classifier, folds=2, seed=1).fit(
        x, names.astype(object), epochs=2, batch_size=32, run_dir=run_dir, verbose=0, callbacks=[training]
    )
    assert training.started == 0 and again.scores == result.scores
    # Other names for the same classes are other data.
    with pytest.raises(ValueError, match="holds a different run: the data differs"):
        tfcv.CrossValidator(tiny_classifier, folds=2, seed=1).fit(
            x, np.char.upper(names), epochs=2, batch_size=32, run_dir=run_dir, verbose=0
        )


def test_string_labels_beyond_the_output_units_name_the_classes(tiny_xy, tmp_path):
    x, y = tiny_xy
    refused(tmp_path, lambda: tiny_classifier(num_classes=3), x, NAMES[y], ValueError,
            r"10 class names \('eight', 'five', 'four', 'nine', \.\.\.\), mapped to labels 0 to 9")


def test_string_labels_cannot_be_regressed(tiny_xy, tmp_path):
    x, y = tiny_xy
    refused(tmp_path, tiny_classifier, x, NAMES[y], ValueError,
            "task='regression', and class names cannot be regressed", task="regression")
    message = refused(tmp_path, lambda: dense_model((8, 8, 1), 1), x, NAMES[y], ValueError,
                      r"the model's loss \(mse\) is a regression loss")
    assert "softmax over 10 classes" in message


def test_string_labels_of_several_columns_are_refused(tiny_xy, tmp_path):
    x, y = tiny_xy
    refused(tmp_path, tiny_classifier, x, np.stack([NAMES[y], NAMES[y]], axis=1), ValueError,
            r"string labels of shape \(80, 2\). Expected one class name per sample")


def test_object_labels_that_are_not_numbers_or_strings_are_refused(tiny_xy, tmp_path):
    x, y = tiny_xy
    labels = y.astype(object)
    labels[5] = None
    refused(tmp_path, tiny_classifier, x, labels, TypeError, r"dtype object holding NoneType values \(None\)")


# ------------------------------------------------- samples against the input


def test_samples_of_the_wrong_shape_are_refused(tiny_xy, tmp_path):
    x, y = tiny_xy
    message = refused(tmp_path, tiny_classifier, x.reshape(len(x), 64), y, ValueError,
                      r"x has samples of shape \(64,\), the model expects \(8, 8, 1\)")
    assert "x.reshape(-1, 8, 8, 1)" in message
    refused(tmp_path, tiny_classifier, x[:, :4], y, ValueError, r"samples of shape \(4, 8, 1\)")


def test_a_missing_trailing_axis_of_one_is_accepted_as_keras_accepts_it(tiny_xy):
    x, y = tiny_xy
    result = tfcv.CrossValidator(tiny_classifier, folds=2).fit(x[..., 0], y, epochs=1, verbose=0)
    assert result.n_folds == 2


def test_object_samples_are_a_type_error(tiny_xy, tmp_path):
    x, y = tiny_xy
    ragged = np.empty(len(x), dtype=object)
    ragged[:] = [list(sample.ravel()) for sample in x]
    refused(tmp_path, tiny_classifier, ragged, y, TypeError,
            r"Received: an array of dtype object and shape \(80,\) holding list values. Expected a numeric array")


def test_text_samples_for_a_numeric_input_are_a_type_error(tiny_xy, tmp_path):
    x, y = tiny_xy
    text = np.array([f"digit {i}" for i in range(len(x))])
    refused(tmp_path, lambda: dense_model((1,), 10, activation="softmax", loss="sparse_categorical_crossentropy"),
            text, y, TypeError, r"x holds text \(strings\). Expected numbers")


# ------------------------------------------------- datasets


def _batched(x, y=None, *, element=None):
    import tensorflow as tf

    data = (x, y) if element is None else element
    return tf.data.Dataset.from_tensor_slices(data).batch(16)


def test_folds_without_labels_name_the_fold_and_the_element(tiny_xy, tmp_path):
    x, y = tiny_xy

    def images_only(k):
        return _batched(None, element=x[k::2]), _batched(None, element=x[1 - k::2])

    message = refused(tmp_path, tiny_classifier, images_only, None, ValueError,
                      r"Fold 0: `train_ds` yields single tensors of shape \(None, 8, 8, 1\), not \(x, y\) pairs")
    assert "as_supervised=True" in message

    def as_dicts(k):
        element = {"image": x[k::2], "label": y[k::2]}
        return _batched(None, element=element), _batched(x[1 - k::2], y[1 - k::2])

    refused(tmp_path, tiny_classifier, as_dicts, None, ValueError, r"yields dicts with keys \['image', 'label'\]")


def test_folds_are_checked_against_the_model(tiny_xy, tmp_path):
    x, y = tiny_xy

    def flat(k):
        return _batched(x[k::2].reshape(-1, 64), y[k::2]), _batched(x[1 - k::2].reshape(-1, 64), y[1 - k::2])

    refused(tmp_path, tiny_classifier, flat, None, ValueError, r"x has samples of shape \(64,\), the model expects")

    def digits(k):
        return _batched(x[k::2], y[k::2]), _batched(x[1 - k::2], y[1 - k::2])

    refused(tmp_path, lambda: tiny_classifier(num_classes=3), digits, None, ValueError,
            "fold 0's validation labels: class labels from 0 to 9 .* labels go up to 9 but the model outputs 3")

    def with_nan(k):
        labels = y.astype("float32")
        labels[1] = np.nan
        return _batched(x[k::2], labels[k::2]), _batched(x[1 - k::2], labels[1 - k::2])

    refused(tmp_path, tiny_classifier, with_nan, None, ValueError,
            r"Fold 0's validation labels hold NaN values in 1 samples \(first rows: \[0\]\)")

    def text_labels(k):
        return _batched(x[k::2], NAMES[y[k::2]]), _batched(x[1 - k::2], NAMES[y[1 - k::2]])

    refused(tmp_path, tiny_classifier, text_labels, None, ValueError,
            r"fold 0's validation labels are strings \(b'eight', .*StringLookup")


# ------------------------------------------------- the command line


def test_tfcv_run_with_too_few_classes_is_one_line_and_trains_nothing(tmp_path, capsys):
    config = tmp_path / "three.yaml"
    config.write_text("model: {num_classes: 3}\nfolds: 2\nepochs: 1\n")
    run_dir = tmp_path / "run"
    code, err = tfcv_in_process(capsys, "run", str(config), "--run-dir", str(run_dir), "--verbose", "0")
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("tfcv run: error:")]
    assert len(errors) == 1 and "Traceback" not in err
    assert "labels go up to 9 but the model outputs 3 classes" in errors[0]
    assert "num_classes: 10" in errors[0]
    assert not list(run_dir.glob("fold_*")) if run_dir.exists() else True
