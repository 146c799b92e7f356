"""The TF Serving bundle layout, read and written in one place.

A bundle is one version directory in TF Serving's layout::

    base_path/<version>/saved_model.pb        (or saved_model.pbtxt)
                        variables/
                        assets.extra/tf_serving_warmup_requests
                        assets.extra/tfcv.json

`tfcv.export` writes bundles and `tfcv.serving` serves them; both read and
write the layout only through this module: the version directories, the
`SignatureDef`s of the `serve` meta graph, the tfcv metadata, the warmup
records and TF Serving's `models.config`. It imports nothing from the
training side of tfcv (no Keras), so the server never loads the training
loop.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import message, text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_pb2,
    predict_pb2,
    prediction_log_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from tfcv import _atomic, _checks

__all__ = [
    "BundleError",
    "check_version",
    "check_version_dir",
    "existing_versions",
    "is_tf1_saved_model",
    "published_versions",
    "read_metadata",
    "read_model_config",
    "read_signature_def_map",
    "read_signature_defs",
    "read_warmup",
    "read_warmup_logs",
    "saved_model_file",
    "version_fingerprint",
    "warmup_request",
    "write_metadata",
    "write_model_config",
    "write_warmup",
]

SERVING_DEFAULT = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
SERVE_TAG = "serve"
ASSETS_EXTRA = "assets.extra"
METADATA_FILE = "tfcv.json"
WARMUP_FILE = "tf_serving_warmup_requests"
METADATA_PATH = os.path.join(ASSETS_EXTRA, METADATA_FILE)
WARMUP_PATH = os.path.join(ASSETS_EXTRA, WARMUP_FILE)
# Written by every TF2 SavedModel, with or without variables.
VARIABLES_INDEX = os.path.join("variables", "variables.index")
SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
# TF Serving refuses to load a model with more warmup records than this.
MAX_WARMUP_RECORDS = 1000
METADATA_FORMAT = "tfcv.bundle"
METADATA_FORMAT_VERSION = 1

# TF Serving parses version directory names as int64 and skips those out of
# range, so a larger version would be written but never served.
MAX_VERSION = 2**63 - 1
_VERSION_NAME = re.compile(r"^[0-9]{1,19}$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_MODEL_KEYS = ("name", "base_path", "version_policy", "version_labels", "model_platform")


class BundleError(ValueError):
    """A bundle (or an export about to be published) is defective."""


# ------------------------------------------------------------- versions


def is_version_name(name: str) -> bool:
    """Whether `name` is a version directory name: digits of an int64, as
    TF Serving reads them."""
    return bool(_VERSION_NAME.match(name or "")) and int(name) <= MAX_VERSION


def check_version(version: Any, *, argument: str = "version") -> int:
    """`version` as an `int` a TF Serving server can serve (0 to int64's maximum).

    Args:
        version: The value received.
        argument: `str`. The argument's name, for the message. Defaults to
            `"version"`.

    Returns:
        The version as an `int`.

    Raises:
        TypeError: if `version` is not an int.
        ValueError: if it is negative or above 9223372036854775807.
    """
    error = None if _checks.is_int(version) else TypeError
    if error is None and not 0 <= version <= MAX_VERSION:
        error = ValueError
    if error is not None:
        raise _checks.invalid_argument(argument, version, f"an int between 0 and {MAX_VERSION}", error)
    return int(version)


def existing_versions(base_path: str | os.PathLike) -> list[int]:
    """The integer version directories under `base_path`, sorted.

    Counts every numeric directory, published or not; see
    `published_versions` for those that hold a SavedModel.

    Args:
        base_path: `str`. A model base path.

    Returns:
        A sorted `list` of `int` versions (empty if `base_path` is missing).
    """
    base_path = os.fspath(base_path)
    if not os.path.isdir(base_path):
        return []
    return sorted(
        int(name) for name in os.listdir(base_path)
        if is_version_name(name) and os.path.isdir(os.path.join(base_path, name))
    )


def published_versions(base_path: str | os.PathLike) -> dict[int, str]:
    """The version directories under `base_path` that a server may load.

    A version is published once its SavedModel file is in it; anything
    else (an export in progress, notes, backups) is skipped, as TF Serving
    skips it.

    Args:
        base_path: `str`. A model base path.

    Returns:
        A `dict` mapping each version to its directory.

    Raises:
        OSError: if `base_path` cannot be listed.
    """
    base_path = os.fspath(base_path)
    found = {}
    for name in os.listdir(base_path):
        path = os.path.join(base_path, name)
        if is_version_name(name) and os.path.isdir(path) and saved_model_file(path) is not None:
            found[int(name)] = path
    return found


def saved_model_file(version_dir: str | os.PathLike) -> str | None:
    """The path of `saved_model.pb` (or `saved_model.pbtxt`) in `version_dir`, or `None`."""
    for name in SAVED_MODEL_FILES:
        path = os.path.join(os.fspath(version_dir), name)
        if os.path.isfile(path):
            return path
    return None


def check_version_dir(version_dir: str | os.PathLike) -> None:
    """Raises `BundleError` unless `version_dir` holds a SavedModel and its variables."""
    version_dir = os.fspath(version_dir)
    if saved_model_file(version_dir) is None:
        raise BundleError(
            f"{version_dir} is not a SavedModel version directory: it has no saved_model.pb (or .pbtxt)."
        )
    if not os.path.isdir(os.path.join(version_dir, "variables")):
        raise BundleError(f"{version_dir} is not a SavedModel version directory: it has no variables.")


def version_fingerprint(version_dir: str | os.PathLike) -> tuple:
    """Stamps of the files a server loads from `version_dir`; they change
    when the version is published again, so a failed version is retried."""
    stamps = []
    for name in (*SAVED_MODEL_FILES, VARIABLES_INDEX, WARMUP_PATH):
        try:
            stat = os.stat(os.path.join(os.fspath(version_dir), name))
        except OSError:
            stamps.append(None)
        else:
            stamps.append((stat.st_mtime_ns, stat.st_size, stat.st_ino))
    return tuple(stamps)


# ------------------------------------------------------- signature defs


def _serve_meta_graph(version_dir: str | os.PathLike) -> meta_graph_pb2.MetaGraphDef:
    path = saved_model_file(version_dir)
    if path is None:
        raise BundleError(f"{os.fspath(version_dir)} has no saved_model.pb (or saved_model.pbtxt).")
    proto = saved_model_pb2.SavedModel()
    try:
        if path.endswith(".pbtxt"):
            with open(path, encoding="utf-8") as f:
                text_format.Parse(f.read(), proto)
        else:
            with open(path, "rb") as f:
                proto.ParseFromString(f.read())
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError) as error:
        raise BundleError(f"{path} is not a valid SavedModel protobuf: {error}") from None
    for graph in proto.meta_graphs:
        if SERVE_TAG in graph.meta_info_def.tags:
            return graph
    raise BundleError(f"{path} has no meta graph with the tag {SERVE_TAG!r}.")


def read_signature_def_map(version_dir: str | os.PathLike) -> get_model_metadata_pb2.SignatureDefMap:
    """The `SignatureDefMap` of the `serve` meta graph, as TF Serving's
    `GetModelMetadata` returns it.

    Args:
        version_dir: `str`. A version directory.

    Returns:
        A `tensorflow.serving.SignatureDefMap` with every signature def
        (`__saved_model_init_op` included).

    Raises:
        BundleError: if the SavedModel file is missing, unreadable or has no
            `serve` meta graph.
    """
    result = get_model_metadata_pb2.SignatureDefMap()
    for key, signature_def in _serve_meta_graph(version_dir).signature_def.items():
        result.signature_def[key].CopyFrom(signature_def)
    return result


def read_signature_defs(version_dir: str | os.PathLike) -> dict:
    """The signatures of a SavedModel as stored in `saved_model.pb`.

    Args:
        version_dir: `str`. A version directory.

    Returns:
        A `dict` mapping each signature name to `{"method_name": str,
        "inputs": {name: {"dtype", "shape"}}, "outputs": {...}}` (a shape
        is a list with `None` for unknown dimensions, or `None` for an
        unknown rank). Internal signatures (`__...`) are left out.

    Raises:
        BundleError: as `read_signature_def_map`.

    Example:

    >>> tfcv.export.read_signature_defs("serving/models/digits/1")["serving_default"]["inputs"]
    {'inputs': {'dtype': 'float32', 'shape': [None, 8, 8, 1]}}
    """
    return {
        name: {
            "method_name": signature.method_name,
            "inputs": {key: _tensor_spec(info) for key, info in signature.inputs.items()},
            "outputs": {key: _tensor_spec(info) for key, info in signature.outputs.items()},
        }
        for name, signature in _serve_meta_graph(version_dir).signature_def.items()
        if not name.startswith("__")
    }


def _tensor_spec(info: meta_graph_pb2.TensorInfo) -> dict:
    shape = None if info.tensor_shape.unknown_rank else [
        None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim]
    return {"dtype": tf.as_dtype(info.dtype).name, "shape": shape}


# ------------------------------------------------------------- metadata


def read_metadata(version_dir: str | os.PathLike) -> dict:
    """The tfcv metadata of a bundle (`assets.extra/tfcv.json`).

    Args:
        version_dir: `str`. A version directory.

    Returns:
        The metadata `dict`.

    Raises:
        BundleError: if `version_dir` is not a SavedModel version
            directory, or the metadata is missing, not JSON or not tfcv's.
    """
    version_dir = os.fspath(version_dir)
    check_version_dir(version_dir)
    path = os.path.join(version_dir, METADATA_PATH)
    try:
        metadata = _atomic.read_json(path)
    except FileNotFoundError:
        raise BundleError(f"{version_dir}: {ASSETS_EXTRA}/{METADATA_FILE} is missing; not a tfcv bundle.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != METADATA_FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
        raise BundleError(f"{path} is not tfcv bundle metadata (format={found!r}).")
    return metadata


def write_metadata(version_dir: str | os.PathLike, metadata: Mapping[str, Any]) -> str:
    """Writes `assets.extra/tfcv.json` (atomically), stamped with the format.

    Args:
        version_dir: `str`. A version directory (usually not yet published).
        metadata: JSON-serializable `dict`.

    Returns:
        The path of the written file.
    """
    path = os.path.join(os.fspath(version_dir), METADATA_PATH)
    _atomic.write_json(path, {**metadata, "format": METADATA_FORMAT, "format_version": METADATA_FORMAT_VERSION})
    return path


# --------------------------------------------------------------- warmup


def warmup_request(model_name: str, signature_name: str,
                   inputs: Mapping[str, np.ndarray]) -> predict_pb2.PredictRequest:
    """A `PredictRequest` for a warmup record.

    Args:
        model_name: `str`. The model name (`ModelSpec.name`).
        signature_name: `str`. The signature the record runs.
        inputs: `dict` of arrays keyed by input name.

    Returns:
        The `tensorflow.serving.PredictRequest`.
    """
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature_name),
    )
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
    return request


def write_warmup(version_dir: str | os.PathLike, requests: Iterable[predict_pb2.PredictRequest]) -> int:
    """Writes `assets.extra/tf_serving_warmup_requests` (atomically), one
    `PredictionLog` TFRecord per request.

    Args:
        version_dir: `str`. A version directory (usually not yet published).
        requests: `PredictRequest`s, e.g. from `warmup_request`.

    Returns:
        The number of records written.

    Raises:
        BundleError: for more than 1,000 requests, TF Serving's limit.
    """
    logs = [prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=r))
            for r in requests]
    path = os.path.join(os.fspath(version_dir), WARMUP_PATH)
    if len(logs) > MAX_WARMUP_RECORDS:
        raise BundleError(f"{path}: {len(logs)} warmup records; TF Serving reads at most {MAX_WARMUP_RECORDS}.")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=_atomic.TEMP_PREFIX, dir=os.path.dirname(path)) as scratch:
        tmp = os.path.join(scratch, WARMUP_FILE)
        with tf.io.TFRecordWriter(tmp) as writer:
            for log in logs:
                writer.write(log.SerializeToString())
        os.replace(tmp, path)
    return len(logs)


def read_warmup(version_dir: str | os.PathLike) -> list[predict_pb2.PredictRequest]:
    """The warmup requests of a bundle, as TF Serving replays them.

    Args:
        version_dir: `str`. A version directory.

    Returns:
        A `list` of `PredictRequest`s; empty when the bundle has no
        warmup file.

    Raises:
        BundleError: naming the file (and record, counted from 0) when it
            is not a TFRecord file, holds more than 1,000 records, or a
            record is not a `PredictionLog` with a `predict_log`.
    """
    path = os.path.join(os.fspath(version_dir), WARMUP_PATH)
    requests = []
    for i, log in enumerate(read_warmup_logs(version_dir)):
        kind = log.WhichOneof("log_type")
        if kind != "predict_log":
            raise BundleError(f"{path}: warmup record {i} holds a {kind!r}, expected a predict_log.")
        requests.append(log.predict_log.request)
    return requests


WARMUP_LOG_KINDS = ("predict_log", "classify_log", "regress_log", "multi_inference_log")


def read_warmup_logs(version_dir: str | os.PathLike) -> list[prediction_log_pb2.PredictionLog]:
    """Every warmup record of a bundle, of any kind TF Serving replays.

    `read_warmup` returns the `PredictRequest`s of a tfcv bundle; a bundle
    written for TF Serving may also warm up with classify, regress and
    multi-inference records, which this returns as they are.

    Args:
        version_dir: `str`. A version directory.

    Returns:
        A `list` of `PredictionLog`s, each with one of `WARMUP_LOG_KINDS`;
        empty when the bundle has no warmup file.

    Raises:
        BundleError: naming the file (and record, counted from 0) when it
            is not a TFRecord file, holds more than 1,000 records, or a
            record is not a `PredictionLog` of a replayable kind.
    """
    path = os.path.join(os.fspath(version_dir), WARMUP_PATH)
    if not os.path.exists(path):
        return []
    try:
        records = list(tf.data.TFRecordDataset(path).take(MAX_WARMUP_RECORDS + 1).as_numpy_iterator())
    except tf.errors.OpError as error:
        raise BundleError(f"{path} is not a readable TFRecord file: {error.message}") from None
    if len(records) > MAX_WARMUP_RECORDS:
        raise BundleError(
            f"{path} holds more than {MAX_WARMUP_RECORDS} warmup records; TF Serving reads at most "
            f"{MAX_WARMUP_RECORDS}."
        )
    logs = []
    for i, record in enumerate(records):
        try:
            log = prediction_log_pb2.PredictionLog.FromString(record)
        except message.DecodeError as error:
            raise BundleError(f"{path}: warmup record {i} is not a PredictionLog: {error}") from None
        kind = log.WhichOneof("log_type")
        if kind not in WARMUP_LOG_KINDS:
            raise BundleError(f"{path}: warmup record {i} holds a {kind!r}, expected one of {WARMUP_LOG_KINDS}.")
        logs.append(log)
    return logs


def is_tf1_saved_model(version_dir: str | os.PathLike) -> bool:
    """Whether the `serve` meta graph is a TF1 graph (no object graph).

    TF Serving runs every SavedModel in a session over its MetaGraph; a
    TF1 graph (reference variables, `ParseExample` on unknown ranks, ...)
    can only be served that way, not through `tf.saved_model.load`.

    Raises:
        BundleError: as `read_signature_def_map`.
    """
    return not _serve_meta_graph(version_dir).HasField("object_graph_def")


# --------------------------------------------------------- model config


def write_model_config(path: str | os.PathLike, models: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """Writes a TF Serving `model_config_list` file for several models.

    Pass the file to `tensorflow_model_server --model_config_file=PATH` or
    `tfcv serve --model_config_file=PATH`.

    Args:
        path: `str`. File to write (atomically).
        models: A `dict` mapping model names to base paths, or a list of
            `dict`s with keys `name`, `base_path`, and optionally
            `version_policy` (`"latest"`, `"all"`, `{"latest": n}`, or a
            list of versions to serve; defaults to `"latest"`),
            `version_labels` (`dict` mapping labels such as `"stable"` to
            versions) and `model_platform` (defaults to `"tensorflow"`).

    Returns:
        The path of the written file.

    Example:

    >>> tfcv.export.write_model_config("serving/models.config", [
    ...     {"name": "digits", "base_path": "serving/models/digits",
    ...      "version_policy": [1, 2], "version_labels": {"stable": 1, "canary": 2}},
    ... ])
    """
    if isinstance(models, Mapping):
        entries = [{"name": name, "base_path": base} for name, base in models.items()]
    elif isinstance(models, Sequence) and not isinstance(models, (str, bytes)):
        entries = [dict(entry) if isinstance(entry, Mapping) else entry for entry in models]
    else:
        raise TypeError(
            f"Invalid value for argument `models`. Received: models={models!r}. Expected a dict of "
            "name -> base_path or a list of dicts."
        )
    if not entries:
        raise ValueError("Invalid value for argument `models`. Received an empty collection. Expected at least one model.")
    config = model_server_config_pb2.ModelServerConfig()
    seen = set()
    for entry in entries:
        if not isinstance(entry, dict):
            raise TypeError(f"Invalid entry in argument `models`. Received: {entry!r}. Expected a dict.")
        unknown = set(entry) - set(_MODEL_KEYS)
        if unknown:
            raise ValueError(
                f"Invalid entry in argument `models`: unknown keys {sorted(unknown)}. Accepted keys: "
                f"{', '.join(_MODEL_KEYS)}."
            )
        name, base = entry.get("name"), entry.get("base_path")
        if not isinstance(name, str) or not _MODEL_NAME.match(name):
            raise ValueError(
                f"Invalid model name. Received: name={name!r}. Expected letters, digits, '_', '.' or '-'."
            )
        if name in seen:
            raise ValueError(f"Invalid value for argument `models`: the model name {name!r} appears twice.")
        seen.add(name)
        if not isinstance(base, (str, os.PathLike)):
            raise TypeError(f"Invalid base_path for model {name!r}. Received: base_path={base!r}. Expected a path.")
        model = config.model_config_list.config.add()
        model.name = name
        model.base_path = os.path.abspath(os.fspath(base))
        model.model_platform = entry.get("model_platform", "tensorflow")
        served = _set_version_policy(model.model_version_policy, name, entry.get("version_policy", "latest"))
        for label, label_version in (entry.get("version_labels") or {}).items():
            if not _checks.is_int(label_version) or not 0 <= label_version <= MAX_VERSION:
                raise ValueError(
                    f"Invalid version label {label!r} for model {name!r}. Received: {label_version!r}. "
                    f"Expected an int version between 0 and {MAX_VERSION}."
                )
            if served is not None and int(label_version) not in served:
                raise ValueError(
                    f"Invalid version label {label!r} for model {name!r}: version {label_version} is not "
                    f"served by its version_policy {sorted(served)}."
                )
            if int(label_version) not in existing_versions(model.base_path):
                warnings.warn(
                    f"Version label {label!r} of model {name!r} points at version {label_version}, which "
                    f"does not exist yet in {model.base_path!r}; TF Serving refuses labels of unloaded versions.",
                    UserWarning,
                    stacklevel=2,
                )
            model.version_labels[str(label)] = int(label_version)
    _atomic.write_text(path, text_format.MessageToString(config))
    return os.path.abspath(os.fspath(path))


def _set_version_policy(policy, name, value) -> set[int] | None:
    """Fills a `FileSystemStoragePathSource.ServableVersionPolicy`; returns
    the specific versions served, or `None` when not fixed."""
    if value == "latest":
        policy.latest.num_versions = 1
        return None
    if value == "all":
        policy.all.SetInParent()
        return None
    if isinstance(value, Mapping) and set(value) == {"latest"} and isinstance(value["latest"], int) and value["latest"] >= 1:
        policy.latest.num_versions = int(value["latest"])
        return None
    if isinstance(value, Sequence) and not isinstance(value, str) and value and all(
        _checks.is_int(v) and 0 <= v <= MAX_VERSION for v in value
    ):
        policy.specific.versions.extend(int(v) for v in value)
        return {int(v) for v in value}
    raise ValueError(
        f"Invalid version_policy for model {name!r}. Received: version_policy={value!r}. Expected 'latest', "
        f"'all', {{'latest': n}} or a non-empty list of versions between 0 and {MAX_VERSION}."
    )


def read_model_config(path: str | os.PathLike) -> model_server_config_pb2.ModelServerConfig:
    """Reads a TF Serving `--model_config_file` (text `ModelServerConfig`).

    Args:
        path: `str`. Path of the file, e.g. `serving/models.config`.

    Returns:
        The `ModelServerConfig`, checked to hold a non-empty
        `model_config_list` of TensorFlow models with distinct names.

    Raises:
        ValueError: naming the file, if it is not such a config.
    """
    where = repr(os.fspath(path))
    with open(path, encoding="utf-8") as f:
        text = f.read()
    proto = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as error:
        raise ValueError(f"Model config file {where} is not a valid ModelServerConfig: {error}") from None
    if proto.WhichOneof("config") != "model_config_list" or not proto.model_config_list.config:
        raise ValueError(
            f"Model config file {where} must hold a `model_config_list` with at least one "
            "`config { name: ... base_path: ... }` entry."
        )
    names = []
    for entry in proto.model_config_list.config:
        if entry.model_platform not in ("", "tensorflow"):
            raise ValueError(
                f"Model {entry.name!r} in {where} has model_platform={entry.model_platform!r}; "
                "only 'tensorflow' is served."
            )
        names.append(entry.name)
    if len(set(names)) != len(names):
        raise ValueError(f"Model config file {where} names a model twice: {names}.")
    return proto
