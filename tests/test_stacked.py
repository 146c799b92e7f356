"""The stacked strategy (all folds in one graph) and the fast sequential one."""

from __future__ import annotations

import csv
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcv
from tests.conftest import tiny_classifier


@pytest.fixture(scope="module")
def both_strategies(digits):
    """Sequential and stacked runs of the reference CNN on all the digits, same seed."""
    x, y = digits
    runs = {}
    for strategy in ("sequential", "stacked"):
        cv = tfcv.CrossValidator(lambda: tfcv.models.reference_cnn((8, 8, 1), 10), folds=4, seed=3, strategy=strategy)
        runs[strategy] = cv.fit(x, y, epochs=5, batch_size=64, verbose=0)
    return runs


def test_stacked_and_sequential_agree_within_one_fold_std(both_strategies):
    sequential, stacked = both_strategies["sequential"], both_strategies["stacked"]
    assert stacked.info["strategy"] == "stacked" and sequential.info["strategy"] == "sequential"
    assert stacked.plan == sequential.plan
    assert stacked.info["seeds"] == sequential.info["seeds"]
    for result in (sequential, stacked):
        assert result.mean("accuracy") > 0.9  # 10 classes: chance is 0.1
    spread = max(sequential.std("accuracy"), stacked.std("accuracy"))
    assert abs(stacked.mean("accuracy") - sequential.mean("accuracy")) <= spread


def test_stacked_returns_independent_fold_models_and_true_oof(both_strategies, digits):
    x, y = digits
    result = both_strategies["stacked"]
    assert len({id(m) for m in result.models}) == 4
    kernels = [m.get_layer("block1_conv").get_weights()[0] for m in result.models]
    assert all(not np.allclose(kernels[0], other) for other in kernels[1:])
    for k, (_, val) in enumerate(result.plan.folds):
        # Each nested copy works on its own and made that fold's OOF rows.
        np.testing.assert_allclose(result.models[k].predict(x[val], verbose=0), result.oof_predictions[val], atol=1e-5)
        assert result.scores["accuracy"][k] == pytest.approx((result.oof_predictions[val].argmax(1) == y[val]).mean())
        history = result.histories[k]
        assert len(history["loss"]) == 5 and len(history["val_accuracy"]) == 5
    # Per-fold validation curves are each fold's own, not one shared curve.
    assert len({tuple(h["val_loss"]) for h in result.histories}) == 4
    # A stacked fold model is a normal model: it ensembles and exports as usual.
    ensemble = result.ensemble("mean")
    assert ensemble.predict(x[:5], verbose=0).shape == (5, 10)


@keras.saving.register_keras_serializable(package="tfcv_tests")
class SeenCounter(keras.layers.Layer):
    """Counts, in a variable, which sample ids reach it in training. Inputs
    are (batch, 2): a feature and the sample's id."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = n

    def build(self, input_shape):
        self.seen = self.add_weight(shape=(self.n,), initializer="zeros", trainable=False, name="seen")

    def call(self, inputs, training=False):
        if training:
            ids = keras.ops.cast(inputs[:, 1], "int32")
            self.seen.assign_add(keras.ops.sum(keras.ops.one_hot(ids, self.n), axis=0))
        return inputs[:, :1]

    def get_config(self):
        return {**super().get_config(), "n": self.n}


def test_copy_k_trains_only_on_fold_k_training_indices():
    n = 90
    rng = np.random.default_rng(0)
    feature = rng.normal(size=n).astype("float32")
    x = np.stack([feature, np.arange(n, dtype="float32")], axis=1)
    y = (feature > 0).astype("int64")

    def build():
        inputs = keras.Input((2,))
        h = SeenCounter(n, name="seen")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    result = tfcv.CrossValidator(build, folds=3, strategy="stacked").fit(x, y, epochs=2, batch_size=16, verbose=0)
    for k, (train, val) in enumerate(result.plan.folds):
        seen = result.models[k].get_layer("seen").seen.numpy()
        assert (seen[val] == 0).all(), f"fold {k}'s copy trained on its own validation samples"
        assert (seen[train] == 2).all(), f"fold {k}'s copy did not see each training sample once per epoch"


class StopFold(tfcv.callbacks.FoldCallback):
    """Stops one fold after a given epoch and records its weights then."""

    def __init__(self, fold, epoch):
        super().__init__()
        self.stop_fold, self.stop_epoch = fold, epoch
        self.weights_at_stop = None

    def on_epoch_end(self, epoch, logs=None):
        if self.fold == self.stop_fold and epoch == self.stop_epoch:
            self.model.stop_training = True
            self.weights_at_stop = [w.copy() for w in self.model.get_weights()]


def test_a_fold_that_stops_keeps_its_weights_while_the_others_train(small_digits):
    x, y = small_digits
    stopper = StopFold(fold=1, epoch=1)
    result = tfcv.CrossValidator(tiny_classifier, folds=3, strategy="stacked").fit(
        x, y, epochs=5, batch_size=32, verbose=0, callbacks=[stopper]
    )
    assert [len(h["loss"]) for h in result.histories] == [5, 2, 5]
    for got, want in zip(result.models[1].get_weights(), stopper.weights_at_stop):
        np.testing.assert_array_equal(got, want)
    steps = -(-max(len(t) for t, _ in result.plan.folds) // 32)
    assert int(result.models[1].optimizer.iterations.numpy()) == 2 * steps
    assert int(result.models[0].optimizer.iterations.numpy()) == 5 * steps
    # The stopped fold is still scored, on the weights it stopped with.
    assert result.scores["accuracy"][1] > 0.5


@keras.saving.register_keras_serializable(package="tfcv_tests")
class InferenceCounter(keras.layers.Layer):
    """Counts, in a weight, the rows that reach it outside training."""

    def build(self, input_shape):
        self.rows = self.add_weight(shape=(), initializer="zeros", trainable=False, name="rows")

    def call(self, inputs, training=False):
        if not training:
            self.rows.assign_add(keras.ops.cast(keras.ops.shape(inputs)[0], "float32"))
        return inputs


def classifier_counting_inference_rows():
    inputs = keras.Input((8, 8, 1))
    h = InferenceCounter(name="counter")(keras.layers.Flatten()(inputs))
    outputs = keras.layers.Dense(10, activation="softmax", name="head")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class FavourClassZeroAtTheEnd(keras.callbacks.Callback):
    """Changes the weights after the last validation pass."""

    def on_train_end(self, logs=None):
        self.model.get_layer("head").bias.assign([100.0] + [0.0] * 9)


@pytest.mark.parametrize("strategy", ["stacked", "sequential"])
@pytest.mark.parametrize("change_at_the_end", [False, True])
def test_the_last_validation_pass_scores_the_folds_unless_weights_changed_after_it(
    small_digits, strategy, change_at_the_end
):
    x, y = small_digits
    callbacks = [FavourClassZeroAtTheEnd()] if change_at_the_end else []
    result = tfcv.CrossValidator(classifier_counting_inference_rows, folds=3, strategy=strategy).fit(
        x, y, epochs=2, batch_size=32, verbose=0, callbacks=callbacks
    )
    for k, (_, val) in enumerate(result.plan.folds):
        model = result.models[k]
        # Stacked: one pass per epoch that validates and predicts. Sequential:
        # Keras' validation per epoch, then one predict. One more pass only
        # when a callback changed the weights after the last validation.
        passes = float(model.get_layer("counter").rows.numpy()) / len(val)
        assert passes == (2 if strategy == "stacked" else 3) + change_at_the_end
        # Either way, the scores and the out-of-fold rows are the final weights'.
        np.testing.assert_allclose(model.predict(x[val], verbose=0), result.oof_predictions[val], atol=1e-6)
        loss, accuracy = model.evaluate(x[val], y[val], verbose=0)
        assert result.scores["loss"][k] == pytest.approx(loss, rel=1e-4)
        assert result.scores["accuracy"][k] == pytest.approx(accuracy)
    # Without the change the folds learned; with it they answer class 0.
    if change_at_the_end:
        assert max(result.scores["accuracy"]) < 0.2
    else:
        assert min(result.scores["accuracy"]) > 0.5


def test_the_traced_validation_pass_gives_what_keras_predict_gives(digits, monkeypatch):
    # A Keras-level callback on test batches (here the fault injector, set
    # never to fire) sends validation through Keras' predict, batch by batch;
    # otherwise it is one traced call over a kept iterator. 599 held-out rows
    # a fold make three validation batches of at most 256.
    x, y = digits
    runs = []
    for fault in (None, "epoch=99,test_batch=0"):
        if fault:
            monkeypatch.setenv("TFCV_FAULT", fault)
        cv = tfcv.CrossValidator(tiny_classifier, folds=3, seed=1, strategy="stacked")
        runs.append(cv.fit(x, y, epochs=3, batch_size=32, verbose=0))
    traced, keras_predict = runs
    np.testing.assert_allclose(traced.oof_predictions, keras_predict.oof_predictions, atol=1e-6)
    assert traced.scores["accuracy"] == keras_predict.scores["accuracy"]
    for a, b in zip(traced.histories, keras_predict.histories):
        np.testing.assert_allclose(a["val_loss"], b["val_loss"], rtol=1e-5)
    assert traced.mean("accuracy") > 0.5


def stacked_in_both_loops(build, x, y, monkeypatch, **fit_kwargs):
    """The same stacked cross-validation twice: in tfcv's own step loop,
    then with Keras' loop forced; returns both results."""
    from tfcv import _stacked

    runs = []
    for loop in ("tfcv", "keras"):
        if loop == "keras":
            monkeypatch.setattr(_stacked._StackedFolds, "_make_train_function",
                                lambda self, force=True: keras.Model.make_train_function(self, force=True))
        cv = tfcv.CrossValidator(build, folds=3, seed=2, strategy="stacked")
        runs.append(cv.fit(x, y, batch_size=32, verbose=0, **fit_kwargs))
    return runs


def test_the_stacked_step_loop_trains_exactly_as_keras_loop(small_digits, monkeypatch):
    # tfcv runs an epoch's steps in its own while loop (no optionals, no
    # conds); Keras' loop must give the same training, step for step, with a
    # fold stopping early (the gated steps) and without.
    x, y = small_digits
    ours, keras_loop = stacked_in_both_loops(tiny_classifier, x, y, monkeypatch, epochs=4,
                                             callbacks=[StopFold(fold=0, epoch=1)])
    assert [len(h["loss"]) for h in ours.histories] == [len(h["loss"]) for h in keras_loop.histories] == [2, 4, 4]
    for a, b in zip(ours.histories, keras_loop.histories):
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    np.testing.assert_allclose(ours.oof_predictions, keras_loop.oof_predictions, atol=1e-5)
    assert ours.mean("accuracy") > 0.5


class ValidateWithHalvedWeights(keras.callbacks.Callback):
    """Validates with other weights than it trains, as SwapEMAWeights does:
    swaps them in at on_test_begin and back at on_test_end."""

    def on_test_begin(self, logs=None):
        self.trained = self.model.get_weights()
        self.model.set_weights([w * 0.5 for w in self.trained])

    def on_test_end(self, logs=None):
        self.model.set_weights(self.trained)


@pytest.mark.parametrize("strategy", ["stacked", "sequential"])
def test_a_validation_run_with_swapped_in_weights_does_not_score_the_folds(small_digits, strategy):
    x, y = small_digits
    result = tfcv.CrossValidator(classifier_counting_inference_rows, folds=3, strategy=strategy).fit(
        x, y, epochs=1, batch_size=32, verbose=0, callbacks=[ValidateWithHalvedWeights()]
    )
    for k, (_, val) in enumerate(result.plan.folds):
        model = result.models[k]
        np.testing.assert_allclose(model.predict(x[val], verbose=0), result.oof_predictions[val], atol=1e-6)
        loss, _ = model.evaluate(x[val], y[val], verbose=0)
        assert result.scores["loss"][k] == pytest.approx(loss, rel=1e-4)


class ProbabilitiesAtPredict(keras.Model):
    """Answers logits from `call` (and to its metrics), probabilities from `predict`."""

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return keras.ops.softmax(self(x, training=False))


class FlipAveragedMetrics(keras.Model):
    """Its own `test_step` scores the mean of an image's and its mirror's predictions."""

    def test_step(self, data):
        x, y = data[0], data[1]
        y_pred = (self(x, training=False) + self(keras.ops.flip(x, axis=2), training=False)) / 2
        self._loss_tracker.update_state(self.compute_loss(x=x, y=y, y_pred=y_pred, training=False))
        return self.compute_metrics(x, y, y_pred)


@pytest.mark.parametrize("model_class", [ProbabilitiesAtPredict, FlipAveragedMetrics])
def test_out_of_fold_predictions_are_what_predict_gives_when_the_model_overrides_a_step(small_digits, model_class):
    x, y = small_digits

    def build():
        inputs = keras.Input((8, 8, 1))
        logits = model_class is ProbabilitiesAtPredict
        outputs = keras.layers.Dense(10, activation=None if logits else "softmax")(keras.layers.Flatten()(inputs))
        model = model_class(inputs, outputs)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=logits)
        model.compile(optimizer=keras.optimizers.Adam(0.02), loss=loss, metrics=["accuracy"])
        return model

    result = tfcv.CrossValidator(build, folds=3, strategy="stacked").fit(x, y, epochs=1, batch_size=32, verbose=0)
    for k, (_, val) in enumerate(result.plan.folds):
        np.testing.assert_allclose(result.models[k].predict(x[val], verbose=0), result.oof_predictions[val], atol=1e-6)
    np.testing.assert_allclose(result.oof_predictions.sum(axis=1), 1.0, atol=1e-5)


def test_early_stopping_is_per_fold_and_training_ends_when_every_fold_stopped(small_digits):
    x, y = small_digits
    # No epoch after the first improves val_loss by min_delta, so every fold's
    # own copy stops after epoch 0 + patience; then the whole fit ends.
    early = keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=10.0, patience=2)
    result = tfcv.CrossValidator(tiny_classifier, folds=3, strategy="stacked").fit(
        x, y, epochs=8, batch_size=32, verbose=0, callbacks=[early]
    )
    assert [len(h["loss"]) for h in result.histories] == [3, 3, 3]
    # The callback passed in is left untouched; each fold ran on its own copy.
    assert early.wait == 0 and early.stopped_epoch == 0


def test_fold_callbacks_see_each_folds_logs(small_digits, tmp_path):
    x, y = small_digits
    ckpt = tfcv.callbacks.FoldModelCheckpoint(str(tmp_path / "ckpt" / "fold{fold}.keras"))
    csv_path = tmp_path / "log.csv"
    result = tfcv.CrossValidator(tiny_classifier, folds=3, strategy="stacked").fit(
        x, y, epochs=3, batch_size=32, verbose=0, callbacks=[ckpt, tfcv.callbacks.FoldCSVLogger(str(csv_path))]
    )
    for k in range(3):
        saved = keras.saving.load_model(tmp_path / "ckpt" / f"fold{k}.keras")
        np.testing.assert_allclose(saved.predict(x[:16], verbose=0), result.models[k].predict(x[:16], verbose=0), atol=1e-6)
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((int(r["fold"]), int(r["epoch"])) for r in rows) == [(k, e) for k in range(3) for e in range(3)]
    for row in rows:
        k, epoch = int(row["fold"]), int(row["epoch"])
        assert float(row["val_accuracy"]) == pytest.approx(result.histories[k]["val_accuracy"][epoch])


class CrashAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.crash_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.crash_epoch:
            raise RuntimeError("simulated crash")


def test_stacked_run_resumes_from_its_last_backed_up_epoch(small_digits, tmp_path):
    x, y = small_digits
    run_dir = tmp_path / "run"
    cv = tfcv.CrossValidator(tiny_classifier, folds=3, strategy="stacked")
    with pytest.raises(RuntimeError, match="simulated crash"):
        cv.fit(x, y, epochs=4, batch_size=32, run_dir=run_dir, verbose=0, callbacks=[CrashAt(2)])
    assert not list(run_dir.glob("fold_*"))
    result = cv.fit(x, y, epochs=4, batch_size=32, run_dir=run_dir, verbose=0)
    assert [info["initial_epoch"] for info in result.fold_info] == [2, 2, 2]
    assert all(len(h["loss"]) == 4 for h in result.histories)
    assert result.mean("accuracy") > 0.8
    assert not (run_dir / ".backup").exists() or not any((run_dir / ".backup").iterdir())
    assert tfcv.CVResult.load(run_dir).scores == result.scores


def test_stacked_streams_a_tfds_plan(tfds_digits_dir):
    plan = tfcv.data.tfds_folds("tfcv_digits", 3, data_dir=tfds_digits_dir)
    cv = tfcv.CrossValidator(lambda: tfcv.models.reference_cnn((8, 8, 1), 10), plan, strategy="stacked")
    result = cv.fit(None, epochs=3, batch_size=64, verbose=0)
    assert result.info["strategy"] == "stacked"
    assert result.mean("accuracy") > 0.8
    assert result.oof_predictions.shape == (1797, 10) and not np.isnan(result.oof_predictions).any()


# ------------------------------------------------------------ one trace


@keras.saving.register_keras_serializable(package="tfcv_tests")
class TraceCounter(keras.layers.Layer):
    """Identity; counts how often a training graph is traced through it."""

    traces = 0

    def call(self, inputs, training=False):
        if training and tf.inside_function():
            type(self).traces += 1
        return inputs


def counted_classifier():
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(TraceCounter()(inputs))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("strategy", ["sequential", "stacked"])
def test_training_is_traced_as_often_for_four_folds_as_for_two(small_digits, strategy):
    x, y = small_digits
    traces = {}
    for folds in (2, 4):
        TraceCounter.traces = 0
        result = tfcv.CrossValidator(counted_classifier, folds=folds, strategy=strategy).fit(
            x, y, epochs=3, batch_size=32, verbose=0
        )
        traces[folds] = TraceCounter.traces
        assert result.mean("accuracy") > 0.6
    # Fold 0's train step is traced once (its metrics are built before the
    # first trace, which would otherwise run twice); every other fold reuses it.
    assert traces[4] == traces[2] == 1
    # Still independent models.
    weights = [m.get_weights()[0] for m in result.models]
    assert all(not np.allclose(weights[0], w) for w in weights[1:])


def test_reusing_one_traced_model_trains_exactly_like_fresh_models(small_digits, monkeypatch):
    from tfcv import _sequential

    x, y = small_digits
    reused = tfcv.CrossValidator(tiny_classifier, folds=3, seed=5).fit(x, y, epochs=2, batch_size=32, verbose=0)
    # The same run with every fold trained on its own freshly built model.
    monkeypatch.setattr(_sequential.TracedModelReuse, "adopt", lambda self, fresh: fresh)
    fresh = tfcv.CrossValidator(tiny_classifier, folds=3, seed=5).fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert reused.scores == fresh.scores
    for a, b in zip(reused.models, fresh.models):
        for wa, wb in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(wa, wb)


# ------------------------------------------------------------ bad input


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match=r"strategy='parallel'.*'sequential', 'stacked', 'auto'"):
        tfcv.CrossValidator(tiny_classifier, strategy="parallel")


def test_stacked_does_not_combine_with_n_jobs(tiny_xy_small):
    x, y = tiny_xy_small
    with pytest.raises(ValueError, match=r"n_jobs=2.*strategy='sequential'"):
        tfcv.CrossValidator(tiny_classifier, folds=2, strategy="stacked").fit(x, y, n_jobs=2, verbose=0)


@pytest.fixture()
def tiny_xy_small(small_digits):
    x, y = small_digits
    return x[:120], y[:120]


class OwnFit(keras.Model):
    def fit(self, *args, **kwargs):
        return super().fit(*args, **kwargs)


def own_fit_classifier():
    inputs = keras.Input((8, 8, 1))
    model = OwnFit(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs)))
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def stateful_rnn():
    inputs = keras.Input(batch_shape=(8, 8, 8))
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.SimpleRNN(4, stateful=True)(inputs)))
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize("build, reason", [(own_fit_classifier, "overrides fit"), (stateful_rnn, "is stateful")])
def test_unstackable_models_are_refused_with_the_reason(build, reason, tiny_xy_small):
    x, y = tiny_xy_small
    if build is stateful_rnn:
        x = x.reshape(len(x), 8, 8)
    with pytest.raises(ValueError, match=rf"cannot be stacked: .*{reason}.*strategy='sequential'"):
        tfcv.CrossValidator(build, folds=2, strategy="stacked").fit(x, y, verbose=0)


def test_auto_is_the_default_and_falls_back_to_sequential_saying_why(tiny_xy_small):
    x, y = tiny_xy_small
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # falling back is what the default is for
        result = tfcv.CrossValidator(own_fit_classifier, folds=2).fit(x, y, epochs=1, verbose=0)
    assert result.info["strategy"] == "sequential"
    assert "overrides fit" in result.info["strategy_reason"]
    auto = tfcv.CrossValidator(tiny_classifier, folds=2).fit(x, y, epochs=1, verbose=0)
    assert auto.info["strategy"] == "stacked"
    assert "fit in memory" in auto.info["strategy_reason"]
    with_jobs = tfcv.CrossValidator(tiny_classifier, folds=2, strategy="auto")
    assert with_jobs._choose_strategy(tiny_classifier(), 2, 32, 2, None) == (
        "sequential", "n_jobs=2 trains the folds in joblib workers")


def test_models_sharing_layers_are_refused(tiny_xy_small):
    x, y = tiny_xy_small
    shared = keras.layers.Dense(10, activation="softmax")

    def build():
        inputs = keras.Input((8, 8, 1))
        model = keras.Model(inputs, shared(keras.layers.Flatten()(inputs)))
        model.compile("adam", "sparse_categorical_crossentropy")
        return model

    with pytest.raises(ValueError, match="share variable"):
        tfcv.CrossValidator(build, folds=2, strategy="stacked").fit(x, y, verbose=0)


@pytest.mark.parametrize("users_setting", [None, True])
def test_stacked_fit_leaves_the_process_wide_graph_optimizer_setting_as_it_was(tiny_xy_small, users_setting):
    # The stacked functions run with Grappler off; only while they run.
    x, y = tiny_xy_small
    if users_setting is not None:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": users_setting})
    try:
        result = tfcv.CrossValidator(tiny_classifier, folds=2, strategy="stacked").fit(x, y, epochs=1, verbose=0)
        assert result.info["strategy"] == "stacked"
        after = tf.config.optimizer.get_experimental_options().get("disable_meta_optimizer", False)
        assert after is bool(users_setting)
    finally:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": False})


def test_auto_says_which_strategy_it_chose_and_why(tiny_xy_small):
    import io

    x, y = tiny_xy_small
    out = io.StringIO()
    result = tfcv.CrossValidator(tiny_classifier, folds=2, strategy="auto").fit(
        x, y, epochs=1, callbacks=[tfcv.callbacks.FoldProgress(out, dynamic=False)]
    )
    assert result.info["strategy"] == "stacked"
    assert result.info["strategy_reason"].startswith("the 2 fold models fit in memory side by side (about ")
    assert f"Strategy: stacked ({result.info['strategy_reason']})." in out.getvalue()


def test_auto_trains_sequentially_when_the_copies_would_not_fit_in_memory():
    from tfcv import _stacking

    inputs = keras.Input((2048, 2048, 3))
    h = keras.layers.Conv2D(64, 3, padding="same")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h)))
    model.compile("adam", "sparse_categorical_crossentropy")
    needed = _stacking.memory_estimate(model, 5, 32)
    # 5 copies x 32 images x 2048x2048x64 float32 feature maps, three times over.
    assert needed >= 5 * 32 * 2048 * 2048 * 64 * 4 * 3
    available = _stacking.available_memory()
    assert available is not None and needed > available // 2
    strategy, reason = tfcv.CrossValidator(tiny_classifier, strategy="auto")._choose_strategy(model, 5, 32, None, None)
    assert strategy == "sequential"
    assert reason.startswith("the 5 fold models side by side would not fit in memory (about ")



def recording_test_batches(sink):
    class PlainKeras(keras.callbacks.Callback):
        def on_test_batch_end(self, batch, logs=None):
            sink.append(("plain", None, batch, sorted(logs or {})))

    class FoldAware(tfcv.callbacks.FoldCallback):
        def on_test_batch_end(self, batch, logs=None):
            sink.append(("fold", self.fold, batch, sorted(logs or {})))

    return [PlainKeras(), FoldAware()]


@pytest.mark.parametrize("strategy", ["stacked", "sequential"])
def test_fold_callbacks_see_every_validation_batch_with_the_folds_logs(digits, strategy):
    # 599 held-out rows a fold make three validation batches of at most 256;
    # each fold's callbacks see them after every epoch, as Keras' evaluate
    # calls them, with that fold's metrics so far.
    x, y = digits
    sink = []
    result = tfcv.CrossValidator(tiny_classifier, folds=3, seed=1, strategy=strategy).fit(
        x, y, epochs=2, batch_size=64, verbose=0, callbacks=recording_test_batches(sink)
    )
    assert result.mean("accuracy") > 0.5
    assert all(names == ["accuracy", "loss"] for *_, names in sink)
    # A plain Keras callback runs as one copy per fold; the fold-aware one
    # says which fold it is in.
    plain = [batch for kind, _, batch, _ in sink if kind == "plain"]
    assert sorted(plain) == [0] * 6 + [1] * 6 + [2] * 6
    per_fold = {}
    for kind, fold, batch, _ in sink:
        if kind == "fold":
            per_fold.setdefault(fold, []).append(batch)
    assert per_fold == {k: [0, 1, 2, 0, 1, 2] for k in range(3)}


class LogsOfUnknownShape(keras.Model):
    """Adds to its train step's logs a vector whose length only the batch
    decides (always 1 here), so the logs have no fixed shape when traced."""

    def train_step(self, data):
        logs = super().train_step(data)
        rows = keras.ops.shape(data[0])[0]
        return {**logs, "ones": keras.ops.ones([rows // 10_000 + 1])}


def test_train_logs_without_fixed_shapes_run_in_keras_loop_with_the_same_training(small_digits, monkeypatch):
    # tfcv's own step loop needs the logs' shapes to carry them through its
    # while loop; without them the stacked model trains in Keras' loop.
    def build():
        keras_model = tiny_classifier()
        model = LogsOfUnknownShape(keras_model.inputs, keras_model.outputs)
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model

    x, y = small_digits
    fallback, keras_loop = stacked_in_both_loops(build, x, y, monkeypatch, epochs=3)
    for a, b in zip(fallback.histories, keras_loop.histories):
        assert a["ones[0]"] == [1.0, 1.0, 1.0]
        np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    np.testing.assert_allclose(fallback.oof_predictions, keras_loop.oof_predictions, atol=1e-5)
    assert fallback.mean("accuracy") > 0.5
