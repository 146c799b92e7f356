"""Folds in parallel through joblib backends (local processes, Ray), and
tf.distribute inside a fold."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfcv

BUILD = functools.partial(tfcv.models.reference_cnn, (8, 8, 1), 10)


@pytest.fixture(scope="module")
def data(small_digits):
    return small_digits


@pytest.fixture(scope="module")
def sequential(data):
    x, y = data
    return tfcv.CrossValidator(BUILD, folds=4, seed=0, strategy="sequential").fit(x, y, epochs=3, verbose=0)


def assert_same_run(parallel, sequential):
    assert parallel.plan == sequential.plan
    assert parallel.info["seeds"] == sequential.info["seeds"]
    np.testing.assert_allclose(parallel.scores["accuracy"], sequential.scores["accuracy"], atol=0.01)


@pytest.mark.slow
def test_n_jobs_with_local_processes_matches_sequential(data, sequential, tmp_path):
    x, y = data
    result = tfcv.CrossValidator(BUILD, folds=4, seed=0).fit(x, y, epochs=3, verbose=0, n_jobs=2, run_dir=tmp_path / "run")
    assert_same_run(result, sequential)
    # Models are rebuilt from returned weights and predict like the workers did.
    val = result.plan.folds[2][1]
    np.testing.assert_allclose(result.models[2].predict(x[val], verbose=0), result.val_predictions[2], atol=1e-5)
    assert tfcv.CVResult.load(tmp_path / "run").scores == result.scores
    # The worker's optimizer state came back with the weights: 3 epochs of steps.
    steps = -(-len(result.plan.folds[2][0]) // 32)
    assert int(result.models[2].optimizer.iterations.numpy()) == 3 * steps
    # Three epochs of the reference CNN on 600 digits: far above chance (0.1).
    assert result.mean("accuracy") > 0.5


@pytest.mark.slow
def test_n_jobs_on_a_local_ray_cluster(data, sequential):
    ray = pytest.importorskip("ray", reason="install the ray extra: pip install 'tfcv[ray]'")
    import joblib
    from ray.util.joblib import register_ray

    x, y = data
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        register_ray()
        with joblib.parallel_backend("ray"):
            result = tfcv.CrossValidator(BUILD, folds=4, seed=0).fit(x, y, epochs=3, verbose=0, n_jobs=2)
    finally:
        ray.shutdown()
    assert_same_run(result, sequential)


def test_unpicklable_build_fn_is_refused_with_the_fix(data):
    import threading

    x, y = data
    lock = threading.Lock()

    def build():
        with lock:
            return BUILD()

    with pytest.raises(TypeError, match="cannot be pickled.*module-level function or a tfcv.ModelBuilder"):
        tfcv.CrossValidator(build, folds=2).fit(x, y, epochs=1, verbose=0, n_jobs=2)


@pytest.mark.slow
def test_local_workers_start_tensorflow_quietly_and_keep_real_messages():
    # A worker's own stderr, so a fresh process: pytest's capture would not reach a reused worker.
    script = textwrap.dedent(
        """
        import os, warnings
        import joblib
        from tfcv._parallel import _worker_start

        def work(k):
            import tensorflow  # noqa: F401
            warnings.warn(f"a real warning from task {k}")
            os.write(2, f"E0000 00:00:1.0 1 kernel.cc:9] a real error from task {k}\\n".encode())

        backend, _ = joblib.parallel.get_active_backend()
        joblib.Parallel(n_jobs=2, **_worker_start(backend))(joblib.delayed(work)(k) for k in range(2))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not re.search(r"^[IW]\d{4} |absl::InitializeLog|cudart_stub|oneDNN|cuInit", proc.stderr, re.M), proc.stderr
    for k in range(2):
        assert f"UserWarning: a real warning from task {k}" in proc.stderr
        assert f"kernel.cc:9] a real error from task {k}" in proc.stderr


def test_a_backends_own_worker_initializer_is_kept():
    import joblib

    from tfcv._parallel import _worker_start
    from tfcv._tf_startup import start_tensorflow

    with joblib.parallel_backend("loky"):
        assert _worker_start(joblib.parallel.get_active_backend()[0]) == {"initializer": start_tensorflow}
    with joblib.parallel_backend("loky", initializer=print):
        assert _worker_start(joblib.parallel.get_active_backend()[0]) == {}
    with joblib.parallel_backend("threading"):
        assert _worker_start(joblib.parallel.get_active_backend()[0]) == {}


@pytest.mark.parametrize(("n_jobs", "match"), [(0, "n_jobs=0"), (-3, "n_jobs=-3"), (1.5, "n_jobs=1.5")])
def test_bad_n_jobs(data, n_jobs, match):
    x, y = data
    with pytest.raises(ValueError, match=match):
        tfcv.CrossValidator(BUILD, folds=2).fit(x, y, epochs=1, n_jobs=n_jobs)


def test_bad_distribute(data):
    x, y = data
    with pytest.raises(TypeError, match="distribute='mirrored'"):
        tfcv.CrossValidator(BUILD, folds=2).fit(x, y, epochs=1, distribute="mirrored")


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus_trains_every_fold(tmp_path):
    # Logical devices must be configured before TensorFlow starts: a fresh process.
    script = textwrap.dedent(
        """
        import json, sys
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import tfcv
        x, y = tfcv.datasets.load_digits()
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        import keras

        def build():
            inputs = keras.Input((8, 8, 1))
            h = keras.layers.Dense(64, activation="relu")(keras.layers.Flatten()(inputs))
            model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
            model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
            return model

        cv = tfcv.CrossValidator(build, folds=2)
        result = cv.fit(x[:600], y[:600], epochs=6, batch_size=32, distribute=strategy, verbose=0)
        weights = result.models[0].weights[0]
        print(json.dumps({"replicas": strategy.num_replicas_in_sync, "accuracy": result.scores["accuracy"],
                          "distributed": type(weights).__name__}))
        """
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert len(report["accuracy"]) == 2
    assert min(report["accuracy"]) > 0.6
