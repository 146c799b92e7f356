"""Tests of tfcv.export.verify: a bundle loaded as TF Serving would, every warmup record replayed."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from tfcv import bundle, export
from tfcv.export import BundleError


def _warmup_logs(version_dir):
    path = os.path.join(version_dir, "assets.extra", "tf_serving_warmup_requests")
    return [prediction_log_pb2.PredictionLog.FromString(bytes(r.numpy())) for r in tf.data.TFRecordDataset(path)]


@pytest.fixture(scope="module")
def ensemble_bundle(cv_result, tmp_path_factory):
    base = tmp_path_factory.mktemp("serving") / "digits"
    return export.export_saved_model(cv_result, base, metadata={"owner": "tests"})


def test_warmup_parses_with_serving_protos_and_replays(ensemble_bundle):
    logs = _warmup_logs(ensemble_bundle)
    assert len(logs) == 9
    per_signature = {}
    for log in logs:
        assert log.WhichOneof("log_type") == "predict_log"
        request = log.predict_log.request
        assert request.model_spec.name == "digits"
        value = tf.make_ndarray(request.inputs["inputs"])
        assert value.dtype == np.float32 and value.shape[1:] == (8, 8, 1)
        assert 0.0 <= value.min() and value.max() <= 1.0
        per_signature.setdefault(request.model_spec.signature_name, []).append(value.shape[0])
    assert per_signature == {name: [1, 2, 5] for name in ("serving_default", "predict_folds", "predict_randomized")}

    # verify() loads the bundle in a fresh process and replays every record.
    report = export.verify(ensemble_bundle)
    assert report == {"signatures": ["predict_folds", "predict_randomized", "serving_default"], "replayed": 9}


def test_verify_names_the_defect(ensemble_bundle, tmp_path):
    broken = tmp_path / "1"
    shutil.copytree(ensemble_bundle, broken)
    warmup = broken / "assets.extra" / "tf_serving_warmup_requests"
    logs = _warmup_logs(str(broken))
    request = logs[4].predict_log.request
    request.inputs["inputs"].CopyFrom(tf.make_tensor_proto(np.zeros((2, 8, 8), "float32")))
    with tf.io.TFRecordWriter(str(warmup)) as writer:
        for log in logs:
            writer.write(log.SerializeToString())
    with pytest.raises(BundleError, match=r"warmup record 4 \(signature 'predict_folds'\).*shape"):
        export.verify(broken, fresh_process=False)

    meta_path = broken / "assets.extra" / "tfcv.json"
    meta = json.loads(meta_path.read_text())
    meta["signatures"]["predict_randomized"]["outputs"]["mean"]["shape"] = [None, 11]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"'predict_randomized' output 'mean' is float32 \[None, 10\], expected"):
        export.verify(broken, fresh_process=False)

    os.remove(broken / "saved_model.pb")
    with pytest.raises(BundleError, match="no saved_model.pb"):
        export.verify(broken)


def test_verify_names_a_defective_warmup_file_or_metadata(ensemble_bundle, tmp_path):
    broken = tmp_path / "1"
    shutil.copytree(ensemble_bundle, broken)
    warmup = broken / bundle.WARMUP_PATH
    log = _warmup_logs(str(broken))[0]
    with tf.io.TFRecordWriter(str(warmup)) as writer:
        for _ in range(1001):
            writer.write(log.SerializeToString())
    with pytest.raises(BundleError, match="tf_serving_warmup_requests holds more than 1000 warmup records"):
        export.verify(broken, fresh_process=False)

    os.remove(warmup)
    with pytest.raises(BundleError, match="declares warmup records but .*tf_serving_warmup_requests is missing"):
        export.verify(broken, fresh_process=False)

    meta_path = broken / bundle.METADATA_PATH
    meta = json.loads(meta_path.read_text())
    meta["warmup"] = None
    del meta["signatures"]["predict_folds"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="tfcv.json does not declare the expected signature 'predict_folds'"):
        export.verify(broken, fresh_process=False)


def test_verify_names_missing_or_truncated_variables_in_one_line(ensemble_bundle, tmp_path):
    broken = tmp_path / "1"
    shutil.copytree(ensemble_bundle, broken)
    data = next((broken / "variables").glob("variables.data-*"))
    os.truncate(data, 100)
    with pytest.raises(BundleError, match=r"tf\.saved_model\.load failed: ") as failed:
        export.verify(broken, fresh_process=False)
    assert "\n" not in str(failed.value)
    os.remove(broken / bundle.VARIABLES_INDEX)
    with pytest.raises(BundleError, match=r"variables/variables\.index is missing, so the variables cannot be restored\.$"):
        export.verify(broken, fresh_process=False)

