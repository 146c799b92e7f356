"""Tests of tfcv.export: the signature graphs, randomized passes, safe loading, atomic
publishing and the export CLI. `verify` is tested in test_verify.py, the layout in test_bundle.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcv
from tfcv import bundle, export
from tfcv.export import BundleError, Randomized


def _numeric_dirs(base):
    return sorted(name for name in os.listdir(base) if name.isdigit())


def _leftovers(base):
    return sorted(name for name in os.listdir(base) if name.startswith("."))


def bn_dropout_model(seed=0):
    """Augmentation, BatchNormalization and dropout. The BatchNormalization
    statistics are far from the batch statistics of its inputs, so
    training-mode BatchNorm would be obvious."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1), name="image")
    h = tfcv.layers.Augmentation([{"translate": 0.25}, {"contrast": 0.3}], seed=seed)(inputs)
    h = keras.layers.Conv2D(8, 3, padding="same")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dropout(0.5)(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(8, 0.7, "float32"))
    bn.moving_variance.assign(np.full(8, 3.0, "float32"))
    return model


@pytest.fixture(scope="module")
def ensemble_bundle(cv_result, tmp_path_factory):
    base = tmp_path_factory.mktemp("serving") / "digits"
    path = export.export_saved_model(cv_result, base, metadata={"owner": "tests"})
    return path


# ------------------------------------------------------------ fold ensemble


def test_fold_ensemble_matches_result_ensemble(cv_result, ensemble_bundle, digits):
    x, _ = digits
    x = x[:300]
    assert os.path.basename(ensemble_bundle) == "1"
    for name in ("saved_model.pb", "variables", "assets.extra/tfcv.json", "assets.extra/tf_serving_warmup_requests"):
        assert os.path.exists(os.path.join(ensemble_bundle, name)), name

    loaded = tf.saved_model.load(ensemble_bundle, tags=["serve"])
    assert set(loaded.signatures) == {"serving_default", "predict_folds", "predict_randomized"}
    served = loaded.signatures["serving_default"](inputs=tf.constant(x))["outputs"].numpy()
    expected = cv_result.ensemble("mean").predict(x, verbose=0)
    np.testing.assert_allclose(served, expected, atol=1e-5)

    folds = loaded.signatures["predict_folds"](inputs=tf.constant(x))["outputs"].numpy()
    assert folds.shape == (300, 3, 10)
    for k, model in enumerate(cv_result.models):
        np.testing.assert_allclose(folds[:, k], model.predict(x, verbose=0), atol=1e-5)

    randomized = loaded.signatures["predict_randomized"](inputs=tf.constant(x[:20]))
    assert set(randomized) == {"mean", "std", "predictive_entropy", "mutual_information", "agreement"}
    # The tiny CNN has no random layer: the folds are the only variation,
    # and every fold has the same weight, so the mean is the fold mean.
    np.testing.assert_allclose(randomized["mean"].numpy(), served[:20], atol=1e-5)
    np.testing.assert_allclose(randomized["std"].numpy(), folds[:20].std(axis=1), atol=1e-5)
    agreement = randomized["agreement"].numpy()
    votes = folds[:20].argmax(-1)
    expected_agreement = [np.bincount(row, minlength=10).max() / 3 for row in votes]
    np.testing.assert_allclose(agreement, expected_agreement, atol=1e-6)
    p = served[:20]
    np.testing.assert_allclose(
        randomized["predictive_entropy"].numpy(), -(p * np.log(np.clip(p, 1e-12, 1))).sum(-1), atol=1e-4
    )
    # Mutual information: entropy of the mean minus the folds' mean entropy.
    fold_entropy = -(folds[:20] * np.log(np.clip(folds[:20], 1e-12, 1))).sum(-1).mean(axis=1)
    np.testing.assert_allclose(
        randomized["mutual_information"].numpy(),
        np.maximum(randomized["predictive_entropy"].numpy() - fold_entropy, 0), atol=1e-4,
    )


def test_metadata(cv_result, ensemble_bundle):
    with open(os.path.join(ensemble_bundle, "assets.extra", "tfcv.json")) as f:
        meta = json.load(f)
    assert meta["n_folds"] == 3
    assert meta["task"] == "classification"
    assert meta["class_names"] == [str(i) for i in range(10)]
    assert meta["input_spec"] == {"name": "inputs", "shape": [None, 8, 8, 1], "dtype": "float32", "range": [0.0, 1.0]}
    assert meta["scores"]["per_fold"]["accuracy"] == pytest.approx(cv_result.scores["accuracy"])
    assert meta["scores"]["mean"]["accuracy"] == pytest.approx(cv_result.mean("accuracy"))
    assert meta["scores"]["std"]["accuracy"] == pytest.approx(cv_result.std("accuracy"))
    assert meta["randomized"] == {"samples": 16, "augmentation": True, "mc_dropout": True, "seed": None,
                                  "samples_per_fold": [6, 5, 5]}
    assert meta["versions"] == {"tfcv": tfcv.__version__, "tensorflow": tf.__version__, "keras": keras.__version__}
    assert meta["metadata"] == {"owner": "tests"}
    assert meta["model"] == "ensemble"
    assert meta["signatures"]["predict_folds"]["outputs"]["outputs"] == {"dtype": "float32", "shape": [None, 3, 10]}

    table = export.describe(ensemble_bundle)
    for fragment in ("serving_default", "predict_folds", "predict_randomized", "predictive_entropy",
                     "(None, 3, 10)", "cv accuracy", "samples=16", "9 records"):
        assert fragment in table, fragment


# -------------------------------------------------------- randomized passes


def test_randomized_keeps_batchnorm_in_inference_and_updates_no_state(tmp_path):
    model = bn_dropout_model()
    x = np.random.default_rng(1).random((4, 8, 8, 1), dtype="float32")
    before = [v.numpy().copy() for v in model.variables if "seed_generator" not in v.path]
    base = tmp_path / "bn"

    with pytest.warns(UserWarning, match="deterministic"):
        off = export.export_saved_model(model, base, randomized=Randomized(8, augmentation=False, mc_dropout=False))
    on = export.export_saved_model(model, base, randomized=Randomized(8))
    assert [os.path.basename(off), os.path.basename(on)] == ["1", "2"]
    after = [v.numpy() for v in model.variables if "seed_generator" not in v.path]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(b, a)

    # Off: randomized passes are inference passes, so the mean is the
    # deterministic prediction. Training-mode BatchNorm would be far off.
    loaded = tf.saved_model.load(off)
    served = loaded.signatures["serving_default"](image=x)["outputs"].numpy()
    np.testing.assert_allclose(served, model(x, training=False).numpy(), atol=1e-5)
    assert np.abs(served - model(x, training=True).numpy()).max() > 1e-2
    randomized = loaded.signatures["predict_randomized"](image=x)
    np.testing.assert_allclose(randomized["mean"].numpy(), served, atol=1e-6)
    assert np.abs(randomized["std"].numpy()).max() < 1e-6
    np.testing.assert_allclose(randomized["agreement"].numpy(), 1.0)

    # On: dropout randomizes, BatchNorm still uses its moving statistics.
    loaded = tf.saved_model.load(on)
    serve, rand = loaded.signatures["serving_default"], loaded.signatures["predict_randomized"]
    first = serve(image=x)["outputs"].numpy()
    np.testing.assert_array_equal(first, served)
    a, b = rand(image=x), rand(image=x)
    assert a["std"].numpy().max() > 1e-3
    assert not np.array_equal(a["mean"].numpy(), b["mean"].numpy())
    assert np.all((a["agreement"].numpy() > 0) & (a["agreement"].numpy() <= 1))
    variables = {v.name: v.numpy().copy() for v in loaded.variables}
    one = x[:1]
    for _ in range(1000):
        rand(image=one)
    np.testing.assert_array_equal(serve(image=x)["outputs"].numpy(), first)
    state = {v.name for v in loaded.randomized_state}
    changed = {v.name for v in loaded.variables if not np.array_equal(v.numpy(), variables[v.name])}
    assert changed and changed <= state


@pytest.mark.parametrize("augmentation", [True, False])
def test_each_source_of_randomness_alone(tmp_path, augmentation):
    model = bn_dropout_model()
    x = np.random.default_rng(3).random((4, 8, 8, 1), dtype="float32")
    path = export.export_saved_model(
        model, tmp_path / "m", randomized=Randomized(8, augmentation=augmentation, mc_dropout=not augmentation),
        warmup=False,
    )
    rand = tf.saved_model.load(path).signatures["predict_randomized"]
    a, b = rand(image=x), rand(image=x)
    assert a["std"].numpy().max() > 1e-3
    assert not np.array_equal(a["mean"].numpy(), b["mean"].numpy())


@keras.saving.register_keras_serializable(package="tfcv_tests")
class BatchRecorder(keras.layers.Layer):
    """The identity; records the static batch size of every call."""

    seen: list = []

    def call(self, x):
        BatchRecorder.seen.append(x.shape[0])
        return x


def test_layers_before_the_first_random_one_run_once(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), batch_size=3)
    h = keras.layers.Dense(16, activation="relu")(BatchRecorder()(inputs))
    h = keras.layers.BatchNormalization()(h)
    outputs = keras.layers.Dense(4, activation="softmax")(keras.layers.Dropout(0.5)(h))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).random((3, 6), dtype="float32")

    BatchRecorder.seen.clear()
    path = export.export_saved_model(model, tmp_path / "m", randomized=Randomized(8), warmup=False)
    # Traced for serving_default and predict_randomized, always on the batch
    # of 3, never on the 24 rows of the tiled batch.
    assert 24 not in BatchRecorder.seen and BatchRecorder.seen.count(3) >= 2
    signatures = tf.saved_model.load(path).signatures
    served = signatures["serving_default"](inputs=x)["outputs"].numpy()
    np.testing.assert_allclose(served, model(x).numpy(), atol=1e-5)
    randomized = signatures["predict_randomized"](inputs=x)
    assert randomized["std"].numpy().max() > 1e-3
    assert randomized["mean"].shape == (3, 4)

    with pytest.warns(UserWarning, match="deterministic"):
        path = export.export_saved_model(model, tmp_path / "m", warmup=False,
                                         randomized=Randomized(8, augmentation=False, mc_dropout=False))
    signatures = tf.saved_model.load(path).signatures
    np.testing.assert_allclose(signatures["predict_randomized"](inputs=x)["mean"].numpy(), served, atol=1e-6)


def test_warns_when_nothing_randomizes(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    with pytest.warns(UserWarning, match="predict_randomized will be deterministic"):
        export.export_saved_model(model, tmp_path / "m", randomized=Randomized(2), warmup=False)


def test_randomized_seed_replays_after_reload(tmp_path):
    model = bn_dropout_model()
    x = np.random.default_rng(2).random((3, 8, 8, 1), dtype="float32")
    state = [v.numpy().copy() for v in model.variables if "seed_generator" in v.path]
    paths = [export.export_saved_model(model, tmp_path / "seeded", randomized=Randomized(4, seed=7), warmup=False)
             for _ in range(2)]
    np.testing.assert_array_equal([v.numpy() for v in model.variables if "seed_generator" in v.path], state)
    outputs = [tf.saved_model.load(p).signatures["predict_randomized"](image=x)["mean"].numpy() for p in paths]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert not os.path.exists(os.path.join(paths[0], "assets.extra", "tf_serving_warmup_requests"))
    assert export.verify(paths[0], fresh_process=False)["replayed"] == 2


def test_randomized_validates_its_arguments(cv_result, tmp_path):
    assert repr(Randomized(4)) == "Randomized(samples=4, augmentation=True, mc_dropout=True, seed=None)"
    with pytest.raises(ValueError, match="samples=0"):
        Randomized(0)
    with pytest.raises(TypeError, match="mc_dropout='yes'"):
        Randomized(4, mc_dropout="yes")
    with pytest.raises(ValueError, match="samples=2 for 3 fold models"):
        export.export_saved_model(cv_result, tmp_path / "m", randomized=Randomized(2))
    with pytest.raises(TypeError, match="randomized=16"):
        export.export_saved_model(cv_result, tmp_path / "m", randomized=16)
    assert not os.path.exists(tmp_path / "m" / "1")


def test_without_randomized_and_other_tasks(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    outputs = keras.layers.Dense(2)(keras.layers.Dense(8, activation="relu")(inputs))
    regressor = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).uniform(-3, 3, (6, 5)).astype("float32")

    path = export.export_saved_model(regressor, tmp_path / "reg", randomized=None, metadata={"input_range": [-3, 3]})
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {"serving_default"}
    np.testing.assert_allclose(loaded.signatures["serving_default"](inputs=x)["outputs"], regressor(x), atol=1e-5)
    meta = json.loads(open(os.path.join(path, "assets.extra", "tfcv.json")).read())
    assert meta["task"] == "regression" and meta["class_names"] is None and meta["randomized"] is None
    values = [tf.make_ndarray(request.inputs["inputs"]) for request in bundle.read_warmup(path)]
    assert min(v.min() for v in values) >= -3 and max(v.max() for v in values) <= 3
    assert min(v.min() for v in values) < 0

    # A classifier that outputs logits serves probabilities.
    with pytest.warns(UserWarning, match="deterministic"):
        path = export.export_saved_model(regressor, tmp_path / "logits", randomized=Randomized(2),
                                         metadata={"task": "classification", "class_names": ["no", "yes"]})
    loaded = tf.saved_model.load(path)
    served = loaded.signatures["serving_default"](inputs=x)["outputs"].numpy()
    np.testing.assert_allclose(served, tf.nn.softmax(regressor(x)).numpy(), atol=1e-5)
    assert set(loaded.signatures["predict_randomized"](inputs=x)) == {"mean", "std", "predictive_entropy", "mutual_information", "agreement"}
    with pytest.raises(ValueError, match="3 names for a model with 2 classes"):
        export.export_saved_model(regressor, tmp_path / "bad", randomized=None,
                                  metadata={"task": "classification", "class_names": ["a", "b", "c"]})


def test_task_comes_from_the_layer_that_produces_the_output(tmp_path):
    keras.utils.set_random_seed(0)
    shared = keras.layers.Dense(4, activation="softmax")
    inputs = keras.Input((4,))
    models = {
        "shared": keras.Model(inputs, shared(shared(inputs))),  # the last call is not the layer's first
        "sequential": keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")]),
        "nested": keras.Model(inputs, keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])(
            keras.layers.Dense(4)(inputs))),
        "linear": keras.Model(inputs, keras.layers.Dense(3)(inputs)),
    }
    x = np.random.default_rng(0).random((3, 4), dtype="float32")
    for name, model in models.items():
        path = export.export_saved_model(model, tmp_path / name, randomized=None, warmup=False)
        meta = json.loads(open(os.path.join(path, "assets.extra", "tfcv.json")).read())
        assert meta["task"] == ("regression" if name == "linear" else "classification"), name
        served = tf.saved_model.load(path).signatures["serving_default"](inputs=x)["outputs"].numpy()
        np.testing.assert_allclose(served, model(x).numpy(), atol=1e-6)


def test_dict_outputs_become_named_signature_outputs(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    h = keras.layers.Dropout(0.3)(keras.layers.Dense(8)(inputs))
    model = keras.Model(inputs, {"a": keras.layers.Dense(2)(h), "b": keras.layers.Dense(1)(h)})
    path = export.export_saved_model(model, tmp_path / "m", randomized=Randomized(4), warmup=False)
    defs = export.read_signature_defs(path)
    assert set(defs["serving_default"]["outputs"]) == {"a", "b"}
    assert set(defs["predict_randomized"]["outputs"]) == {"a_mean", "a_std", "b_mean", "b_std"}
    x = np.random.default_rng(0).random((3, 5), dtype="float32")
    served = tf.saved_model.load(path).signatures["serving_default"](inputs=x)
    expected = model(x, training=False)
    for key in ("a", "b"):
        np.testing.assert_allclose(served[key].numpy(), expected[key].numpy(), atol=1e-5)


# ------------------------------------------------------------------ safety


class _Unregistered(keras.layers.Layer):
    def call(self, x):
        return x * 2.0


def _save(model, path):
    model.save(path)
    return str(path)


def test_export_refuses_unsafe_files(cv_result, tmp_path):
    inputs = keras.Input((8, 8, 1))
    lambda_model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2.0)(inputs))
    foreign_model = keras.Model(inputs, _Unregistered()(inputs))
    for model in (lambda_model, foreign_model):
        path = _save(model, tmp_path / f"{model.layers[-1].name}.keras")
        with pytest.raises(ValueError, match=r"(?s)Cannot load the model in .*safe"):
            export.export_saved_model(path, tmp_path / "serving")

    run_dir = tmp_path / "run"
    shutil.copytree(cv_result.run_dir, run_dir)
    _save(lambda_model, run_dir / "fold_1" / "model.keras")
    with pytest.raises(ValueError, match=r"fold_1.*safe_mode=True"):
        export.export_saved_model(run_dir, tmp_path / "serving")
    assert not os.path.exists(tmp_path / "serving") or _numeric_dirs(tmp_path / "serving") == []

    package = os.path.dirname(export.__file__)
    for name in sorted(os.listdir(package)):
        if name.endswith(".py"):
            source = open(os.path.join(package, name)).read()
            for unsafe in ("safe_mode=False", "enable_unsafe_deserialization", "pickle"):
                assert unsafe not in source, (name, unsafe)


def test_exports_a_saved_run_directory(cv_result, tmp_path):
    path = export.export_saved_model(cv_result.run_dir, tmp_path / "digits", randomized=None, warmup=False)
    x = np.random.default_rng(0).random((5, 8, 8, 1), dtype="float32")
    served = tf.saved_model.load(path).signatures["serving_default"](inputs=x)["outputs"].numpy()
    np.testing.assert_allclose(served, cv_result.predict(x), atol=1e-5)


@keras.saving.register_keras_serializable(package="tfcv_tests")
class EagerOnlyOffset(keras.layers.Layer):
    """Adds 1 when run eagerly: a layer whose traced graph differs from the model."""

    def call(self, x):
        return x + (1.0 if tf.executing_eagerly() else 0.0)


def test_mismatch_with_in_memory_model_publishes_nothing(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, EagerOnlyOffset()(keras.layers.Dense(3)(inputs)))
    with pytest.raises(BundleError, match=r"serving_default output 'outputs' differs .* by 1"):
        export.export_saved_model(model, tmp_path / "m", randomized=None)
    assert os.listdir(tmp_path / "m") == []


# ----------------------------------------------------------- atomic publish


def test_injected_failure_publishes_nothing_and_next_export_succeeds(tmp_path, monkeypatch):
    model = bn_dropout_model()
    base = tmp_path / "m"
    monkeypatch.setenv("TFCV_EXPORT_FAULT", "raise")
    with pytest.raises(RuntimeError, match="injected"):
        export.export_saved_model(model, base, randomized=Randomized(2))
    assert os.listdir(base) == []
    monkeypatch.delenv("TFCV_EXPORT_FAULT")
    assert export.export_saved_model(model, base, randomized=Randomized(2)) == str(base / "1")

    with pytest.raises(FileExistsError, match="Version 1 already exists"):
        export.export_saved_model(model, base, version=1)
    assert export.export_saved_model(model, base, version=1, overwrite=True, randomized=None) == str(base / "1")
    assert "predict_randomized" not in tf.saved_model.load(str(base / "1")).signatures
    assert export.export_saved_model(model, base, version=7, randomized=None) == str(base / "7")
    assert export.export_saved_model(model, base, randomized=None) == str(base / "8")
    assert _numeric_dirs(base) == ["1", "7", "8"] and _leftovers(base) == []


@pytest.mark.slow
def test_killed_export_leaves_no_version_and_next_export_succeeds(tmp_path):
    model_path = _save(bn_dropout_model(), tmp_path / "model.keras")
    base = tmp_path / "serving" / "m"
    code = "import sys; from tfcv.export import export_saved_model; export_saved_model(sys.argv[1], sys.argv[2])"
    env = {**os.environ, "TFCV_EXPORT_FAULT": "kill", "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", code, model_path, str(base)], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    leftovers = _leftovers(base)
    assert len(leftovers) == 1 and _numeric_dirs(base) == []
    # The process died with the whole bundle written, just before the rename.
    assert os.path.exists(base / leftovers[0] / "saved_model.pb")

    path = export.export_saved_model(model_path, base)
    assert path == str(base / "1")
    assert _leftovers(base) == [] and _numeric_dirs(base) == ["1"]
    assert export.verify(path, fresh_process=False)["replayed"] == 6


def _linear_model(scale):
    """A model whose output is `scale * x`, to tell versions apart."""
    inputs = keras.Input((4,), name="features")
    dense = keras.layers.Dense(2, use_bias=False)
    model = keras.Model(inputs, dense(inputs))
    dense.kernel.assign(np.full((4, 2), scale, "float32"))
    return model


def _served_output(version_dir):
    """What `tfcv serve` answers for a row of ones, through its Servable."""
    from tfcv.serving import Servable

    servable = Servable("m", int(os.path.basename(version_dir)), str(version_dir), batching=None)
    try:
        return servable.signature().predict({"features": np.ones((1, 4), np.float32)})["outputs"]
    finally:
        servable.close()


def _export_in_subprocess(model_path, base, fault, **kwargs):
    code = ("import sys; from tfcv.export import export_saved_model; "
            f"export_saved_model(sys.argv[1], sys.argv[2], randomized=None, **{kwargs!r})")
    env = {**os.environ, "TFCV_EXPORT_FAULT": fault, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-c", code, model_path, str(base)], env=env, capture_output=True,
                          timeout=300)


@pytest.mark.slow
def test_overwrite_killed_between_renames_keeps_a_version_served(tmp_path, monkeypatch):
    base = tmp_path / "serving" / "m"
    export.export_saved_model(_linear_model(1.0), base, version=1, randomized=None)
    new_model = _save(_linear_model(2.0), tmp_path / "new.keras")

    # One exchange: killed right after it, the new version is in place and
    # the old one waits in a leftover directory.
    proc = _export_in_subprocess(new_model, base, "kill-between-renames", version=1, overwrite=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert _numeric_dirs(base) == ["1"] and len(_leftovers(base)) == 1
    np.testing.assert_array_equal(_served_output(base / "1"), [[8.0, 8.0]])

    # Two renames (file systems without RENAME_EXCHANGE): killed between
    # them, no version is left until the next export puts the old one back.
    proc = _export_in_subprocess(_save(_linear_model(3.0), tmp_path / "v3.keras"), base,
                                 "no-exchange,kill-between-renames", version=1, overwrite=True)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert _numeric_dirs(base) == []
    assert any("-replacing-1-" in name for name in _leftovers(base))
    path = export.export_saved_model(_linear_model(4.0), base, randomized=None)
    assert path == str(base / "2") and _numeric_dirs(base) == ["1", "2"] and _leftovers(base) == []
    np.testing.assert_array_equal(_served_output(base / "1"), [[8.0, 8.0]])  # the old version, restored
    np.testing.assert_array_equal(_served_output(base / "2"), [[16.0, 16.0]])
    assert export.verify(base / "1", fresh_process=False)["replayed"] >= 1

    # An uninterrupted overwrite, both ways, replaces the version and leaves nothing behind.
    for fault in ("", "no-exchange"):
        monkeypatch.setenv("TFCV_EXPORT_FAULT", fault)
        export.export_saved_model(_linear_model(5.0), base, version=1, overwrite=True, randomized=None)
        np.testing.assert_array_equal(_served_output(base / "1"), [[20.0, 20.0]])
        assert _numeric_dirs(base) == ["1", "2"] and _leftovers(base) == []


@pytest.mark.parametrize("fault", ["", "no-exchange"], ids=["exchange", "two renames"])
def test_overwriting_a_linked_version_replaces_the_link_and_leaves_nothing(tmp_path, monkeypatch, fault):
    base, outside = tmp_path / "m", tmp_path / "outside"
    kept = export.export_saved_model(_linear_model(1.0), outside, randomized=None, warmup=False)
    os.makedirs(base)
    os.symlink(kept, base / "1")
    monkeypatch.setenv("TFCV_EXPORT_FAULT", fault)
    export.export_saved_model(_linear_model(2.0), base, version=1, overwrite=True, randomized=None, warmup=False)
    assert not os.path.islink(base / "1") and _leftovers(base) == []
    assert os.listdir(outside) == ["1"] and bundle.saved_model_file(kept) is not None

    # A link left by an export whose process is gone goes with the next export; what it points to stays.
    os.symlink(kept, base / ".tfcv-tmp-export-999999999-x")
    export.export_saved_model(_linear_model(3.0), base, randomized=None, warmup=False)
    assert _numeric_dirs(base) == ["1", "2"] and _leftovers(base) == []
    assert bundle.saved_model_file(kept) is not None


def test_a_second_export_to_the_base_path_waits_for_the_first(tmp_path, monkeypatch):
    import fcntl
    import threading

    from tfcv.export import _publish

    base = tmp_path / "m"
    os.makedirs(base)
    waiting, wait_for_lock = threading.Event(), _publish._wait_for_lock

    def announce(fd, base_path):
        waiting.set()
        wait_for_lock(fd, base_path)

    monkeypatch.setattr(_publish, "_wait_for_lock", announce)
    model, published = _linear_model(1.0), []
    first = export.export_saved_model(model, tmp_path / "first", randomized=None, warmup=False)
    export_thread = threading.Thread(target=lambda: published.append(
        export.export_saved_model(model, base, randomized=None, warmup=False)))
    fd = os.open(base, os.O_RDONLY)
    with pytest.warns(UserWarning, match="Another export to .* is running; waiting for it to finish"):
        try:
            # The lock of another export, which publishes version 1 while the second one waits.
            fcntl.flock(fd, fcntl.LOCK_EX)
            export_thread.start()
            assert waiting.wait(timeout=300), "the second export did not wait for the lock"
            assert os.listdir(base) == []  # it has not chosen a version yet
            os.replace(first, base / "1")
        finally:
            os.close(fd)
        export_thread.join(timeout=300)
    assert published == [str(base / "2")] and _numeric_dirs(base) == ["1", "2"] and _leftovers(base) == []


def test_a_base_path_that_is_a_file_is_refused_by_name(tmp_path):
    path = tmp_path / "digits"
    path.write_text("not a directory")
    with pytest.raises(ValueError, match=r"Received: base_path='.*digits', which is a file. Expected a directory"):
        export.export_saved_model(_linear_model(1.0), path, randomized=None, warmup=False)
    assert path.read_text() == "not a directory"


def test_versions_above_int64_are_refused(tmp_path):
    model = _linear_model(1.0)
    base = tmp_path / "m"
    for version, error in ((2**63, ValueError), (10**30, ValueError), (-1, ValueError), ("1", TypeError),
                           (1.0, TypeError), (True, TypeError)):
        with pytest.raises(error, match=(
            rf"Invalid value for argument `version`. Received: version={version!r}. "
            r"Expected an int between 0 and 9223372036854775807.")):
            export.export_saved_model(model, base, version=version, randomized=None, warmup=False)
    assert os.listdir(base) == []
    largest = export.export_saved_model(model, base, version=2**63 - 1, randomized=None, warmup=False)
    assert bundle.published_versions(base) == {2**63 - 1: largest}
    with pytest.raises(ValueError, match="Cannot choose a version above 9223372036854775807"):
        export.export_saved_model(model, base, randomized=None, warmup=False)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)],
                         ids=["umask 022", "umask 077"])
def test_published_version_honours_the_umask(tmp_path, mask, file_mode, dir_mode):
    base = tmp_path / "m"
    os.makedirs(base)
    previous = os.umask(mask)
    try:
        path = export.export_saved_model(_linear_model(1.0), base, randomized=None)
        # An overwrite publishes through the other path (an exchange).
        export.export_saved_model(_linear_model(1.0), base, version=1, overwrite=True, randomized=None)
    finally:
        os.umask(previous)
    modes = {}
    for directory, _, files in os.walk(path):
        modes[os.path.relpath(directory, path)] = os.stat(directory).st_mode & 0o777
        for name in files:
            modes[os.path.relpath(os.path.join(directory, name), path)] = os.stat(
                os.path.join(directory, name)).st_mode & 0o777
    for name in ("saved_model.pb", "variables/variables.index", "assets.extra/tfcv.json",
                 "assets.extra/tf_serving_warmup_requests"):
        assert name in modes, sorted(modes)
    wanted = {name: dir_mode if os.path.isdir(os.path.join(path, name)) else file_mode for name in modes}
    assert modes == wanted


# --------------------------------------------------------------------- CLI


def test_cli_export_and_inspect(cv_result, tmp_path, capsys):
    from tfcv import cli

    base = tmp_path / "serving" / "models" / "digits"
    assert cli.main(["export", cv_result.run_dir, "--base-path", str(base), "--samples", "3"]) == 0
    assert f"Exported TF Serving bundle to {base / '1'}" in capsys.readouterr().out
    meta = json.loads((base / "1" / "assets.extra" / "tfcv.json").read_text())
    assert meta["randomized"]["samples"] == 3 and meta["n_folds"] == 3

    assert cli.main(["export", cv_result.run_dir, "--base-path", str(base), "--version", "5", "--no-randomized"]) == 0
    assert "predict_randomized" not in export.read_signature_defs(base / "5")
    assert cli.main(["export", cv_result.run_dir, "--base-path", str(base), "--version", "5"]) == 2
    err = capsys.readouterr().err
    assert "Version 5 already exists" in err and "(tfcv export --overwrite)" in err

    assert cli.main(["inspect", str(base / "1")]) == 0
    out = capsys.readouterr().out
    for fragment in ("serving_default", "input   inputs", "float32", "(None, 8, 8, 1)", "predict_folds",
                     "(None, 3, 10)", "cv accuracy", "samples=3"):
        assert fragment in out, fragment
    assert cli.main(["inspect", str(tmp_path)]) == 2
    assert "not a SavedModel version directory" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_run_exports_at_the_end(tmp_path, capsys):
    from tfcv import cli

    base = tmp_path / "serving" / "digits"
    argv = ["run", "--folds", "2", "--epochs", "1", "--run-dir", str(tmp_path / "run"), "--export", str(base),
            "--verbose", "0"]
    assert cli.main(argv) == 0
    assert f"Exported TF Serving bundle to {base / '1'}" in capsys.readouterr().out
    meta = json.loads((base / "1" / "assets.extra" / "tfcv.json").read_text())
    assert meta["n_folds"] == 2 and meta["input_spec"]["name"] == "image"
    assert set(export.read_signature_defs(base / "1")) == {"serving_default", "predict_folds", "predict_randomized"}


def test_class_names_of_string_labels_travel_into_the_bundle(small_digits, tmp_path):
    from tests.conftest import tiny_classifier

    x, y = small_digits
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    result = tfcv.CrossValidator(tiny_classifier, folds=2, seed=0).fit(x[:200], names[y[:200]], epochs=1, verbose=0)
    path = export.export_saved_model(result, tmp_path / "model", randomized=None, warmup=False)
    # Sorted as scikit-learn's LabelEncoder sorts them: class i is the i-th name.
    assert bundle.read_metadata(path)["class_names"] == sorted(names.tolist())
