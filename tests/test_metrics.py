"""tfcv.metrics: fold scoring and the registered loss and metric."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfcv.metrics import (
    ClassAccuracy,
    ClassCrossentropy,
    check_metric_labels,
    predicted_classes,
    score_predictions,
)


def test_class_loss_and_accuracy_take_integer_and_one_hot_labels():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]], "float32")
    labels = np.array([0, 2, 0])
    one_hot = np.eye(3, dtype="float32")[labels]
    for smoothing in (0.0, 0.2):
        expected = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)(one_hot, probs)
        loss = ClassCrossentropy(label_smoothing=smoothing)
        np.testing.assert_allclose(loss(labels, probs), expected, rtol=1e-6)
        np.testing.assert_allclose(loss(labels[:, None], probs), expected, rtol=1e-6)
        np.testing.assert_allclose(loss(one_hot, probs), expected, rtol=1e-6)
    for y_true in (labels, one_hot, 0.8 * one_hot + 0.2 * one_hot[::-1]):
        metric = ClassAccuracy()
        metric.update_state(y_true, probs)
        assert float(metric.result()) == pytest.approx(2 / 3)


@pytest.mark.parametrize("cls, kwargs", [(ClassCrossentropy, {"label_smoothing": 0.1, "from_logits": True}),
                                         (ClassAccuracy, {"name": "acc"})])
def test_loss_and_metric_keep_their_registered_names_and_round_trip(cls, kwargs):
    # Saved .keras files refer to them by these names.
    assert keras.saving.get_registered_name(cls) == f"tfcv>{cls.__name__}"
    original = cls(**kwargs)
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(original))
    assert type(revived) is cls and revived.get_config() == original.get_config()


def test_class_loss_refuses_out_of_range_labels_as_keras_sparse_crossentropy_does():
    import tensorflow as tf

    probs = np.full((3, 3), 1 / 3, "float32")
    loss = ClassCrossentropy(label_smoothing=0.1)
    graph = tf.function(lambda y_true, y_pred: loss(y_true, y_pred))
    for labels in ([0, 1, 5], [0, -1, 2], [[0], [3], [1]]):
        # Keras' SparseCategoricalCrossentropy raises InvalidArgumentError on CPU, eagerly and in graphs.
        with pytest.raises(tf.errors.InvalidArgumentError):
            keras.losses.SparseCategoricalCrossentropy()(np.array(labels), probs)
        for call in (loss, graph):
            with pytest.raises(tf.errors.InvalidArgumentError, match=r"outside the valid range of \[0, 3\)"):
                call(np.array(labels), probs)
    assert float(graph(np.array([0, 1, 2]), probs)) == pytest.approx(np.log(3), rel=1e-6)


def test_class_loss_stops_a_fit_on_labels_the_model_cannot_output():
    import tensorflow as tf

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    model.compile("adam", ClassCrossentropy(), jit_compile=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0, 3\)"):
        model.fit(np.zeros((8, 4), "float32"), np.arange(8), verbose=0)


def test_class_loss_under_xla_is_nan_for_out_of_range_labels_as_keras_sparse_crossentropy():
    # XLA drops assertions; Keras' sparse cross-entropy then gives NaN, and so does this loss, never a
    # quiet zero row.
    import tensorflow as tf

    probs = np.full((3, 3), 1 / 3, "float32")
    labels = np.array([0, 1, 5])
    keras_loss = keras.losses.SparseCategoricalCrossentropy()
    assert np.isnan(float(tf.function(lambda a, b: keras_loss(a, b), jit_compile=True)(labels, probs)))
    loss = ClassCrossentropy()
    xla = tf.function(lambda a, b: loss(a, b), jit_compile=True)
    assert np.isnan(float(xla(labels, probs)))
    assert float(xla(np.array([0, 1, 2]), probs)) == pytest.approx(np.log(3), rel=1e-6)


def test_class_loss_config_is_unchanged():
    # Saved .keras files hold these keys: the range check added no argument.
    assert ClassCrossentropy(label_smoothing=0.1).get_config() == {
        "name": "class_crossentropy", "reduction": "sum_over_batch_size", "label_smoothing": 0.1,
        "from_logits": False,
    }


def test_class_metrics_are_still_importable_from_the_builder():
    import tfcv.builder
    import tfcv.metrics

    for name in ("ClassCrossentropy", "ClassAccuracy", "_dense_labels", "_class_accuracy"):
        assert getattr(tfcv.builder, name) is getattr(tfcv.metrics, name)


# -------------------------------------------------------------- scoring


def test_classification_scores_match_a_hand_computation():
    y_true = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    # Predicted [0, 2, 2, 2]. Per class (precision, recall, f1): class 0
    # (1, 1, 1); class 1 (0 by zero_division, 0, 0); class 2 (2/3, 1, 0.8).
    expected = {"accuracy": 3 / 4, "precision": (1 + 0 + 2 / 3) / 3, "recall": (1 + 0 + 1) / 3,
                "f1": (1 + 0 + 0.8) / 3}
    scores = score_predictions(y_true, probs, "classification")
    assert scores == pytest.approx(expected)
    assert all(type(v) is float for v in scores.values())
    assert score_predictions(np.eye(3)[y_true], probs, "classification") == pytest.approx(expected)


def test_regression_scores_match_a_hand_computation():
    y_true = np.array([1.0, 2.0, 3.0])
    # Errors 0, 0, 2: mse 4/3, mae 2/3; r2 = 1 - 4 / sum((y - 2)^2) = 1 - 4/2.
    scores = score_predictions(y_true, np.array([[1.0], [2.0], [5.0]]), "regression")
    assert scores == pytest.approx({"mse": 4 / 3, "mae": 2 / 3, "r2": -1.0})


def test_predicted_classes_thresholds_probabilities_at_half_and_logits_at_zero():
    np.testing.assert_array_equal(predicted_classes(np.array([[0.2], [0.6], [0.5]])), [0, 1, 0])
    np.testing.assert_array_equal(predicted_classes(np.array([0.2, 0.6, 0.5])), [0, 1, 0])
    # One value outside [0, 1] makes the column logits.
    np.testing.assert_array_equal(predicted_classes(np.array([[-1.0], [0.3], [2.0]])), [0, 1, 1])
    np.testing.assert_array_equal(predicted_classes(np.array([[0.1, 0.9], [3.0, -1.0]])), [1, 0])
    assert predicted_classes(np.array([[0.6]])).dtype == np.int64


# ------------------------------------ compiled metrics against the labels


def _compiled(units, metrics, loss="sparse_categorical_crossentropy", **kwargs):
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(units, activation="softmax" if units > 1 else "sigmoid")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile("adam", loss, metrics=metrics, **kwargs)
    return model


_Y = np.arange(30) % 3
_ONE_HOT = np.eye(3, dtype="float32")[_Y]


@pytest.mark.parametrize(("metric", "match"), [
    (keras.metrics.F1Score(), r"F1Score \(named 'f1_score'\) takes one-hot label rows of width 3.*leave the metric out"),
    ("f1_score", r"y of shape \(30,\), integer class labels.*F1Score"),
    (keras.metrics.FBetaScore(beta=2.0, average="macro"), "FBetaScore.*to_categorical\\(y, 3\\)"),
    ("auc", r"AUC \(named 'auc'\)"),
    (keras.metrics.Precision(class_id=1), "Precision"),
    ("categorical_accuracy", r"keras.metrics.SparseCategoricalAccuracy\(\) instead"),
    (keras.metrics.categorical_accuracy, "SparseCategoricalAccuracy"),
    (keras.metrics.TopKCategoricalAccuracy(k=2), "SparseTopKCategoricalAccuracy"),
    (keras.metrics.CategoricalCrossentropy(from_logits=True),
     r"keras.metrics.SparseCategoricalCrossentropy\(from_logits=True\)"),
])
def test_a_metric_that_takes_label_rows_is_refused_with_integer_labels(metric, match):
    model = _compiled(3, ["accuracy", metric])
    with pytest.raises(ValueError, match=match):
        check_metric_labels(model, _Y)
    with pytest.raises(ValueError, match=r"y of shape \(30, 1\)"):
        check_metric_labels(model, _Y.reshape(-1, 1))
    # The labels they take.
    check_metric_labels(_compiled(3, ["accuracy", metric], loss="categorical_crossentropy"), _ONE_HOT)


def test_metrics_checked_wherever_compile_puts_them():
    with pytest.raises(ValueError, match="fold 0's validation labels of shape.*AUC"):
        check_metric_labels(_compiled(3, ["accuracy"], weighted_metrics=[keras.metrics.AUC()]), _Y,
                            where="fold 0's validation labels")
    with pytest.raises(ValueError, match="F1Score"):
        check_metric_labels(_compiled(3, {"dense": [keras.metrics.F1Score()]}), _Y)


def test_f1_of_one_output_unit_takes_labels_of_shape_n_by_1():
    binary = _Y % 2
    with pytest.raises(ValueError, match=r"shape \(n, 1\) for its one output unit. Pass y.reshape\(-1, 1\)"):
        check_metric_labels(_compiled(1, [keras.metrics.F1Score()], loss="binary_crossentropy"), binary)
    check_metric_labels(_compiled(1, [keras.metrics.F1Score()], loss="binary_crossentropy"), binary.reshape(-1, 1))
    # Thresholded metrics take 0/1 labels of either shape against one unit.
    check_metric_labels(_compiled(1, ["auc", "precision", "recall"], loss="binary_crossentropy"), binary)


def test_a_sparse_metric_is_refused_with_label_rows():
    with pytest.raises(ValueError, match=r"label rows.*SparseCategoricalAccuracy.*takes integer class labels.*"
                                         r"keras.metrics.CategoricalAccuracy\(\)"):
        check_metric_labels(_compiled(3, ["sparse_categorical_accuracy"], loss="categorical_crossentropy"), _ONE_HOT)


class _OwnPrecision(keras.metrics.Precision):
    """A subclass may take whatever labels it likes: not checked."""


@pytest.mark.parametrize("metrics", [["accuracy", "acc", "crossentropy", "sparse_categorical_accuracy"],
                                     [_OwnPrecision(), ClassAccuracy()], []])
def test_metrics_that_take_integer_labels_or_are_not_keras_own_pass(metrics):
    check_metric_labels(_compiled(3, metrics), _Y)


def test_fit_refuses_f1_score_with_integer_labels_before_training(small_digits):
    import tfcv

    x, y = small_digits
    built = []

    def build():
        inputs = keras.Input((8, 8, 1))
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs)))
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy", keras.metrics.F1Score()])
        built.append(model)
        return model

    with pytest.raises(ValueError, match=r"F1Score \(named 'f1_score'\) takes one-hot label rows of width 10"):
        tfcv.CrossValidator(build, folds=2).fit(x, y, epochs=1, verbose=0)
    assert all(int(model.optimizer.iterations) == 0 for model in built)
