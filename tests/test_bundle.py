"""Tests of tfcv.bundle: the TF Serving layout that export writes and serving reads."""

from __future__ import annotations

import ast
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import classification_pb2, prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

import tfcv
from tfcv import bundle
from tfcv.bundle import BundleError
from tfcv.export import Randomized, export_saved_model, write_model_config
from tfcv.serving.servable import Servable

TFCV = pathlib.Path(tfcv.__file__).parent


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    """Version 1 of `m`: one Dense classifier with dropout, six warmup records."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,), name="features")
    h = keras.layers.Dropout(0.2)(keras.layers.Dense(8, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h))
    base = tmp_path_factory.mktemp("bundle") / "m"
    return export_saved_model(model, base, randomized=Randomized(2))


def _copy(source, tmp_path, name="1"):
    target = tmp_path / "m" / name
    shutil.copytree(source, target)
    return target


def _write_records(path, records):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


# ------------------------------------------------------------- versions


def test_versions_and_layout_of_an_exported_bundle(small_bundle, tmp_path):
    base = tmp_path / "m"
    _copy(small_bundle, tmp_path, "1")
    _copy(small_bundle, tmp_path, "12")
    (base / "3").mkdir()  # an empty numeric directory: a version, not a published one
    (base / ".tfcv-tmp-export-1-x").mkdir()
    (base / "notes").mkdir()
    (base / "7").write_text("a file, not a directory")

    assert bundle.existing_versions(base) == [1, 3, 12]
    assert bundle.existing_versions(tmp_path / "missing") == []
    assert bundle.published_versions(base) == {1: str(base / "1"), 12: str(base / "12")}
    with pytest.raises(OSError):
        bundle.published_versions(tmp_path / "missing")
    assert bundle.saved_model_file(base / "1") == str(base / "1" / "saved_model.pb")
    assert bundle.saved_model_file(base / "3") is None
    names = ("0", "12", "1" * 19, "9223372036854775807", "9223372036854775808", "9" * 19, "1" * 20, "1.0", "",
             "²", "-1")
    assert [bundle.is_version_name(n) for n in names] == [True] * 4 + [False] * 7

    metadata = bundle.read_metadata(base / "1")
    assert (metadata["format"], metadata["format_version"]) == (bundle.METADATA_FORMAT, 1)
    assert metadata["warmup"] == {"file": bundle.WARMUP_FILE, "records": 6}
    requests = bundle.read_warmup(base / "1")
    assert [r.model_spec.signature_name for r in requests] == ["serving_default"] * 3 + ["predict_randomized"] * 3
    assert [tf.make_ndarray(r.inputs["features"]).shape[0] for r in requests] == [1, 2, 5] * 2

    before = bundle.version_fingerprint(base / "1")
    assert before == bundle.version_fingerprint(base / "1") and None in before  # no saved_model.pbtxt
    bundle.write_warmup(base / "1", requests[:2])
    assert bundle.version_fingerprint(base / "1") != before
    assert len(bundle.read_warmup(base / "1")) == 2
    shutil.rmtree(base / "1" / bundle.ASSETS_EXTRA)
    assert bundle.read_warmup(base / "1") == []


# ------------------------------------------------------- signature defs


def test_signature_defs_two_views_of_one_parser(small_bundle):
    defs = bundle.read_signature_defs(small_bundle)
    assert set(defs) == {"serving_default", "predict_randomized"}
    assert defs["serving_default"] == {
        "method_name": bundle.PREDICT_METHOD,
        "inputs": {"features": {"dtype": "float32", "shape": [None, 5]}},
        "outputs": {"outputs": {"dtype": "float32", "shape": [None, 3]}},
    }
    proto = bundle.read_signature_def_map(small_bundle)
    # The proto view keeps TF's internal init op, as TF Serving's metadata does.
    assert set(proto.signature_def) == set(defs) | {"__saved_model_init_op"}
    for name, signature in defs.items():
        assert proto.signature_def[name].method_name == signature["method_name"]
        assert set(proto.signature_def[name].outputs) == set(signature["outputs"])


def test_a_pbtxt_saved_model_is_read_and_served_like_a_pb(small_bundle, tmp_path):
    version = _copy(small_bundle, tmp_path)
    proto = saved_model_pb2.SavedModel.FromString((version / "saved_model.pb").read_bytes())
    (version / "saved_model.pbtxt").write_text(text_format.MessageToString(proto))
    os.remove(version / "saved_model.pb")

    assert bundle.saved_model_file(version) == str(version / "saved_model.pbtxt")
    assert bundle.published_versions(tmp_path / "m") == {1: str(version)}
    assert bundle.read_signature_defs(version) == bundle.read_signature_defs(small_bundle)
    assert bundle.read_signature_def_map(version) == bundle.read_signature_def_map(small_bundle)
    servable = Servable("m", 1, str(version), batching=None)
    try:
        assert servable.warmup() == 6
        x = np.random.default_rng(0).random((4, 5), dtype="float32")
        expected = tf.saved_model.load(small_bundle).signatures["serving_default"](features=x)["outputs"]
        np.testing.assert_allclose(servable.signature().predict({"features": x})["outputs"], expected, atol=1e-6)
    finally:
        servable.close()


def test_defective_saved_models_name_the_file(small_bundle, tmp_path):
    version = _copy(small_bundle, tmp_path)
    pb = version / "saved_model.pb"
    proto = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    del proto.meta_graphs[0].meta_info_def.tags[:]
    proto.meta_graphs[0].meta_info_def.tags.append("train")
    pb.write_bytes(proto.SerializeToString())
    with pytest.raises(BundleError, match=r"saved_model\.pb has no meta graph with the tag 'serve'"):
        bundle.read_signature_defs(version)

    pb.write_bytes(b"this is not a SavedModel")
    with pytest.raises(BundleError, match=r"saved_model\.pb is not a valid SavedModel protobuf"):
        bundle.read_signature_def_map(version)
    os.remove(pb)
    (version / "saved_model.pbtxt").write_text("meta_graphs { not valid")
    with pytest.raises(BundleError, match=r"saved_model\.pbtxt is not a valid SavedModel protobuf"):
        bundle.read_signature_defs(version)
    os.remove(version / "saved_model.pbtxt")
    with pytest.raises(BundleError, match=r"has no saved_model\.pb"):
        bundle.read_signature_defs(version)
    with pytest.raises(BundleError, match="not a SavedModel version directory"):
        bundle.check_version_dir(version)


# ------------------------------------------------------------- metadata


def test_metadata_reader_names_the_defect(small_bundle, tmp_path):
    version = _copy(small_bundle, tmp_path)
    path = version / bundle.ASSETS_EXTRA / bundle.METADATA_FILE
    metadata = bundle.read_metadata(version)

    path.write_text('{"format": "tfcv.bundle", ')
    with pytest.raises(BundleError, match=r"tfcv\.json is not valid JSON"):
        bundle.read_metadata(version)
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(BundleError, match=r"tfcv\.json is not valid JSON"):
        bundle.read_metadata(version)
    path.write_text("[1, 2]")
    with pytest.raises(BundleError, match=r"tfcv\.json is not tfcv bundle metadata \(format='list'\)"):
        bundle.read_metadata(version)
    path.write_text('{"format": "other"}')
    with pytest.raises(BundleError, match="format='other'"):
        bundle.read_metadata(version)
    os.remove(path)
    with pytest.raises(BundleError, match=r"assets.extra/tfcv.json is missing; not a tfcv bundle"):
        bundle.read_metadata(version)

    written = bundle.write_metadata(version, {"model_name": "m", "format": "stale"})
    assert written == str(path) and not [n for n in os.listdir(path.parent) if n.startswith(".")]
    assert json.loads(path.read_text()) == {"model_name": "m", "format": "tfcv.bundle", "format_version": 1}
    bundle.write_metadata(version, metadata)
    shutil.rmtree(version / "variables")
    with pytest.raises(BundleError, match="it has no variables"):
        bundle.read_metadata(version)


# --------------------------------------------------------------- warmup


def test_warmup_reader_names_the_file_and_the_record(small_bundle, tmp_path):
    version = _copy(small_bundle, tmp_path)
    path = version / bundle.WARMUP_PATH
    request = bundle.read_warmup(version)[0]
    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))

    with pytest.raises(BundleError, match="at most 1000"):
        bundle.write_warmup(version, [request] * 1001)
    assert len(bundle.read_warmup(version)) == 6  # the refused write changed nothing
    assert bundle.write_warmup(version, [request] * 1000) == 1000
    assert len(bundle.read_warmup(version)) == 1000

    _write_records(path, [log.SerializeToString()] * 1001)
    with pytest.raises(BundleError, match=rf"{re.escape(str(path))} holds more than 1000 warmup records"):
        bundle.read_warmup(version)
    servable = Servable("m", 1, str(version), batching=None)
    try:
        with pytest.raises(ValueError, match="more than 1000"):
            servable.warmup()
    finally:
        servable.close()

    classify = prediction_log_pb2.PredictionLog(
        classify_log=prediction_log_pb2.ClassifyLog(request=classification_pb2.ClassificationRequest()))
    _write_records(path, [log.SerializeToString(), classify.SerializeToString()])
    with pytest.raises(BundleError, match=rf"{re.escape(str(path))}: warmup record 1 holds a 'classify_log', expected a predict_log"):
        bundle.read_warmup(version)
    _write_records(path, [b"\xff\xff\xff not a proto"])
    with pytest.raises(BundleError, match=rf"{re.escape(str(path))}: warmup record 0 is not a PredictionLog"):
        bundle.read_warmup(version)
    path.write_bytes(b"not a TFRecord file at all, just some bytes")
    with pytest.raises(BundleError, match=rf"{re.escape(str(path))} is not a readable TFRecord file"):
        bundle.read_warmup(version)


# --------------------------------------------------------- model config


def test_write_model_config(tmp_path):
    (tmp_path / "digits" / "1").mkdir(parents=True)
    (tmp_path / "digits" / "2").mkdir()
    path = write_model_config(tmp_path / "models.config", [
        {"name": "digits", "base_path": tmp_path / "digits", "version_policy": [1, 2],
         "version_labels": {"stable": 1, "canary": 2}},
        {"name": "other", "base_path": str(tmp_path / "other"), "version_policy": {"latest": 2}},
    ])
    config = text_format.Parse(open(path).read(), model_server_config_pb2.ModelServerConfig())
    first, second = config.model_config_list.config
    assert (first.name, first.base_path, first.model_platform) == ("digits", str(tmp_path / "digits"), "tensorflow")
    assert list(first.model_version_policy.specific.versions) == [1, 2]
    assert dict(first.version_labels) == {"stable": 1, "canary": 2}
    assert second.model_version_policy.latest.num_versions == 2
    assert bundle.read_model_config(path) == config

    path = write_model_config(tmp_path / "simple.config", {"a": tmp_path / "a", "b": tmp_path / "b"})
    config = text_format.Parse(open(path).read(), model_server_config_pb2.ModelServerConfig())
    assert [c.name for c in config.model_config_list.config] == ["a", "b"]

    with pytest.raises(ValueError, match="version 3 is not served"):
        write_model_config(tmp_path / "x.config", [
            {"name": "d", "base_path": tmp_path / "digits", "version_policy": [1], "version_labels": {"stable": 3}}])
    with pytest.raises(ValueError, match="'d' appears twice"):
        write_model_config(tmp_path / "x.config", [{"name": "d", "base_path": "a"}, {"name": "d", "base_path": "b"}])
    with pytest.raises(ValueError, match="version_policy='newest'"):
        write_model_config(tmp_path / "x.config", [{"name": "d", "base_path": "a", "version_policy": "newest"}])
    with pytest.warns(UserWarning, match="does not exist yet"):
        write_model_config(tmp_path / "x.config", [{"name": "d", "base_path": tmp_path / "digits",
                                                    "version_labels": {"next": 9}}])
    assert not os.path.exists(tmp_path / "x.config") or "next" in open(tmp_path / "x.config").read()


@pytest.mark.parametrize("text, fragment", [
    ("model_config_list { config { name: 'x' base_path: }", "is not a valid ModelServerConfig"),
    ("model_config_list { }", "at least one"),
    ("custom_model_config { }", "must hold a `model_config_list`"),
    ("model_config_list { config { name: 'x' base_path: '/x' model_platform: 'onnx' } }", "model_platform='onnx'"),
    ("model_config_list { config { name: 'x' base_path: '/a' } config { name: 'x' base_path: '/b' } }",
     "names a model twice"),
])
def test_read_model_config_names_the_file_and_the_defect(tmp_path, text, fragment):
    path = tmp_path / "bad.config"
    path.write_text(text)
    with pytest.raises(ValueError, match=fragment) as raised:
        bundle.read_model_config(path)
    assert "bad.config" in str(raised.value)


# ---------------------------------------------------- import discipline


def _tfcv_imports(path):
    """The modules a file imports at any level, absolute names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_bundle_and_serving_import_neither_keras_nor_the_training_side():
    # _checks: the shared argument checks (NumPy only), for bundle.check_version;
    # _compat: the TensorFlow internal that runs TF1 graphs as TF Serving does.
    allowed = {"tfcv", "tfcv.__version__", "tfcv._atomic", "tfcv._checks", "tfcv._compat", "tfcv.bundle"}
    for path in [TFCV / "bundle.py", *sorted((TFCV / "serving").glob("*.py"))]:
        imports = _tfcv_imports(path)
        assert not [m for m in imports if m.split(".")[0] == "keras"], path
        outside = {m for m in imports if m.split(".")[0] == "tfcv" and m not in allowed
                   and not m.startswith("tfcv.serving") and not m.startswith("tfcv.bundle.")}
        assert not outside, (path.name, outside)
    assert _tfcv_imports(TFCV / "bundle.py") & {"tfcv.serving", "tfcv.export"} == set()


@pytest.mark.slow
def test_importing_the_server_loads_no_training_module():
    code = ("import sys, tfcv.serving; "
            "print(' '.join(sorted(m for m in sys.modules if m == 'tfcv' or m.startswith('tfcv.'))))")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = set(proc.stdout.split())
    assert {"tfcv.bundle", "tfcv.serving"} <= loaded
    assert {m for m in loaded if not m.startswith("tfcv.serving")} <= {"tfcv", "tfcv._atomic", "tfcv._checks",
                                                                      "tfcv._compat", "tfcv.bundle"}
