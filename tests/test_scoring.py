"""scikit-learn's `cross_validate` contract: `scoring`, `return_train_score`,
`fit_time`/`score_time`, `to_dict()`, `sample_weight` and `class_weight`.

The reference is `cross_validate` itself, running a scikit-learn wrapper of
the same Keras model: a softmax regression with zero initial weights trained
full-batch, so its training depends on the data only (not on seeds or batch
order) and both libraries must give the same scores."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import sklearn
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.metrics import get_scorer, make_scorer, recall_score
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.utils.class_weight import compute_class_weight

import tfcv
from tfcv.metrics import check_scoring, scalar_scores, score_with

EPOCHS = 20
SCORING = ["accuracy", "balanced_accuracy", "roc_auc_ovr", "neg_log_loss"]


def softmax_regression():
    # float64: the two libraries sum a batch's gradients in different orders.
    inputs = keras.Input((64,), dtype="float64")
    outputs = keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros", dtype="float64")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(1.0), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class KerasSoftmax(ClassifierMixin, BaseEstimator):
    """The same model as a scikit-learn classifier."""

    def __init__(self, class_weight=None):
        self.class_weight = class_weight

    def fit(self, X, y, sample_weight=None):
        weights = np.ones(len(y), "float32") if sample_weight is None else np.asarray(sample_weight, "float32")
        if self.class_weight == "balanced":
            classes = np.unique(y)
            per_class = dict(zip(classes, compute_class_weight("balanced", classes=classes, y=y)))
            weights = weights * np.asarray([per_class[c] for c in y], "float32")
        self.model_ = softmax_regression()
        self.model_.fit(X, y, sample_weight=weights, batch_size=len(X), epochs=EPOCHS, shuffle=False, verbose=0)
        self.classes_ = np.arange(10)
        return self

    def predict_proba(self, X):
        return np.asarray(self.model_.predict(X, batch_size=1024, verbose=0))

    def predict(self, X):
        return self.predict_proba(X).argmax(axis=1)


@pytest.fixture(scope="module")
def flat_digits(digits):
    x, y = digits
    rng = np.random.default_rng(0)
    rows = rng.choice(len(x), 450, replace=False)
    return x[rows].reshape(450, 64).astype("float64"), y[rows]


def splitter():
    return StratifiedKFold(3, shuffle=True, random_state=0)


def tfcv_fit(x, y, strategy="sequential", **kwargs):
    cv = tfcv.CrossValidator(softmax_regression, folds=splitter(), seed=0, strategy=strategy)
    return cv.fit(x, y, epochs=EPOCHS, batch_size=len(x), verbose=0, **kwargs)


def assert_same_as_cross_validate(ours: dict, theirs: dict):
    assert set(ours) == set(theirs)
    for key in theirs:
        assert ours[key].shape == theirs[key].shape, key
        if key.endswith("_time"):
            assert np.all(ours[key] > 0), key
        else:
            np.testing.assert_allclose(ours[key], theirs[key], rtol=0, atol=1e-6, err_msg=key)


@pytest.fixture(scope="module")
def reference(flat_digits):
    x, y = flat_digits
    return cross_validate(KerasSoftmax(), x, y, cv=splitter(), scoring=SCORING, return_train_score=True)


@pytest.fixture(scope="module")
def sequential(flat_digits):
    x, y = flat_digits
    return tfcv_fit(x, y, scoring=SCORING, return_train_score=True)


def test_to_dict_equals_cross_validate(sequential, reference):
    assert reference["test_accuracy"].mean() > 0.85  # the model learns the digits
    assert_same_as_cross_validate(sequential.to_dict(), reference)


def test_stacked_folds_score_as_cross_validate(flat_digits, reference):
    x, y = flat_digits
    result = tfcv_fit(x, y, strategy="stacked", scoring=SCORING, return_train_score=True)
    assert result.info["strategy"] == "stacked"
    assert_same_as_cross_validate(result.to_dict(), reference)


@pytest.mark.slow  # starts two worker processes that import TensorFlow
def test_joblib_workers_score_as_cross_validate(flat_digits, reference):
    x, y = flat_digits
    result = tfcv_fit(x, y, scoring=SCORING, return_train_score=True, n_jobs=2)
    assert_same_as_cross_validate(result.to_dict(), reference)


def test_single_scorer_and_callables_are_keyed_as_in_cross_validate(flat_digits, sequential):
    x, y = flat_digits
    single = tfcv_fit(x, y, scoring="balanced_accuracy").to_dict()
    assert set(single) == {"fit_time", "score_time", "test_score"}
    np.testing.assert_allclose(single["test_score"], sequential.scores["balanced_accuracy"], atol=1e-12)

    recall = make_scorer(recall_score, average="macro")
    scorers, keys = check_scoring({"recall": recall, "auc": "roc_auc_ovr"})
    assert keys == {"recall": "recall", "auc": "auc"}
    assert check_scoring(recall)[1] == {"score": "score"}
    for k, (_, val) in enumerate(sequential.plan.folds):
        scores = score_with(scorers, y[val], sequential.val_predictions[k], "classification")
        assert scores["recall"] == pytest.approx(sequential.scores["recall"][k], abs=1e-12)
        assert scores["auc"] == pytest.approx(sequential.scores["roc_auc_ovr"][k], abs=1e-12)


def test_scorers_see_the_fold_predictions(sequential, flat_digits):
    _, y = flat_digits
    for k, (_, val) in enumerate(sequential.plan.folds):
        proba = sequential.val_predictions[k]
        assert sequential.scores["neg_log_loss"][k] == pytest.approx(
            -sklearn.metrics.log_loss(y[val], proba, labels=np.arange(10)), abs=1e-9)
        assert sequential.scores["accuracy"][k] == pytest.approx(np.mean(proba.argmax(1) == y[val]), abs=1e-12)


def test_defaults_are_unchanged(flat_digits, sequential):
    x, y = flat_digits
    result = tfcv_fit(x, y)
    assert set(result.scores) == {"loss", "compile_metrics", "accuracy", "precision", "recall", "f1"} or \
        set(result.scores) >= {"loss", "accuracy", "precision", "recall", "f1"}
    assert not any(name.startswith("train_") for name in result.scores)
    assert "scoring" not in result.info
    out = result.to_dict()
    assert set(out) == {"fit_time", "score_time"} | {f"test_{name}" for name in result.scores}
    np.testing.assert_array_equal(out["test_accuracy"], sequential.scores["accuracy"])


def test_class_weight_balanced_is_computed_on_each_training_split(flat_digits):
    x, y = flat_digits
    # Make the classes unbalanced, so that the weights matter.
    keep = (y >= 5) | (np.arange(len(y)) % 3 == 0)
    x, y = x[keep], y[keep]
    reference = cross_validate(KerasSoftmax(class_weight="balanced"), x, y, cv=splitter(), scoring=SCORING[:2])
    result = tfcv_fit(x, y, scoring=SCORING[:2], class_weight="balanced")
    assert_same_as_cross_validate(result.to_dict(), reference)
    unweighted = tfcv_fit(x, y, scoring=SCORING[:2])
    assert not np.allclose(unweighted.scores["balanced_accuracy"], result.scores["balanced_accuracy"], atol=1e-6)


def test_sample_weight_in_training_and_scoring(flat_digits):
    x, y = flat_digits
    w = np.where(y % 2 == 0, 3.0, 0.5).astype("float32")
    with sklearn.config_context(enable_metadata_routing=True):
        scorers = {name: get_scorer(name).set_score_request(sample_weight=True) for name in SCORING}
        estimator = KerasSoftmax().set_fit_request(sample_weight=True)
        reference = cross_validate(estimator, x, y, cv=splitter(), scoring=scorers, return_train_score=True,
                                   params={"sample_weight": w})
    for strategy in ("sequential", "stacked"):
        result = tfcv_fit(x, y, strategy=strategy, scoring=SCORING, return_train_score=True, sample_weight=w)
        assert_same_as_cross_validate(result.to_dict(), reference)
    # The default scores are weighted too.
    k, (_, val) = 0, result.plan.folds[0]
    expected = sklearn.metrics.accuracy_score(y[val], result.val_predictions[k].argmax(1), sample_weight=w[val])
    assert result.scores["accuracy"][k] == pytest.approx(expected, abs=1e-12)


def test_settings_are_part_of_the_run(flat_digits, tmp_path):
    x, y = flat_digits
    run_dir = tmp_path / "run"
    first = tfcv_fit(x, y, scoring="roc_auc_ovr", return_train_score=True, run_dir=run_dir)
    loaded = tfcv.CVResult.load(run_dir)
    for key, values in first.to_dict().items():
        np.testing.assert_array_equal(loaded.to_dict()[key], values)
    with pytest.raises(ValueError, match="scoring differs"):
        tfcv_fit(x, y, scoring="accuracy", return_train_score=True, run_dir=run_dir)


def test_bad_arguments_are_refused(flat_digits):
    x, y = flat_digits
    with pytest.raises(ValueError, match="scoring='no_such_scorer'"):
        check_scoring("no_such_scorer")
    with pytest.raises(ValueError, match="scoring"):
        check_scoring([])
    with pytest.raises(TypeError, match="scoring\\['a'\\]=3"):
        check_scoring({"a": 3})
    cv = tfcv.CrossValidator(softmax_regression, folds=2)
    with pytest.raises(ValueError, match="sample_weight"):
        cv.fit(x, y, sample_weight=np.ones(3), verbose=0)
    with pytest.raises(ValueError, match="class_weight='even'"):
        cv.fit(x, y, class_weight="even", verbose=0)


def test_binary_and_regression_scorers_from_predictions():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([[0.2], [0.9], [0.6], [0.4], [0.3]])
    scores = score_with(check_scoring(["roc_auc", "accuracy", "neg_log_loss"])[0], y, p, "classification")
    assert scores["roc_auc"] == pytest.approx(sklearn.metrics.roc_auc_score(y, p[:, 0]))
    assert scores["accuracy"] == pytest.approx(0.8)
    assert scores["neg_log_loss"] == pytest.approx(-sklearn.metrics.log_loss(y, p[:, 0]))
    target = np.array([1.0, 2.0, 3.0])
    scores = score_with(check_scoring(["r2", "neg_mean_absolute_error"])[0], target, np.array([[1.0], [2.5], [2.5]]),
                        "regression")
    assert scores["neg_mean_absolute_error"] == pytest.approx(-1 / 3)
    assert scores["r2"] == pytest.approx(sklearn.metrics.r2_score(target, [1.0, 2.5, 2.5]))


def test_metric_results_that_are_arrays_become_one_score_per_element():
    import tensorflow as tf

    logs = {"loss": np.float32(0.5), "f1_score": tf.constant([0.25, 0.75]), "confusion": np.array([[1, 2], [3, 4]])}
    assert scalar_scores(logs) == {
        "loss": 0.5, "f1_score[0]": 0.25, "f1_score[1]": 0.75,
        "confusion[0,0]": 1.0, "confusion[0,1]": 2.0, "confusion[1,0]": 3.0, "confusion[1,1]": 4.0,
    }
    assert all(type(value) is float for value in scalar_scores(logs).values())
    with pytest.raises(TypeError, match="note='fine'.*Expected a number or an array of numbers"):
        scalar_scores({"loss": 0.5, "note": "fine"})


# ------------------------------------------------------------------ refit


def test_refit_trains_on_all_the_data_for_the_median_best_epoch(small_digits, tmp_path):
    from tests.conftest import tiny_classifier

    x, y = small_digits
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=1, mode="max")
    run_dir = tmp_path / "run"
    cv = tfcv.CrossValidator(tiny_classifier, folds=3, seed=0)
    result = cv.fit(x, y, epochs=6, callbacks=[stop], run_dir=run_dir, refit=True, verbose=0)

    best = [int(np.argmax(h["val_accuracy"])) + 1 for h in result.histories]
    assert result.info["refit_epochs"] == int(round(float(np.median(best))))
    refit = result.refit_model
    assert isinstance(refit, keras.Model) and all(refit is not m for m in result.models)
    assert np.mean(refit.predict(x, verbose=0).argmax(1) == y) > 0.8  # it learned, on all the data

    loaded = tfcv.CVResult.load(run_dir)
    np.testing.assert_allclose(loaded.refit_model.predict(x[:20], verbose=0), refit.predict(x[:20], verbose=0),
                               rtol=1e-6, atol=1e-6)
    # Running the same fit again reads the refit model back instead of training it.
    again = cv.fit(x, y, epochs=6, callbacks=[stop], run_dir=run_dir, refit=True, verbose=0)
    np.testing.assert_array_equal(again.refit_model.get_weights()[0], refit.get_weights()[0])

    path = tfcv.export_saved_model(run_dir, tmp_path / "serving" / "digits", model="refit", randomized=None,
                                   warmup=False)
    from tfcv import bundle

    metadata = bundle.read_metadata(path)
    assert metadata["model"] == "refit" and metadata["n_folds"] == 1
    with pytest.raises(ValueError, match="model='best'"):
        tfcv.export_saved_model(result, tmp_path / "serving" / "other", model="best")


def test_refit_without_early_stopping_trains_for_the_epochs_and_the_cli_flag():
    from tfcv._fold import refit_epochs
    from tfcv.cli import build_parser, resolve_run_config

    histories = [{"val_loss": [0.5, 0.4, 0.45]}, {"val_loss": [0.5, 0.3, 0.2]}, {"val_loss": [0.3, 0.4, 0.5]}]
    assert refit_epochs(histories, 7, None) == 7
    assert refit_epochs(histories, 7, [keras.callbacks.EarlyStopping(monitor="val_loss")]) == 2  # median of 2, 3, 1
    args = build_parser().parse_args(["run", "--refit"])
    assert resolve_run_config(args)["refit"] is True
    assert resolve_run_config(build_parser().parse_args(["run"]))["refit"] is False
