"""CVResult: statistics, out-of-fold predictions, ensembles, save and load."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import tfcv


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


def test_predict_and_evaluate_score_the_mean_ensemble_and_log_nothing(cv_result, small_digits, capfd):
    x, y = small_digits
    capfd.readouterr()
    predictions = cv_result.predict(x[:300], batch_size=64)
    scores = cv_result.evaluate(x[:300], y[:300])
    # Keras' array adapter under op determinism made TensorFlow log an
    # E-level "NodeDef mentions attribute use_unbounded_threadpool" line
    # (once a process: checked before this test's own NumPy predict below).
    assert "use_unbounded_threadpool" not in capfd.readouterr().err
    expected = np.mean([m.predict(x[:300], verbose=0) for m in cv_result.models], axis=0)
    np.testing.assert_allclose(predictions, expected, atol=1e-5)
    assert scores == cv_result.test_scores
    assert scores["accuracy"] == pytest.approx((predictions.argmax(1) == y[:300]).mean())
    assert scores["accuracy"] > 0.5


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
