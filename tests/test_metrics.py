"""tfcv.metrics: fold scoring and the registered loss and metric."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfcv.metrics import ClassAccuracy, ClassCrossentropy, predicted_classes, score_predictions


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
