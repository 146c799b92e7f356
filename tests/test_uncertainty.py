"""Tests of the uncertainty metrics (hand-computed values), temperature
scaling on the folds (`CVResult.calibration`, `calibration="temperature"`),
conformal sets and intervals (`Conformal`, `predict_set`,
`predict_interval`), served through `tfcv serve` as well."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import sys

import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcv
from tfcv import _calibration as cal
from tfcv import bundle, export, uncertainty
from tfcv.export import Conformal, Randomized

# ------------------------------------------------------------------ metrics

P = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4], [0.05, 0.15, 0.8]])
Y = np.array([0, 2, 2, 2])


def test_accuracy_nll_brier_by_hand():
    assert cal.accuracy(Y, P) == 0.75
    expected_nll = -(math.log(0.7) + math.log(0.3) + math.log(0.4) + math.log(0.8)) / 4
    assert cal.negative_log_likelihood(Y, P) == pytest.approx(expected_nll, abs=1e-12)
    rows = [0.3**2 + 0.2**2 + 0.1**2, 0.1**2 + 0.6**2 + 0.7**2, 0.3**2 + 0.3**2 + 0.6**2, 0.05**2 + 0.15**2 + 0.2**2]
    assert cal.brier_score(Y, P) == pytest.approx(np.mean(rows), abs=1e-12)
    # One sigmoid column is the positive class of a binary problem.
    assert cal.negative_log_likelihood([1, 0], [[0.9], [0.2]]) == pytest.approx(-(math.log(0.9) + math.log(0.8)) / 2)


def test_ece_by_hand():
    # Top-label confidences 0.7, 0.6, 0.4, 0.8; correct 1, 0, 1, 1.
    # Two equal-width bins: [0, .5] holds 0.4 (acc 1), (.5, 1] holds .7, .6, .8 (acc 2/3, conf .7).
    expected = 1 / 4 * abs(1 - 0.4) + 3 / 4 * abs(2 / 3 - 0.7)
    assert cal.expected_calibration_error(Y, P, n_bins=2) == pytest.approx(expected, abs=1e-12)
    # Two equal-mass bins: sorted confidences {.4, .6} (acc 1/2, conf .5) and {.7, .8} (acc 1, conf .75).
    expected_mass = 0.5 * abs(0.5 - 0.5) + 0.5 * abs(1 - 0.75)
    assert cal.expected_calibration_error(Y, P, n_bins=2, strategy="quantile") == pytest.approx(expected_mass)
    # Classwise, one bin: |mean(p_c) - frequency(c)| averaged over classes.
    freq = np.bincount(Y, minlength=3) / 4
    expected_cw = np.mean(np.abs(P.mean(axis=0) - freq))
    assert cal.expected_calibration_error(Y, P, n_bins=1, kind="classwise") == pytest.approx(expected_cw)
    # A confidence on a bin edge belongs to the lower bin, (lo, hi].
    assert cal.expected_calibration_error([0], [[0.5, 0.5]], n_bins=2) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="strategy='equal'"):
        cal.expected_calibration_error(Y, P, strategy="equal")
    with pytest.raises(ValueError, match="kind='x'"):
        cal.expected_calibration_error(Y, P, kind="x")


def test_error_detection_metrics_by_hand():
    uncertainty = np.array([0.1, 0.4, 0.35, 0.8])
    correct = np.array([1, 1, 0, 0])
    # Errors' uncertainties {0.35, 0.8} vs correct {0.1, 0.4}: pairs won 1 + 2 of 4.
    assert cal.auroc(uncertainty, 1 - correct) == pytest.approx(0.75)
    assert cal.auroc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)  # ties count one half
    assert math.isnan(cal.auroc([0.1, 0.2], [0, 0]))
    # Least uncertain first: 0.1 (ok), 0.35 (err), 0.4 (ok), 0.8 (err).
    assert cal.aurc(uncertainty, correct) == pytest.approx(np.mean([0, 1 / 2, 1 / 3, 2 / 4]))
    assert cal.selective_accuracy(uncertainty, correct, 0.5) == pytest.approx(0.5)
    assert cal.selective_accuracy(uncertainty, correct, 0.25) == 1.0
    with pytest.raises(ValueError, match="coverage=0"):
        cal.selective_accuracy(uncertainty, correct, 0)


def test_regression_metrics_by_hand():
    y, mean, std = np.array([1.0, 2.0]), np.array([1.5, 2.0]), np.array([0.5, 1.0])
    expected = np.mean([0.5 * math.log(2 * math.pi * 0.25) + 0.25 / 0.5, 0.5 * math.log(2 * math.pi)])
    assert cal.gaussian_nll(y, mean, std) == pytest.approx(expected)
    assert cal.interval_coverage([1.0, 2.0, 3.0], [0.5, 2.5, 3.0], [1.5, 3.0, 4.0]) == pytest.approx(2 / 3)
    assert cal.interval_width([0.0, 1.0], [1.0, 4.0]) == pytest.approx(2.0)


def test_temperature_and_conformal_numerics():
    np.testing.assert_allclose(cal.temper(P, 1.0), P, atol=1e-12)
    sharp = cal.temper(P, 0.5)
    np.testing.assert_allclose(sharp, P**2 / (P**2).sum(axis=1, keepdims=True), atol=1e-12)
    np.testing.assert_allclose(cal.temper([[0.8]], 0.5), [[0.8**2 / (0.8**2 + 0.2**2)]], atol=1e-12)
    # Finite-sample quantile: the ceil((n+1)(1-alpha))-th smallest.
    scores = np.arange(1, 11) / 10.0
    assert cal.conformal_quantile(scores, 0.2) == pytest.approx(0.9)  # ceil(11 * 0.8) = 9
    assert cal.conformal_quantile(scores, 0.05) == math.inf  # ceil(11 * 0.95) = 11 > 10
    aps = cal.class_scores(P[:1], "aps")
    np.testing.assert_allclose(aps, [[0.7, 0.9, 1.0]], atol=1e-12)
    raps = cal.class_scores(P[:1], "raps", penalty=0.1, k_reg=1)
    np.testing.assert_allclose(raps, [[0.7, 1.0, 1.2]], atol=1e-12)
    sets = cal.prediction_sets(P, 0.5, "lac", nonempty=False)
    np.testing.assert_array_equal(sets, [[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1]])
    assert cal.prediction_sets(P, 0.5, "lac")[2].tolist() == [0, 0, 1]  # the top class is always kept


# ------------------------------------------------------ calibration on the folds


@pytest.fixture(scope="module")
def held_out(digits, small_digits):
    """The digits that `cv_result` (trained on `small_digits`) never saw."""
    x, y = digits
    xs, _ = small_digits
    seen = {row.tobytes() for row in xs}
    keep = np.array([row.tobytes() not in seen for row in x])
    return x[keep], y[keep]


def test_temperature_lowers_out_of_fold_nll(cv_result):
    report = cv_result.calibration()
    fitted = report["serving_default"]
    assert set(report) == {"serving_default"}
    assert fitted["n"] == 600
    assert fitted["after"]["nll"] < fitted["before"]["nll"]
    assert fitted["after"]["accuracy"] == fitted["before"]["accuracy"]  # a temperature never changes the argmax
    # The fitted temperature minimizes the NLL: nearby temperatures do worse.
    target, draws, _ = cal.oof_outputs(cv_result)["serving_default"]
    at = cal.negative_log_likelihood(target, cal.mean_draws(draws, fitted["temperature"]))
    for factor in (0.8, 1.25):
        assert cal.negative_log_likelihood(target, cal.mean_draws(draws, fitted["temperature"] * factor)) > at
    with pytest.raises(ValueError, match="Pass x and y"):
        cv_result.calibration(randomized=Randomized(4))


@pytest.fixture(scope="module")
def calibrated_bundle(cv_result, small_digits, tmp_path_factory):
    base = tmp_path_factory.mktemp("uncertainty") / "digits"
    path = export.export_saved_model(
        cv_result, base, randomized=Randomized(6, seed=0), calibration="temperature",
        conformal=Conformal(0.1), calibration_data=small_digits,
    )
    return path, tf.saved_model.load(path)


def test_calibrated_signatures_apply_the_fitted_temperatures(cv_result, small_digits, calibrated_bundle, held_out):
    path, loaded = calibrated_bundle
    meta = bundle.read_metadata(path)
    temperatures = meta["calibration"]["temperatures"]
    assert temperatures["serving_default"] == pytest.approx(cv_result.calibration()["serving_default"]["temperature"])
    assert set(temperatures) == {"serving_default", "predict_randomized"}
    for name in temperatures:
        oof = meta["calibration"]["oof"][name]
        assert oof["after"]["nll"] < oof["before"]["nll"] and oof["after"]["ece"] < oof["before"]["ece"]
    x = held_out[0][:50]
    folds = [model(x, training=False).numpy() for model in cv_result.models]
    expected = np.mean([cal.temper(p, temperatures["serving_default"]) for p in folds], axis=0)
    served = loaded.signatures["serving_default"](inputs=tf.constant(x))["outputs"].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    per_fold = loaded.signatures["predict_folds"](inputs=tf.constant(x))["outputs"].numpy()
    np.testing.assert_allclose(per_fold.mean(axis=1), served, atol=1e-5)
    # The tiny CNN has no random layer: predict_randomized tempers the mean of the folds' draws.
    randomized = loaded.signatures["predict_randomized"](inputs=tf.constant(x))
    expected_r = cal.temper(np.mean(folds, axis=0), temperatures["predict_randomized"])
    np.testing.assert_allclose(randomized["mean"].numpy(), expected_r, atol=1e-5)
    np.testing.assert_allclose(randomized["predictive_entropy"].numpy(), uncertainty.entropy(expected_r), atol=1e-4)
    # Mutual information describes the draws as they are, untempered.
    mi = randomized["mutual_information"].numpy()
    raw_entropy = uncertainty.entropy(np.mean(folds, axis=0))
    np.testing.assert_allclose(mi, np.maximum(raw_entropy - np.mean([uncertainty.entropy(p) for p in folds], axis=0), 0),
                               atol=1e-4)
    assert mi.max() > 0
    assert export.verify(path, fresh_process=False)["signatures"] == [
        "predict_folds", "predict_randomized", "predict_set", "serving_default"]


def test_calibration_arguments_are_checked(cv_result, small_digits, tmp_path):
    with pytest.raises(ValueError, match="calibration='platt'"):
        export.export_saved_model(cv_result, tmp_path / "a", calibration="platt")
    with pytest.raises(ValueError, match="calibration_data=None"):
        export.export_saved_model(cv_result, tmp_path / "b", calibration="temperature")
    with pytest.raises(ValueError, match="not a single keras.Model"):
        export.export_saved_model(cv_result.models[0], tmp_path / "c", calibration="temperature", randomized=None)
    with pytest.raises(ValueError, match="does not match the data"):
        export.export_saved_model(cv_result, tmp_path / "d", calibration="temperature",
                                  calibration_data=(small_digits[0][::-1], small_digits[1]))
    with pytest.raises(ValueError, match="on='randomized' with randomized=None"):
        export.export_saved_model(cv_result, tmp_path / "e", randomized=None, conformal=Conformal(on="randomized"))
    for bad, match in (({"alpha": 1.5}, "alpha=1.5"), ({"method": "top"}, "method='top'"), ({"on": "x"}, "on='x'")):
        with pytest.raises(ValueError, match=match):
            Conformal(**bad)
    assert not os.path.exists(tmp_path / "a" / "1")


# ---------------------------------------------------------------- conformal


@pytest.fixture(scope="module")
def set_bundles(cv_result, tmp_path_factory):
    """One bundle per alpha: LAC sets on the deterministic ensemble, empty sets allowed."""
    base = tmp_path_factory.mktemp("conformal") / "digits"
    out = {}
    for version, alpha in enumerate((0.03, 0.1, 0.2), start=1):
        path = export.export_saved_model(cv_result, base, version=version, randomized=None, warmup=False,
                                         conformal=Conformal(alpha, nonempty=False))
        out[alpha] = (path, tf.saved_model.load(path))
    return out


def test_predict_set_covers_held_out_labels_at_one_minus_alpha(set_bundles, held_out):
    x, y = held_out
    sizes = []
    for alpha, (path, loaded) in sorted(set_bundles.items()):
        out = loaded.signatures["predict_set"](inputs=tf.constant(x))
        sets, size = out["set"].numpy(), out["set_size"].numpy()
        assert sets.dtype == np.int32 and sets.shape == (len(x), 10) and set(np.unique(sets)) <= {0, 1}
        np.testing.assert_array_equal(size, sets.sum(axis=1))
        coverage = sets[np.arange(len(y)), y].mean()
        # Sampling error of the coverage: the test rows' binomial spread plus
        # the calibration rows' (a Beta of n = 600 scores), three sigma each.
        slack = 3 * math.sqrt(alpha * (1 - alpha) / len(y)) + 3 * math.sqrt(alpha * (1 - alpha) / 600)
        assert abs(coverage - (1 - alpha)) <= slack, (alpha, coverage)
        meta = bundle.read_metadata(path)["conformal"]
        assert meta["alpha"] == alpha and meta["method"] == "lac" and meta["predictor"] == "serving_default"
        assert meta["oof_coverage"] >= 1 - alpha
        # The threshold is the ceil((n + 1)(1 - alpha))-th smallest out-of-fold score.
        assert size.mean() == pytest.approx(sizes_from(loaded, x, meta).mean(), abs=0.01)
        sizes.append(size.mean())
    assert sizes[0] > sizes[1] > sizes[2]  # sets shrink as alpha grows


def sizes_from(loaded, x, meta):
    p = loaded.signatures["serving_default"](inputs=tf.constant(x))["outputs"].numpy()
    return cal.prediction_sets(p, meta["threshold"], "lac", nonempty=False).sum(axis=1)


def test_aps_and_raps_sets_match_the_numpy_reference(cv_result, tmp_path, held_out):
    x = held_out[0][:64]
    for method in ("aps", "raps"):
        conformal = Conformal(0.1, method=method, penalty=0.05, k_reg=1)
        path = export.export_saved_model(cv_result, tmp_path / method, randomized=None, warmup=False, conformal=conformal)
        loaded = tf.saved_model.load(path)
        meta = bundle.read_metadata(path)["conformal"]
        p = loaded.signatures["serving_default"](inputs=tf.constant(x))["outputs"].numpy()
        expected = cal.prediction_sets(p, meta["threshold"], method, penalty=0.05, k_reg=1)
        got = loaded.signatures["predict_set"](inputs=tf.constant(x))["set"].numpy()
        # Rows whose score sits on the threshold may round either way in float32.
        scores = cal.class_scores(p, method, penalty=0.05, k_reg=1)
        clear = np.abs(scores - meta["threshold"]) > 1e-5
        np.testing.assert_array_equal(got[clear], expected[clear])
        assert got[np.arange(len(x)), p.argmax(axis=1)].all()


@pytest.mark.slow
def test_predict_set_served_by_tfcv_serve_equals_in_process(set_bundles, held_out, tmp_path):
    import socket
    import subprocess
    import time

    path, loaded = set_bundles[0.2]  # the latest version, which the server serves
    base = os.path.dirname(path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        rest_port = s.getsockname()[1]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "tfcv", "serve", f"--model_base_path={base}", "--model_name=digits",
         f"--rest_api_port={rest_port}", "--port=0"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    url = f"http://127.0.0.1:{rest_port}/v1/models/digits"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if "AVAILABLE" in httpx.get(url, timeout=2).text:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.3)
        x = held_out[0][:16]
        response = httpx.post(f"{url}:predict", json={"signature_name": "predict_set", "inputs": x.tolist()})
        assert response.status_code == 200, response.text
        served = response.json()["outputs"]
        want = loaded.signatures["predict_set"](inputs=tf.constant(x))
        np.testing.assert_array_equal(np.array(served["set"]), want["set"].numpy())
        np.testing.assert_array_equal(np.array(served["set_size"]), want["set_size"].numpy())
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_predict_interval_cv_plus_covers_held_out_targets(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(700, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.5 * rng.normal(size=700)).astype("float32")

    def regressor():
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
        model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
        return model

    result = tfcv.CrossValidator(regressor, folds=3, seed=0).fit(x[:400], y[:400], epochs=10, batch_size=32, verbose=0)
    path = export.export_saved_model(result, tmp_path / "reg", randomized=None, conformal=Conformal(0.1))
    loaded = tf.saved_model.load(path)
    out = loaded.signatures["predict_interval"](inputs=tf.constant(x[400:]))
    lower, upper = out["lower"].numpy(), out["upper"].numpy()
    assert lower.shape == upper.shape == (300, 1) and np.all(lower < upper)
    # The reference: CV+ in NumPy from the fold models and the out-of-fold residuals.
    target, draws, fold_of = cal.oof_outputs(result)["serving_default"]
    residuals = np.abs(target.reshape(-1, 1) - draws[0].reshape(-1, 1))
    mu = np.stack([m(x[400:], training=False).numpy() for m in result.models], axis=1)
    lo, up = cal.cv_plus_interval(mu, residuals, fold_of, 0.1)
    np.testing.assert_allclose(lower, lo, atol=1e-4)
    np.testing.assert_allclose(upper, up, atol=1e-4)
    coverage = cal.interval_coverage(y[400:], lower[:, 0], upper[:, 0])
    assert abs(coverage - 0.9) <= 3 * math.sqrt(0.09 / 300) + 3 * math.sqrt(0.09 / 400)
    meta = json.loads(open(os.path.join(path, "assets.extra", "tfcv.json")).read())["conformal"]
    assert meta["method"] == "cv+" and meta["signature"] == "predict_interval" and meta["n"] == 400
    with pytest.raises(ValueError, match="for a regression"):
        export.export_saved_model(result, tmp_path / "t", randomized=None, calibration="temperature")


# ------------------------------------------------------ shifts and evaluate


def test_shifts_change_images_more_as_severity_grows(held_out):
    x = held_out[0][:32]
    for name in uncertainty.SHIFTS:
        changes = [np.abs(uncertainty.shift(x, name, s) - x).mean() for s in (1, 3, 5)]
        out = uncertainty.shift(x, name, 3)
        assert out.shape == x.shape and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
        assert 0 < changes[0] < changes[1] < changes[2], (name, changes)
    with pytest.raises(ValueError, match="severity=6"):
        uncertainty.shift(x, "rotate", 6)
    with pytest.raises(ValueError, match="name='fog'"):
        uncertainty.shift(x, "fog", 1)


def test_evaluate_a_version_directory_scores_what_is_served(calibrated_bundle, held_out, cv_result):
    import matplotlib.figure

    path, loaded = calibrated_bundle
    x, y = held_out[0][:200], held_out[1][:200]
    evaluation = uncertainty.evaluate(path, x, y, shifts=["noise"], severities=[1, 5], ood=np.random.default_rng(0).random((50, 8, 8, 1), dtype="float32"))
    frame = evaluation.to_frame()
    assert set(frame["contender"]) == {"single", "ensemble", "randomized"}
    assert len(frame) == 3 * 3 and set(frame["shift"]) == {"clean", "noise"}
    clean = frame[(frame["shift"] == "clean") & (frame["contender"] == "ensemble")].iloc[0]
    served = loaded.signatures["serving_default"](inputs=tf.constant(x))["outputs"].numpy()
    assert clean["nll"] == pytest.approx(cal.negative_log_likelihood(y, served), abs=1e-6)
    assert clean["ece"] == pytest.approx(cal.expected_calibration_error(y, served), abs=1e-6)
    sets = loaded.signatures["predict_set"](inputs=tf.constant(x))["set"].numpy()
    assert clean["coverage"] == pytest.approx(sets[np.arange(len(y)), y].mean())
    assert np.isnan(frame[frame["contender"] == "single"]["coverage"]).all()
    single = frame[(frame["shift"] == "clean") & (frame["contender"] == "single")].iloc[0]
    fold0 = loaded.signatures["predict_folds"](inputs=tf.constant(x))["outputs"].numpy()[:, 0]
    assert single["accuracy"] == pytest.approx(cal.accuracy(y, fold0))
    assert 0.5 < clean["ood_auroc"] <= 1.0  # uniform noise is more uncertain than digits
    fig = tfcv.plots.shift_curves(evaluation, "accuracy")
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes[0].lines) == 3
    diagram = tfcv.plots.reliability_diagram(y, [cv_result.models[0](x).numpy(), served], labels=["fold 0", "T"])
    assert len(diagram.axes[0].lines) == 3 and "ECE" in diagram.axes[0].get_legend().get_texts()[1].get_text()


# ------------------------------------------------------------- tfcv evaluate


def test_evaluate_refuses_data_that_does_not_fit_the_bundle_by_name(calibrated_bundle):
    # A (n, 64) batch made TensorFlow abort the whole process; a label beyond the classes failed deep in the scoring.
    x = np.zeros((3, 8, 8, 1), "float32")
    for data, message in (
        ((np.zeros((3, 64), "float32"), [0, 1, 2]), r"x of shape \(3, 64\). Expected shape \(None, 8, 8, 1\)"),
        ((x, [0, 1, 12]), r"y of dtype int64 with values in \[0, 12\]. Expected class indices 0..9"),
        ((x, [0, 1]), r"y of shape \(2,\). Expected one label per row of x, shape \(3,\)"),
        ((x, ["a", "1", "b"]), r"labels \['a', 'b'\] that are not class names"),
    ):
        with pytest.raises(ValueError, match=message):
            uncertainty.evaluate(calibrated_bundle[0], data[0], np.array(data[1]), shifts=())


def test_tfcv_evaluate_on_a_runs_test_set_or_on_data(calibrated_bundle, cv_result, held_out, tmp_path, capsys):
    from tfcv import cli
    from tfcv._run_dir import save_test_set

    path, loaded = calibrated_bundle
    x, y = held_out[0][:150], held_out[1][:150]
    run_dir = tmp_path / "run"
    shutil.copytree(cv_result.run_dir, run_dir)

    def evaluate(*args):
        code = cli.main(["evaluate", path, *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, _, err = evaluate("--run-dir", str(run_dir))
    assert code == 2 and "kept no held-out test set" in err and "--test-size" in err and "--data" in err
    save_test_set(run_dir, x, y)
    code, out, _ = evaluate("--run-dir", str(run_dir), "--shifts", "rotate:1,3", "noise:2", "--json")
    assert code == 0
    rows = json.loads(out)
    assert {r["contender"] for r in rows} == {"single", "ensemble", "randomized"}
    assert [(r["shift"], r["severity"]) for r in rows if r["contender"] == "ensemble"] == [
        ("clean", 0), ("rotate", 1), ("rotate", 3), ("noise", 2)]
    clean = next(r for r in rows if r["contender"] == "ensemble" and r["shift"] == "clean")
    served = loaded.signatures["serving_default"](inputs=tf.constant(x))["outputs"].numpy()
    assert clean["calibrated"] is True
    assert clean["nll"] == pytest.approx(cal.negative_log_likelihood(y, served), abs=1e-6)
    assert clean["set_size"] >= 1.0  # predict_set is built on serving_default

    np.savez(tmp_path / "held_out.npz", x=x, y=y)
    code, out, _ = evaluate("--data", str(tmp_path / "held_out.npz"), "--shifts", "none")
    assert code == 0 and "150 held-out samples" in out
    lines = out.splitlines()
    assert lines[1].split()[:4] == ["contender", "T", "shift", "accuracy"] and len(lines) == 2 + 3
    assert f"{clean['nll']:.4f}" in next(line for line in lines if line.startswith("ensemble"))

    # An image folder is decoded at the bundle's input size and channels (8 x 8 grey PNGs here).
    from PIL import Image

    for i in range(20):
        (tmp_path / "images" / str(y[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(x[i, ..., 0] * 255).astype("uint8"), mode="L").save(tmp_path / "images" / str(y[i]) / f"{i}.png")
    code, out, _ = evaluate("--data", str(tmp_path / "images"), "--shifts", "none", "--json")
    from_files = next(r for r in json.loads(out) if r["contender"] == "ensemble")
    decoded = np.round(x[:20] * 255).astype("float32") / 255
    ensemble = loaded.signatures["serving_default"](inputs=tf.constant(decoded))["outputs"].numpy()
    expected = cal.accuracy(y[:20], ensemble)
    assert code == 0 and from_files["accuracy"] == pytest.approx(expected)

    for args, message in (
        ((), "no data to evaluate on: pass --run-dir"),
        (("--run-dir", str(run_dir), "--shifts", "fog:1"), "unknown shift 'fog'. Expected names from ['rotate', 'shift'"),
        (("--run-dir", str(run_dir), "--shifts", "rotate:9"), "rotate:9"),
        (("--run-dir", str(tmp_path)), "is not a tfcv run directory"),
        (("--data", "tfds:mnist"), "not a TFDS name"),
        (("--data", str(tmp_path / "missing")), "does not exist: evaluate reads an image folder"),
    ):
        code, _, err = evaluate(*args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    assert cli.main(["evaluate", str(tmp_path / "nope"), "--run-dir", str(run_dir)]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------ refit


def test_refit_export_uses_the_fold_temperatures_and_refuses_conformal(cv_result, tmp_path, held_out):
    refit = copy.copy(cv_result)
    # Any trained model stands in for the refit one: only where its temperature comes from is tested.
    refit.refit_model = cv_result.models[1]
    with pytest.raises(ValueError, match="model='refit'.*model='ensemble'.*conformal=None"):
        export.export_saved_model(refit, tmp_path / "c", model="refit", randomized=None, conformal=Conformal())
    path = export.export_saved_model(refit, tmp_path / "t", model="refit", randomized=None, warmup=False,
                                     calibration="temperature")
    meta = bundle.read_metadata(path)
    t = meta["calibration"]["temperatures"]["serving_default"]
    assert t == pytest.approx(cv_result.calibration()["serving_default"]["temperature"])
    assert "applied to the refit model" in meta["calibration"]["fitted_on"] and meta["model"] == "refit"
    x = held_out[0][:20]
    served = tf.saved_model.load(path).signatures["serving_default"](inputs=tf.constant(x))["outputs"].numpy()
    np.testing.assert_allclose(served, cal.temper(refit.refit_model(x).numpy(), t), atol=1e-5)
