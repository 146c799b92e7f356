"""CrossValidator and CVResult on real training."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcv
from tests.conftest import tiny_classifier
from tfcv.preprocessing import adapt_preprocessing


def test_learns_far_above_chance(cv_result):
    # 10 classes: chance is 0.1.
    assert cv_result.mean("accuracy") > 0.85
    assert min(cv_result.scores["accuracy"]) > 0.8


def test_scores_hold_compiled_and_sklearn_metrics(cv_result):
    for name in ("loss", "accuracy", "precision", "recall", "f1"):
        assert len(cv_result.scores[name]) == 3
        assert cv_result.mean(name) == pytest.approx(np.mean(cv_result.scores[name]))
        assert cv_result.std(name) == pytest.approx(np.std(cv_result.scores[name]))
    assert cv_result.task == "classification"


def test_out_of_fold_predictions_are_in_input_order(cv_result, small_digits):
    x, y = small_digits
    oof = cv_result.oof_predictions
    assert oof.shape == (len(x), 10)
    assert not np.isnan(oof).any()
    # Each fold's accuracy recomputed from the OOF rows of its validation indices.
    for k, (_, val) in enumerate(cv_result.plan.folds):
        acc = (oof[val].argmax(1) == y[val]).mean()
        assert acc == pytest.approx(cv_result.scores["accuracy"][k])
    # And the OOF rows are what each fold model predicts for those samples.
    k = 1
    val = cv_result.plan.folds[k][1]
    np.testing.assert_allclose(cv_result.models[k].predict(x[val], verbose=0), oof[val], atol=1e-5)


def test_every_fold_gets_a_fresh_model(cv_result):
    models = cv_result.models
    assert len({id(m) for m in models}) == 3
    first = [w.numpy() for w in models[0].weights]
    second = [w.numpy() for w in models[1].weights]
    assert any(not np.allclose(a, b) for a, b in zip(first, second))
    assert all(len(h["loss"]) == 8 and "val_accuracy" in h for h in cv_result.histories)


def test_save_and_load_round_trip(cv_result, small_digits, tmp_path):
    x, _ = small_digits
    path = cv_result.save(tmp_path / "saved")
    loaded = tfcv.CVResult.load(path)
    assert loaded.scores == cv_result.scores
    assert loaded.histories == cv_result.histories
    assert loaded.plan == cv_result.plan
    np.testing.assert_allclose(loaded.oof_predictions, cv_result.oof_predictions)
    for a, b in zip(loaded.models, cv_result.models):
        np.testing.assert_allclose(a.predict(x[:20], verbose=0), b.predict(x[:20], verbose=0), atol=1e-6)
    # The run directory written by fit() loads the same way.
    from_run = tfcv.CVResult.load(cv_result.run_dir)
    assert from_run.scores == cv_result.scores


def test_summary_table(cv_result):
    text = cv_result.summary()
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["fold", "accuracy", "precision", "recall", "f1"]
    assert [line.split()[0] for line in lines[2:5]] == ["1", "2", "3"]
    assert lines[-1].startswith("mean ± std")
    assert f"{cv_result.mean('accuracy'):.4f} ± {cv_result.std('accuracy'):.4f}" in lines[-1]
    assert repr(cv_result).startswith("CVResult(n_folds=3, task='classification', accuracy=")


def test_to_frame(cv_result):
    frame = cv_result.to_frame()
    assert list(frame.index) == [0, 1, 2]
    assert frame["accuracy"].tolist() == cv_result.scores["accuracy"]


def test_ensembles(cv_result, small_digits, tmp_path):
    x, y = small_digits
    mean_model = cv_result.ensemble("mean")
    expected = np.mean([m.predict(x, verbose=0) for m in cv_result.models], axis=0)
    np.testing.assert_allclose(mean_model.predict(x, verbose=0), expected, atol=1e-5)
    vote_model = cv_result.ensemble("vote")
    votes = vote_model.predict(x, verbose=0)
    np.testing.assert_allclose(votes.sum(axis=1), 1.0, atol=1e-6)
    fold_classes = np.stack([m.predict(x, verbose=0).argmax(1) for m in cv_result.models])
    np.testing.assert_allclose(votes[np.arange(len(x)), fold_classes[0]] * 3, (fold_classes == fold_classes[0]).sum(0))
    for model in (mean_model, vote_model):
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        reloaded = keras.saving.load_model(path)
        np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    with pytest.raises(ValueError, match="method='median'"):
        cv_result.ensemble("median")


def test_regression_task_reports_regression_metrics():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0], "float32") + 0.05 * rng.normal(size=240)).astype("float32")

    def build():
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
        model.compile(keras.optimizers.Adam(0.05), "mse")
        return model

    result = tfcv.CrossValidator(build, folds=3).fit(x, y, epochs=30, batch_size=16, verbose=0)
    assert result.task == "regression"
    assert "KFold" in result.plan.splitter and "Stratified" not in result.plan.splitter
    assert result.mean("r2") > 0.95
    assert set(result.scores) >= {"loss", "mse", "mae", "r2"}
    assert result.oof_predictions.shape == (240, 1)


def test_same_seed_same_scores(small_digits):
    x, y = small_digits
    x, y = x[:300], y[:300]
    runs = [tfcv.CrossValidator(tiny_classifier, folds=2, seed=3).fit(x, y, epochs=2, verbose=0) for _ in range(2)]
    assert runs[0].scores == runs[1].scores
    other = tfcv.CrossValidator(tiny_classifier, folds=2, seed=4).fit(x, y, epochs=2, verbose=0)
    assert other.scores != runs[0].scores


def test_normalization_is_adapted_on_what_reaches_it():
    x = np.random.default_rng(0).uniform(0, 255, size=(50, 3)).astype("float32")
    inputs = keras.Input((3,))
    h = keras.layers.Rescaling(1 / 255.0)(inputs)
    norm = keras.layers.Normalization(name="norm")
    outputs = keras.layers.Dense(1)(norm(h))
    model = keras.Model(inputs, outputs)
    assert adapt_preprocessing(model, x) == ["norm"]
    np.testing.assert_allclose(np.asarray(norm.mean).reshape(-1), (x / 255.0).mean(0), rtol=1e-5)


@pytest.mark.parametrize("strategy", ["sequential", "stacked"])
def test_normalization_statistics_come_from_each_folds_training_split(small_digits, strategy):
    x, y = small_digits

    def build():
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Normalization(axis=None, name="norm")(inputs)
        h = keras.layers.Flatten()(h)
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    result = tfcv.CrossValidator(build, folds=3, strategy=strategy).fit(x, y, epochs=1, verbose=0)
    for k, (train, val) in enumerate(result.plan.folds):
        mean = float(np.asarray(result.models[k].get_layer("norm").mean).reshape(-1)[0])
        assert mean == pytest.approx(float(x[train].mean()), rel=1e-5)
        assert mean != pytest.approx(float(x.mean()), rel=1e-7)
        # The scores came from each fold's own statistics, in either strategy.
        np.testing.assert_allclose(result.models[k].predict(x[val], verbose=0), result.oof_predictions[val], atol=1e-5)


# ------------------------------------------------------------- bad input


@pytest.fixture()
def tiny_xy(small_digits):
    x, y = small_digits
    return x[:60].copy(), y[:60].copy()


def test_nan_and_inf_in_x_are_refused_before_training(tiny_xy):
    x, y = tiny_xy
    built = []

    def build():
        built.append(1)
        return tiny_classifier()

    x[3, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN values in 1 samples \\(first rows: \\[3\\]\\)"):
        tfcv.CrossValidator(build, folds=2).fit(x, y, epochs=1, verbose=0)
    x[3, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        tfcv.CrossValidator(build, folds=2).fit(x, y, epochs=1, verbose=0)
    assert built == []


def test_x_and_y_of_different_lengths(tiny_xy):
    x, y = tiny_xy
    with pytest.raises(ValueError, match="len\\(x\\)=60, len\\(y\\)=59"):
        tfcv.CrossValidator(tiny_classifier, folds=2).fit(x, y[:-1], epochs=1, verbose=0)


def test_build_fn_must_return_a_compiled_model(tiny_xy):
    x, y = tiny_xy
    with pytest.raises(TypeError, match="must return a keras.Model. Received: 'oops'"):
        tfcv.CrossValidator(lambda: "oops", folds=2).fit(x, y, epochs=1, verbose=0)

    def uncompiled():
        inputs = keras.Input((8, 8, 1))
        return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)), name="raw")

    with pytest.raises(ValueError, match="uncompiled model \\('raw'\\)"):
        tfcv.CrossValidator(uncompiled, folds=2).fit(x, y, epochs=1, verbose=0)
    with pytest.raises(TypeError, match="build_fn=3"):
        tfcv.CrossValidator(3)


@pytest.mark.parametrize(("kwargs", "match"), [({"epochs": 0}, "epochs=0"), ({"batch_size": -1}, "batch_size=-1"), ({"verbose": 5}, "verbose=5")])
def test_bad_fit_arguments(tiny_xy, kwargs, match):
    x, y = tiny_xy
    with pytest.raises(ValueError, match=match):
        tfcv.CrossValidator(tiny_classifier, folds=2).fit(x, y, **{"epochs": 1, **kwargs})


def test_too_few_members_of_a_class(tiny_xy):
    x, y = tiny_xy
    y = y.copy()
    y[:] = 0
    y[:30] = 1
    y[0] = 9
    with pytest.raises(ValueError, match="class 9 has 1"):
        tfcv.CrossValidator(tiny_classifier, folds=2).fit(x, y, epochs=1, verbose=0)


def test_group_splitter_uses_groups(tiny_xy):
    from sklearn.model_selection import GroupKFold

    x, y = tiny_xy
    groups = np.arange(60) % 6
    result = tfcv.CrossValidator(tiny_classifier, folds=GroupKFold(3)).fit(x, y, epochs=1, groups=groups, verbose=0)
    for train, val in result.plan.folds:
        assert not set(groups[train]) & set(groups[val])
    with pytest.raises(ValueError, match="len\\(groups\\)=5"):
        tfcv.CrossValidator(tiny_classifier, folds=GroupKFold(3)).fit(x, y, epochs=1, groups=groups[:5], verbose=0)


@pytest.mark.parametrize("strategy", ["sequential", "stacked"])
def test_mixup_from_the_spec_mixes_training_batches(small_digits, strategy):
    from tfcv.layers import BatchMixer

    x, y = small_digits
    calls = []

    class CountingMixer(BatchMixer):
        def call(self, images, labels, training=True):
            calls.append(1)  # once per trace of the tf.data map
            return super().call(images, labels, training=training)

    spec = tfcv.ModelSpec.from_dict({"input_shape": [8, 8, 1], "num_classes": 10, "augmentation": [{"mixup": 0.2}]})
    builder = tfcv.ModelBuilder(spec)
    assert builder.batch_mixer is not None

    class Builder:
        def __call__(self):
            return builder()

        batch_mixer = CountingMixer(mixup=0.2, num_classes=10, seed=0)

    result = tfcv.CrossValidator(Builder(), folds=2, strategy=strategy).fit(x, y, epochs=8, verbose=0)
    assert len(calls) >= 2
    assert result.info["strategy"] == strategy
    assert result.mean("accuracy") > 0.5
    # The spec's own builder goes through the same path.
    direct = tfcv.CrossValidator(builder, folds=2).fit(x[:200], y[:200], epochs=1, verbose=0)
    assert direct.n_folds == 2


@pytest.mark.parametrize("strategy", ["sequential", "stacked"])
def test_streamed_folds_adapt_normalization_on_each_training_split(small_digits, strategy):
    import tensorflow as tf

    x, y = small_digits
    x, y = x[:240], y[:240]
    val_parts = [np.arange(k, len(x), 3) for k in range(3)]

    def datasets(k):
        train = np.setdiff1d(np.arange(len(x)), val_parts[k])
        return (
            tf.data.Dataset.from_tensor_slices((x[train], y[train])).batch(32),
            tf.data.Dataset.from_tensor_slices((x[val_parts[k]], y[val_parts[k]])).batch(32),
        )

    def build():
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Flatten()(keras.layers.Normalization(axis=None, name="norm")(inputs))
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    result = tfcv.CrossValidator(build, folds=3, strategy=strategy).fit(datasets, epochs=1, verbose=0)
    assert result.info["strategy"] == strategy
    for k in range(3):
        train = np.setdiff1d(np.arange(len(x)), val_parts[k])
        mean = float(np.asarray(result.models[k].get_layer("norm").mean).reshape(-1)[0])
        assert mean == pytest.approx(float(x[train].mean()), rel=1e-5)
    # Folds from a callable: validation predictions stacked in fold order.
    assert result.oof_predictions.shape == (240, 10)
    np.testing.assert_array_equal(result.oof_targets, np.concatenate([y[v] for v in val_parts]))
