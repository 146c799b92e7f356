"""SavedModel bundles for TensorFlow Serving: `export_saved_model`, `Randomized`, `verify`.

A bundle is one version directory in TF Serving's layout::

    base_path/<version>/saved_model.pb
                        variables/
                        assets.extra/tf_serving_warmup_requests
                        assets.extra/tfcv.json

with up to three `tensorflow/serving/predict` signatures:

- `serving_default`: the deterministic prediction (for a `CVResult`, the
  mean of the fold models).
- `predict_folds` (`CVResult` only): every fold model's output, stacked on
  axis 1.
- `predict_randomized`: `samples` randomized forward passes in one
  vectorized graph, reduced to `mean`, `std` and, for classifiers,
  `predictive_entropy` and `agreement`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfcv import _atomic
from tfcv.crossval import CVResult, load_model_safely

__all__ = [
    "BundleError",
    "Randomized",
    "describe",
    "export_saved_model",
    "verify",
    "write_model_config",
]

SERVING_DEFAULT = "serving_default"
PREDICT_FOLDS = "predict_folds"
PREDICT_RANDOMIZED = "predict_randomized"
PREDICT_METHOD = "tensorflow/serving/predict"
WARMUP_FILE = "tf_serving_warmup_requests"
METADATA_FILE = "tfcv.json"
ASSETS_EXTRA = "assets.extra"

_FORMAT = "tfcv.bundle"
_FORMAT_VERSION = 1
# Max abs difference allowed between the exported serving_default and the
# in-memory model before anything is published.
_TOLERANCE = 1e-5
# TF Serving reads at most 1,000 warmup records per model.
_MAX_WARMUP_RECORDS = 1000
_WARMUP_BATCH_SIZES = (1, 2, 5)
_EXPORT_TEMP = _atomic.TEMP_PREFIX + "export-"
# Private fault injection for tests: "raise" raises and "kill" SIGKILLs the
# process at the last step before the version directory is renamed into place.
_FAULT_ENV = "TFCV_EXPORT_FAULT"
_AUTO_INPUT_NAME = re.compile(r"^(input|input_layer|keras_tensor)(_\d+)?$")
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_STATE_NAME = "seed_generator_state"
_KNOWN_METADATA = ("class_names", "task", "input_range")


class BundleError(ValueError):
    """A bundle (or an export about to be published) is defective."""


@dataclasses.dataclass(frozen=True)
class Randomized:
    """Configures the `predict_randomized` signature.

    The signature tiles the batch `samples` times and runs the model once
    (per fold) on the tiled batch with `training=False` inside
    `tfcv.layers.randomized_inference`: augmentation layers randomize and
    dropout layers drop, while BatchNormalization and every other layer stay
    in inference mode and no moving statistic is updated. With a `CVResult`
    the samples are spread as evenly as possible over the fold models and
    every fold gets the same weight in the statistics.

    Args:
        samples: `int`. Randomized forward passes per input. Defaults to `16`.
        augmentation: `bool`. Randomize `tfcv.layers.Augmentation` layers.
            Defaults to `True`.
        mc_dropout: `bool`. Keep dropout layers active (Monte Carlo dropout).
            Defaults to `True`.
        seed: `int` or `None`. If set, the random generators of the exported
            graph start from states derived from it, so a freshly loaded
            bundle replays the same sequence of randomized outputs.
            Defaults to `None` (the states the model has).

    Example:

    >>> tfcv.export.export_saved_model(result, "models/digits",
    ...     randomized=tfcv.export.Randomized(32, mc_dropout=False))
    """

    samples: int = 16
    _: dataclasses.KW_ONLY
    augmentation: bool = True
    mc_dropout: bool = True
    seed: int | None = None

    def __post_init__(self):
        if isinstance(self.samples, bool) or not isinstance(self.samples, (int, np.integer)) or self.samples < 1:
            raise ValueError(
                f"Invalid value for argument `samples`. Received: samples={self.samples!r}. Expected an int >= 1."
            )
        for name in ("augmentation", "mc_dropout"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(
                    f"Invalid value for argument `{name}`. Received: {name}={getattr(self, name)!r}. Expected a bool."
                )
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0
        ):
            raise ValueError(
                f"Invalid value for argument `seed`. Received: seed={self.seed!r}. Expected an int >= 0 or None."
            )
        object.__setattr__(self, "samples", int(self.samples))

    def to_dict(self) -> dict:
        return {"samples": self.samples, "augmentation": bool(self.augmentation),
                "mc_dropout": bool(self.mc_dropout), "seed": self.seed}

    @classmethod
    def from_dict(cls, config: Mapping | Randomized) -> Randomized:
        if isinstance(config, Randomized):
            return config
        return cls(**dict(config))


# ------------------------------------------------------------------ export


def export_saved_model(
    obj: keras.Model | CVResult | str | os.PathLike,
    base_path: str | os.PathLike,
    *,
    version: int | None = None,
    randomized: Randomized | None = Randomized(samples=16),
    warmup: bool | Any = True,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> str:
    """Writes a TensorFlow Serving bundle to `base_path/<version>`.

    The bundle is written into a hidden temporary directory inside
    `base_path`, checked (every signature's specs, `serving_default` against
    the in-memory model to 1e-5, every warmup record replayed) and only then
    renamed into place, so a server polling `base_path` never sees a partial
    version and a failed or killed export leaves no numeric directory behind.
    Leftovers of killed exports are removed by the next export.

    Args:
        obj: A `keras.Model`, a `CVResult` (exported as its fold ensemble),
            or the path of a run directory or `.keras` file, loaded with
            `safe_mode=True`.
        base_path: `str`. Directory that TF Serving polls for versions
            (`model_base_path`).
        version: `int`. Version to write. Defaults to one above the highest
            present (1 for a new base path).
        randomized: A `Randomized` config, or `None` to leave the
            `predict_randomized` signature out. Defaults to
            `Randomized(samples=16)`.
        warmup: `True` writes warmup records of random inputs in the input
            range (see `metadata`), `False` writes none, and an array of
            samples writes random inputs in the value range of that array.
            Defaults to `True`.
        metadata: `dict` of extra information: `class_names` (list of
            `str`, defaults to `["0", "1", ...]` for classifiers), `task`
            (`"classification"` or `"regression"`, for a `keras.Model`;
            defaults to classification when the last activation is softmax
            or sigmoid), `input_range` (`[low, high]` of the input values,
            defaults to `[0, 1]` for float and `[0, 255]` for integer
            inputs). Any other JSON-serializable keys are stored as they are
            in `assets.extra/tfcv.json`.
        overwrite: `bool`. Replace an existing version directory. Defaults
            to `False`.

    Returns:
        The path of the published version directory.

    Example:

    >>> path = tfcv.export.export_saved_model(result, "serving/models/digits")
    >>> tfcv.export.verify(path)
    """
    if randomized is not None and not isinstance(randomized, Randomized):
        raise TypeError(
            f"Invalid value for argument `randomized`. Received: randomized={randomized!r}. "
            "Expected a tfcv.export.Randomized or None."
        )
    metadata = _check_metadata(metadata)
    plan = _ExportPlan(_resolve(obj), randomized, metadata, warmup)

    base_path = os.path.abspath(os.fspath(base_path))
    os.makedirs(base_path, exist_ok=True)
    _remove_export_leftovers(base_path)
    version = _choose_version(base_path, version, overwrite)
    target = os.path.join(base_path, str(version))

    tmp = tempfile.mkdtemp(prefix=f"{_EXPORT_TEMP}{os.getpid()}-", dir=base_path)
    try:
        signatures = plan.write_saved_model(tmp)
        loaded = tf.saved_model.load(tmp, tags=["serve"])
        plan.compare_with_models(loaded)
        n_records = plan.write_warmup(tmp, model_name=os.path.basename(base_path))
        _atomic.write_json(
            os.path.join(tmp, ASSETS_EXTRA, METADATA_FILE),
            plan.metadata(signatures, version=version, model_name=os.path.basename(base_path),
                          warmup_records=n_records),
        )
        _check_bundle(tmp, loaded=loaded)
        _inject_fault()
        _publish(tmp, target, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _inject_fault() -> None:
    fault = os.environ.get(_FAULT_ENV)
    if fault == "raise":
        raise RuntimeError(f"Export failure injected by {_FAULT_ENV}=raise before publishing.")
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)


def _publish(tmp: str, target: str, *, overwrite: bool) -> None:
    _fsync_tree(tmp)
    if os.path.exists(target):
        if not overwrite:
            raise FileExistsError(
                f"Version directory {target!r} appeared while exporting. Pass overwrite=True to replace it."
            )
        aside = tempfile.mkdtemp(prefix=f"{_EXPORT_TEMP}{os.getpid()}-old-", dir=os.path.dirname(target))
        os.replace(target, os.path.join(aside, "old"))
        os.replace(tmp, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, target)
    with contextlib.suppress(OSError):
        fd = os.open(os.path.dirname(target), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(root: str) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(directory, name), "rb") as f:
                os.fsync(f.fileno())


def _remove_export_leftovers(base_path: str) -> list[str]:
    """Removes temporary directories of exports whose process is gone."""
    removed = []
    for name in os.listdir(base_path):
        if not name.startswith(_EXPORT_TEMP):
            continue
        match = re.match(r"(\d+)-", name[len(_EXPORT_TEMP):])
        if match and int(match.group(1)) != os.getpid() and _process_alive(int(match.group(1))):
            continue
        full = os.path.join(base_path, name)
        shutil.rmtree(full, ignore_errors=True)
        removed.append(full)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def existing_versions(base_path: str | os.PathLike) -> list[int]:
    """The integer version directories under `base_path`, sorted."""
    base_path = os.fspath(base_path)
    if not os.path.isdir(base_path):
        return []
    return sorted(
        int(name) for name in os.listdir(base_path)
        if name.isdigit() and os.path.isdir(os.path.join(base_path, name))
    )


def _choose_version(base_path: str, version, overwrite: bool) -> int:
    if version is None:
        return max(existing_versions(base_path), default=0) + 1
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 0:
        raise ValueError(
            f"Invalid value for argument `version`. Received: version={version!r}. Expected an int >= 0 or None."
        )
    version = int(version)
    if os.path.exists(os.path.join(base_path, str(version))) and not overwrite:
        raise FileExistsError(
            f"Version {version} already exists in {base_path!r}. Pass overwrite=True to replace it, "
            "or version=None to write the next version."
        )
    return version


def _check_metadata(metadata) -> dict:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(
            f"Invalid value for argument `metadata`. Received: metadata={metadata!r}. Expected a dict or None."
        )
    metadata = dict(metadata)
    try:
        json.dumps(metadata, default=_atomic._json_default)
    except (TypeError, ValueError) as error:
        raise TypeError(f"Invalid value for argument `metadata`: it is not JSON-serializable ({error}).") from error
    if "task" in metadata and metadata["task"] not in ("classification", "regression"):
        raise ValueError(
            f"Invalid value for `metadata['task']`. Received: task={metadata['task']!r}. "
            "Expected 'classification' or 'regression'."
        )
    if "input_range" in metadata:
        value = metadata["input_range"]
        if (not isinstance(value, (list, tuple)) or len(value) != 2
                or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value) or value[0] > value[1]):
            raise ValueError(
                f"Invalid value for `metadata['input_range']`. Received: input_range={value!r}. "
                "Expected [low, high] with finite low <= high."
            )
    if "class_names" in metadata:
        names = metadata["class_names"]
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise TypeError(
                f"Invalid value for `metadata['class_names']`. Received: class_names={names!r}. "
                "Expected a list of str."
            )
    return metadata


def _resolve(obj) -> tuple[list[keras.Model], CVResult | None]:
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        if os.path.isdir(path):
            obj = CVResult.load(path)
        elif os.path.isfile(path) and path.endswith(".keras"):
            obj = load_model_safely(path)
        else:
            raise FileNotFoundError(
                f"Invalid value for argument `obj`. Received: obj={path!r}, which is neither a run directory "
                "nor a .keras file."
            )
    if isinstance(obj, CVResult):
        return list(obj.models), obj
    if isinstance(obj, keras.Model):
        return [obj], None
    raise TypeError(
        f"Invalid value for argument `obj`. Received: obj={obj!r} of type {type(obj).__name__}. "
        "Expected a keras.Model, a CVResult, or the path of a run directory or .keras file."
    )


# ------------------------------------------------------------ the graphs


class _ExportPlan:
    """What gets exported: the models, their specs and the signature graphs."""

    def __init__(self, resolved, randomized: Randomized | None, metadata: dict, warmup):
        self.models, self.result = resolved
        self.randomized = randomized
        self.user_metadata = metadata
        first = self.models[0]
        for k, model in enumerate(self.models):
            if not model.built or not getattr(model, "inputs", None):
                raise ValueError(
                    f"Model {model.name!r} has no defined inputs. Build it on a keras.Input (or call it "
                    "once on data) before exporting."
                )
            if len(model.inputs) != 1:
                raise ValueError(
                    f"Model {model.name!r} has {len(model.inputs)} inputs. tfcv.export supports models "
                    "with exactly one input."
                )
            if k and (tuple(model.inputs[0].shape) != tuple(first.inputs[0].shape)
                      or model.inputs[0].dtype != first.inputs[0].dtype):
                raise ValueError(
                    f"Fold model {k} takes inputs of shape {tuple(model.inputs[0].shape)}, fold 0 takes "
                    f"{tuple(first.inputs[0].shape)}: the fold models of one export must share their input spec."
                )
        spec = first.inputs[0]
        self.input_shape = tuple(spec.shape)
        self.input_dtype = tf.as_dtype(spec.dtype)
        name = getattr(spec, "name", None) or ""
        self.input_name = name if _IDENTIFIER.match(name) and not _AUTO_INPUT_NAME.match(name) else "inputs"
        self.n_folds = len(self.models)
        if randomized is not None and randomized.samples < self.n_folds:
            raise ValueError(
                f"Invalid value for argument `randomized`. Received: samples={randomized.samples} for "
                f"{self.n_folds} fold models. Expected samples >= {self.n_folds}, so that every fold contributes."
            )
        if randomized is not None and self.n_folds == 1 and not _has_random_layers(first, randomized):
            warnings.warn(
                f"predict_randomized will be deterministic (std 0): model {first.name!r} has no layer that "
                f"{randomized!r} randomizes (tfcv.layers.Augmentation with augmentation=True, dropout "
                "layers with mc_dropout=True). Pass randomized=None to leave the signature out.",
                UserWarning,
                stacklevel=3,
            )
        self.splits = [None if randomized is None else _split_at_randomness(m, randomized) for m in self.models]
        self.input_range = self._input_range(warmup)
        self.warmup = warmup is not False and warmup is not None
        if self.warmup and any(d is None for d in self.input_shape[1:]):
            raise ValueError(
                f"The model input has unknown non-batch dimensions {self.input_shape}; warmup inputs cannot "
                "be drawn for it. Pass warmup=False, or an array of samples as `warmup`."
            )
        self.rng = np.random.default_rng(0 if randomized is None or randomized.seed is None else randomized.seed)
        self.probe = self.random_inputs(8 if self.input_shape[0] is None else int(self.input_shape[0]))
        reference = self._eager_outputs(first, self.probe)
        self.output_names = list(reference)
        self.task = self._task(first, reference)
        self.from_logits = {
            name: self.task == "classification" and not _looks_like_probabilities(first, name, value, len(reference))
            for name, value in reference.items()
        }
        self.class_names = self._class_names(reference) if self.task == "classification" else None

    # ------------------------------------------------------------ specs

    def _input_range(self, warmup):
        if warmup is not True and warmup is not False and warmup is not None:
            samples = np.asarray(warmup)
            if samples.size == 0 or not np.issubdtype(samples.dtype, np.number):
                raise ValueError(
                    f"Invalid value for argument `warmup`. Received an array of dtype {samples.dtype} and "
                    f"shape {samples.shape}. Expected True, False, or a non-empty numeric array of samples."
                )
            if samples.shape[1:] != tuple(d if d is not None else s for d, s in zip(self.input_shape[1:], samples.shape[1:])):
                raise ValueError(
                    f"Invalid value for argument `warmup`: its samples have shape {samples.shape[1:]}, "
                    f"the model takes {self.input_shape[1:]}."
                )
            self.sample_shape = samples.shape[1:]
            return [float(np.min(samples)), float(np.max(samples))]
        self.sample_shape = self.input_shape[1:]
        if "input_range" in self.user_metadata:
            return [float(v) for v in self.user_metadata["input_range"]]
        return [0.0, 255.0] if self.input_dtype.is_integer else [0.0, 1.0]

    def random_inputs(self, batch_size: int) -> np.ndarray:
        return _random_tensor(self.rng, (batch_size, *self.sample_shape), self.input_dtype, self.input_range)

    def _eager_outputs(self, model, x) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in _name_outputs(model(x, training=False), model).items()}

    def _task(self, model, reference) -> str:
        if self.result is not None:
            return self.result.task
        if "task" in self.user_metadata:
            return self.user_metadata["task"]
        return "classification" if _final_activation(model) in ("softmax", "sigmoid") else "regression"

    def _class_names(self, reference) -> list[str]:
        widths = {name: (value.shape[-1] if value.ndim > 1 else 1) for name, value in reference.items()}
        n_classes = max(2, max(widths.values()))
        names = self.user_metadata.get("class_names")
        if names is None:
            return [str(i) for i in range(n_classes)]
        names = [str(n) for n in names]
        if len(names) != n_classes:
            raise ValueError(
                f"Invalid value for `metadata['class_names']`: {len(names)} names for a model with "
                f"{n_classes} classes."
            )
        return names

    # ----------------------------------------------------------- graphs

    def _outputs(self, model, x) -> dict[str, tf.Tensor]:
        return self._convert(model(x, training=False), model)

    def _convert(self, raw, model) -> dict[str, tf.Tensor]:
        outputs = _name_outputs(raw, model)
        if set(outputs) != set(self.output_names):
            raise ValueError(
                f"Model {model.name!r} returns outputs {sorted(outputs)}, the first model returns "
                f"{sorted(self.output_names)}: the fold models of one export must share their outputs."
            )
        converted = {}
        for name in self.output_names:
            value = outputs[name]
            if value.dtype.is_floating and value.dtype != tf.float32:
                value = tf.cast(value, tf.float32)
            if self.from_logits[name]:
                value = tf.sigmoid(value) if value.shape[-1] == 1 else tf.nn.softmax(value, axis=-1)
            converted[name] = value
        return converted

    def serve(self, x):
        per_fold = [self._outputs(model, x) for model in self.models]
        if self.n_folds == 1:
            return per_fold[0]
        return {name: tf.add_n([p[name] for p in per_fold]) / float(self.n_folds) for name in self.output_names}

    def predict_folds(self, x):
        per_fold = [self._outputs(model, x) for model in self.models]
        return {name: tf.stack([p[name] for p in per_fold], axis=1) for name in self.output_names}

    def samples_per_fold(self) -> list[int]:
        samples, folds = self.randomized.samples, self.n_folds
        return [samples // folds + (1 if k < samples % folds else 0) for k in range(folds)]

    def predict_randomized(self, x):
        from tfcv.layers import randomized_inference

        config = self.randomized
        counts = self.samples_per_fold()
        batch = tf.shape(x)[0]
        draws: dict[str, list] = {name: [] for name in self.output_names}
        weights = []
        with randomized_inference(augmentation=bool(config.augmentation), dropout=bool(config.mc_dropout)):
            for model, split, count in zip(self.models, self.splits, counts):
                # One call on the batch tiled `count` times: the randomized
                # passes run as one vectorized graph, not a loop. Layers
                # before the first randomized one run once, on the batch.
                if split is None:
                    raw = model(_tile(x, count), training=False)
                else:
                    prefix, suffix = split
                    shared = prefix(x, training=False)
                    raw = suffix(tf.nest.map_structure(lambda t, n=count: _tile(t, n), shared), training=False)
                for name, value in self._convert(raw, model).items():
                    rest = value.shape[1:]
                    shape = [count, -1, *rest] if rest.is_fully_defined() else tf.concat(
                        [[count, batch], tf.shape(value)[1:]], axis=0)
                    draws[name].append(tf.reshape(value, shape))
                weights += [1.0 / (self.n_folds * count)] * count
        w = tf.constant(weights, tf.float32)
        outputs = {}
        for name in self.output_names:
            y = tf.concat(draws[name], axis=0)
            wb = tf.reshape(w, [-1] + [1] * (len(y.shape) - 1))
            mean = tf.reduce_sum(wb * y, axis=0)
            std = tf.sqrt(tf.reduce_sum(wb * tf.square(y - mean), axis=0))
            stats = {"mean": mean, "std": std}
            if self.task == "classification":
                stats["predictive_entropy"] = _entropy(mean)
                stats["agreement"] = _agreement(y, w)
            prefix = "" if len(self.output_names) == 1 else f"{name}_"
            outputs.update({prefix + key: value for key, value in stats.items()})
        return outputs

    # ------------------------------------------------------------ write

    def signature_functions(self) -> dict:
        functions = {SERVING_DEFAULT: self.serve}
        if self.n_folds > 1:
            functions[PREDICT_FOLDS] = self.predict_folds
        if self.randomized is not None:
            functions[PREDICT_RANDOMIZED] = self.predict_randomized
        return functions

    def write_saved_model(self, directory: str) -> dict:
        archive = keras.export.ExportArchive()
        for model in self.models:
            archive.track(model)
        spec = tf.TensorSpec(self.input_shape, self.input_dtype, name=self.input_name)
        signatures = {}
        for name, fn in self.signature_functions().items():
            endpoint = archive.add_endpoint(name, _single_argument(fn), input_signature=[spec])
            concrete = endpoint.get_concrete_function()
            signatures[name] = {
                "inputs": {self.input_name: _spec_dict(spec)},
                "outputs": {k: _spec_dict(v) for k, v in concrete.structured_outputs.items()},
            }
        states = self._seed_states()
        if states:
            archive.add_variable_collection("randomized_state", states)
        with self._seeded(states):
            archive.write_out(directory, verbose=False)
        os.makedirs(os.path.join(directory, ASSETS_EXTRA), exist_ok=True)
        return signatures

    def _seed_states(self) -> list:
        if self.randomized is None:
            return []
        seen, states = set(), []
        for model in self.models:
            for variable in model.variables:
                if _STATE_NAME in variable.path and id(variable) not in seen:
                    seen.add(id(variable))
                    states.append(variable)
        return states

    @contextlib.contextmanager
    def _seeded(self, states):
        if self.randomized is None or self.randomized.seed is None or not states:
            yield
            return
        saved = [np.asarray(v.numpy()) for v in states]
        seeds = np.random.SeedSequence(self.randomized.seed).generate_state(len(states))
        try:
            for variable, seed, old in zip(states, seeds, saved):
                variable.assign(np.array([int(seed) % 2**31, 0], dtype=old.dtype))
            yield
        finally:
            for variable, old in zip(states, saved):
                variable.assign(old)

    def compare_with_models(self, loaded) -> None:
        per_fold = [self._eager_outputs(model, self.probe) for model in self.models]
        got = loaded.signatures[SERVING_DEFAULT](**{self.input_name: tf.constant(self.probe)})
        for name in self.output_names:
            values = []
            for outputs in per_fold:
                value = outputs[name].astype("float32")
                if self.from_logits[name]:
                    value = _np_probabilities(value)
                values.append(value)
            expected = np.mean(values, axis=0)
            diff = float(np.max(np.abs(np.asarray(got[name]) - expected)))
            if not diff <= _TOLERANCE:
                raise BundleError(
                    f"The exported serving_default output {name!r} differs from the in-memory model by "
                    f"{diff:.3g} (max abs difference; accepted <= {_TOLERANCE}). Nothing was published. "
                    "Does a layer behave differently inside tf.function than eagerly?"
                )

    def write_warmup(self, directory: str, *, model_name: str) -> int:
        if not self.warmup:
            return 0
        from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

        batch_sizes = _warmup_batch_sizes(self.input_shape)
        path = os.path.join(directory, ASSETS_EXTRA, WARMUP_FILE)
        count = 0
        with tf.io.TFRecordWriter(path) as writer:
            for signature in self.signature_functions():
                for batch_size in batch_sizes:
                    request = predict_pb2.PredictRequest(
                        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature),
                    )
                    request.inputs[self.input_name].CopyFrom(tf.make_tensor_proto(self.random_inputs(batch_size)))
                    log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
                    writer.write(log.SerializeToString())
                    count += 1
        return count

    def metadata(self, signatures, *, version, model_name, warmup_records) -> dict:
        import tfcv

        scores = None
        if self.result is not None:
            result = self.result
            scores = {
                "per_fold": {n: [_finite_or_none(v) for v in vs] for n, vs in result.scores.items()},
                "mean": {n: _finite_or_none(result.mean(n)) for n in result.scores},
                "std": {n: _finite_or_none(result.std(n)) for n in result.scores},
            }
            if result.test_scores:
                scores["test"] = {n: _finite_or_none(v) for n, v in result.test_scores.items()}
        randomized = None
        if self.randomized is not None:
            randomized = {**self.randomized.to_dict(), "samples_per_fold": self.samples_per_fold()}
        extra = {k: v for k, v in self.user_metadata.items() if k not in _KNOWN_METADATA}
        return {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "model_name": model_name,
            "version": version,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "task": self.task,
            "outputs": "probabilities" if self.task == "classification" else "values",
            "from_logits": {k: bool(v) for k, v in self.from_logits.items()} if self.task == "classification" else None,
            "input_spec": {
                "name": self.input_name,
                "shape": list(self.input_shape),
                "dtype": self.input_dtype.name,
                "range": self.input_range,
            },
            "output_names": self.output_names,
            "class_names": self.class_names,
            "n_folds": self.n_folds,
            "scores": scores,
            "randomized": randomized,
            "signatures": signatures,
            "warmup": {"file": WARMUP_FILE, "records": warmup_records} if warmup_records else None,
            "versions": {"tfcv": tfcv.__version__, "tensorflow": tf.__version__, "keras": keras.__version__},
            "metadata": extra,
        }


def _has_random_layers(layer, randomized: Randomized) -> bool:
    """Whether `layer` is, or holds, a layer that `randomized` randomizes."""
    from tfcv.layers import Augmentation
    from tfcv.layers.randomized import _DROPOUT_ROOTS

    kinds = (Augmentation,) * bool(randomized.augmentation) + _DROPOUT_ROOTS * bool(randomized.mc_dropout)
    if not isinstance(layer, keras.layers.Layer):
        return False
    return any(isinstance(inner, kinds) for inner in layer._flatten_layers(include_self=True))


def _split_at_randomness(model, randomized: Randomized):
    """`(prefix, suffix)` models around the first randomized layers of a
    functional model, or `None` when nothing before them can be shared.

    The prefix holds every layer that does not depend on a randomized one, so
    the randomized signature runs it once on the batch instead of once per
    sample; `suffix(prefix(x))` computes exactly `model(x)`.
    """
    graph = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    nodes_by_depth = getattr(graph, "_nodes_by_depth", None)
    if not nodes_by_depth or len(graph.inputs) != 1:
        return None
    random_ids: set[int] = set()
    cut: dict[int, Any] = {}
    for depth in sorted(nodes_by_depth, reverse=True):
        for node in nodes_by_depth[depth]:
            inputs = list(node.input_tensors)
            if not inputs:
                continue
            if _has_random_layers(node.operation, randomized) or any(id(t) in random_ids for t in inputs):
                random_ids.update(id(t) for t in node.output_tensors)
                cut.update({id(t): t for t in inputs if id(t) not in random_ids})
    if not cut or any(id(t) not in random_ids for t in graph.outputs):
        return None
    tensors = list(cut.values())
    if all(t is graph.inputs[0] for t in tensors):
        return None
    shared = tensors[0] if len(tensors) == 1 else tensors
    try:
        prefix = keras.Model(graph.inputs[0], shared)
        suffix = keras.Model(shared, graph._outputs_struct)
    except Exception:  # noqa: BLE001 - an unusual graph: tile the inputs instead
        return None
    return prefix, suffix


def _tile(tensor, count: int):
    return tf.tile(tensor, [count] + [1] * (len(tensor.shape) - 1))


def _single_argument(fn):
    # tf.function names signature inputs after the TensorSpec; the wrapper
    # only fixes the Python arity.
    def signature_fn(inputs):
        return fn(inputs)

    return signature_fn


def _name_outputs(outputs, model) -> dict:
    if isinstance(outputs, Mapping):
        return {_safe_name(str(k), f"output_{i}"): v for i, (k, v) in enumerate(outputs.items())}
    if isinstance(outputs, (list, tuple)):
        if len(outputs) == 1:
            return {"outputs": outputs[0]}
        names = list(getattr(model, "output_names", None) or [])
        if len(names) != len(outputs):
            names = [f"output_{i}" for i in range(len(outputs))]
        return {_safe_name(str(n), f"output_{i}"): v for i, (n, v) in enumerate(zip(names, outputs))}
    return {"outputs": outputs}


def _safe_name(name: str, fallback: str) -> str:
    return name if _IDENTIFIER.match(name) else fallback


def _final_activation(model) -> str | None:
    """`"softmax"`, `"sigmoid"`, `"linear"` or `None` (unknown) for the
    layer producing a single-output model's output."""
    if len(getattr(model, "outputs", None) or []) != 1:
        return None
    history = getattr(model.outputs[0], "_keras_history", None)
    layer = getattr(history, "operation", None) if history is not None else None
    if layer is None:
        return None
    if isinstance(layer, keras.Model):
        return _final_activation(layer)
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    name = getattr(activation, "__name__", "")
    if name in ("softmax", "sigmoid", "linear"):
        return name
    return None


def _looks_like_probabilities(model, name, value, n_outputs) -> bool:
    activation = _final_activation(model) if n_outputs == 1 else None
    if activation in ("softmax", "sigmoid"):
        return True
    if activation == "linear":
        return False
    value = np.asarray(value, dtype="float64")
    if value.size == 0 or value.min() < 0 or value.max() > 1:
        return False
    return value.shape[-1] == 1 or bool(np.allclose(value.sum(axis=-1), 1.0, atol=1e-3))


def _np_probabilities(value):
    if value.shape[-1] == 1:
        return (1.0 / (1.0 + np.exp(-value))).astype("float32")
    shifted = np.exp(value - value.max(axis=-1, keepdims=True))
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype("float32")


def _two_columns(p):
    return tf.concat([1.0 - p, p], axis=-1) if p.shape[-1] == 1 else p


def _entropy(mean):
    p = _two_columns(mean)
    return -tf.reduce_sum(p * tf.math.log(tf.clip_by_value(p, 1e-12, 1.0)), axis=-1)


def _agreement(draws, weights):
    """Weighted fraction of the draws whose class is the (weighted) mode."""
    if draws.shape[-1] == 1:
        classes = tf.cast(draws[..., 0] > 0.5, tf.int32)
        n_classes = 2
    else:
        classes = tf.argmax(draws, axis=-1, output_type=tf.int32)
        n_classes = draws.shape[-1]
    wb = tf.reshape(weights, [-1] + [1] * len(classes.shape[1:]) + [1])
    votes = tf.reduce_sum(tf.one_hot(classes, n_classes) * wb, axis=0)
    return tf.reduce_max(votes, axis=-1)


def _spec_dict(spec) -> dict:
    shape = spec.shape
    return {
        "dtype": tf.as_dtype(spec.dtype).name,
        "shape": None if shape.rank is None else [None if d is None else int(d) for d in shape.as_list()],
    }


def _warmup_batch_sizes(input_shape) -> tuple[int, ...]:
    return _WARMUP_BATCH_SIZES if input_shape[0] is None else (int(input_shape[0]),)


def _random_tensor(rng, shape, dtype, value_range) -> np.ndarray:
    dtype = tf.as_dtype(dtype)
    low, high = value_range
    if dtype.is_bool:
        return rng.random(shape) < 0.5
    if dtype.is_integer:
        return rng.integers(math.ceil(low), math.floor(high) + 1, size=shape).astype(dtype.as_numpy_dtype)
    if dtype.is_floating:
        return rng.uniform(low, high, size=shape).astype(dtype.as_numpy_dtype)
    raise TypeError(f"Cannot draw random inputs of dtype {dtype.name}; tfcv.export supports numeric inputs.")


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None


# ---------------------------------------------------------- verification


def verify(version_dir: str | os.PathLike, *, fresh_process: bool = True) -> dict:
    """Checks a bundle as TF Serving would load it, and raises on any defect.

    Loads the bundle with `tf.saved_model.load` (tag `serve`), checks that
    every expected signature exists as a `tensorflow/serving/predict` method
    with the input and output specs declared in `assets.extra/tfcv.json`,
    replays every warmup record through its signature (or, without warmup
    file, one random batch per signature) and checks that every output is
    finite and shaped as declared.

    Args:
        version_dir: `str`. A version directory (`base_path/<version>`).
        fresh_process: `bool`. Load the bundle in a fresh Python process, so
            nothing from this process (registered classes, traced functions)
            can help it load. Defaults to `True`.

    Returns:
        A `dict` report: `signatures` (names) and `replayed` (records run).

    Raises:
        BundleError: With a message naming the file, signature or warmup
            record and the problem.

    Example:

    >>> tfcv.export.verify("serving/models/digits/1")
    {'signatures': ['predict_folds', 'predict_randomized', 'serving_default'], 'replayed': 9}
    """
    version_dir = os.path.abspath(os.fspath(version_dir))
    if not fresh_process:
        return _check_bundle(version_dir)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    code = "import sys; from tfcv.export import _main; sys.exit(_main(sys.argv[1:]))"
    proc = subprocess.run(
        [sys.executable, "-c", code, "verify", "--json", version_dir],
        capture_output=True, text=True, env=env, check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if lines:
        report = json.loads(lines[-1])
        if report.get("ok"):
            return {"signatures": report["signatures"], "replayed": report["replayed"]}
        raise BundleError(report["error"])
    tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
    raise BundleError(f"Verifying {version_dir!r} crashed the verifier process (exit {proc.returncode}): {tail}")


def _check_bundle(version_dir: str, *, loaded=None) -> dict:
    metadata = _read_metadata(version_dir)
    declared = metadata.get("signatures") or {}
    expected = [SERVING_DEFAULT]
    if int(metadata.get("n_folds") or 1) > 1:
        expected.append(PREDICT_FOLDS)
    if metadata.get("randomized"):
        expected.append(PREDICT_RANDOMIZED)
    for name in expected:
        if name not in declared:
            raise BundleError(f"{version_dir}: {METADATA_FILE} does not declare the expected signature {name!r}.")

    on_disk = read_signature_defs(version_dir)
    for name in expected:
        if name not in on_disk:
            raise BundleError(
                f"{version_dir}: signature {name!r} is missing from saved_model.pb "
                f"(present: {sorted(on_disk)})."
            )
        found = on_disk[name]
        if found["method_name"] != PREDICT_METHOD:
            raise BundleError(
                f"{version_dir}: signature {name!r} has method {found['method_name']!r}, expected {PREDICT_METHOD!r}."
            )
        for kind in ("inputs", "outputs"):
            _compare_specs(version_dir, name, kind, declared[name][kind], found[kind])

    if loaded is None:
        try:
            loaded = tf.saved_model.load(version_dir, tags=["serve"])
        except Exception as error:
            raise BundleError(f"{version_dir}: tf.saved_model.load failed: {error}") from error
    for name in expected:
        if name not in loaded.signatures:
            raise BundleError(f"{version_dir}: the loaded bundle has no signature {name!r}.")

    warmup_path = os.path.join(version_dir, ASSETS_EXTRA, WARMUP_FILE)
    requests = []
    if os.path.exists(warmup_path):
        requests = _read_warmup(version_dir, warmup_path)
    elif metadata.get("warmup"):
        raise BundleError(f"{version_dir}: {METADATA_FILE} declares warmup records but {warmup_path} is missing.")
    else:
        rng = np.random.default_rng(0)
        spec = metadata["input_spec"]
        shape = [d if d is not None else 2 for d in spec["shape"]]
        for name in expected:
            requests.append((f"random batch for {name!r}", name,
                             {spec["name"]: _random_tensor(rng, shape, spec["dtype"], spec["range"])}))

    for label, name, inputs in requests:
        _replay(version_dir, loaded, declared, label, name, inputs)
    return {"signatures": sorted(expected), "replayed": len(requests)}


def _read_metadata(version_dir: str) -> dict:
    for required in ("saved_model.pb", "variables"):
        if not os.path.exists(os.path.join(version_dir, required)):
            raise BundleError(f"{version_dir} is not a SavedModel version directory: it has no {required}.")
    path = os.path.join(version_dir, ASSETS_EXTRA, METADATA_FILE)
    try:
        metadata = _atomic.read_json(path)
    except FileNotFoundError as error:
        raise BundleError(f"{version_dir}: {ASSETS_EXTRA}/{METADATA_FILE} is missing; not a tfcv bundle.") from error
    except json.JSONDecodeError as error:
        raise BundleError(f"{path} is not valid JSON: {error}") from error
    if metadata.get("format") != _FORMAT:
        raise BundleError(f"{path} is not tfcv bundle metadata (format={metadata.get('format')!r}).")
    return metadata


def read_signature_defs(version_dir: str | os.PathLike) -> dict:
    """The signatures of a SavedModel as stored in `saved_model.pb`.

    Returns:
        A `dict` mapping each signature name to `{"method_name": str,
        "inputs": {name: {"dtype", "shape"}}, "outputs": {...}}` (a shape
        is a list with `None` for unknown dimensions).
    """
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(os.fspath(version_dir), "saved_model.pb")
    proto = saved_model_pb2.SavedModel()
    try:
        with open(path, "rb") as f:
            proto.ParseFromString(f.read())
    except FileNotFoundError as error:
        raise BundleError(f"{version_dir} has no saved_model.pb.") from error
    except Exception as error:  # noqa: BLE001 - any protobuf decode error
        raise BundleError(f"{path} is not a valid SavedModel protobuf: {error}") from error
    graphs = [g for g in proto.meta_graphs if "serve" in g.meta_info_def.tags]
    if not graphs:
        raise BundleError(f"{path} has no meta graph with the tag 'serve'.")

    def tensor_info(info):
        shape = None if info.tensor_shape.unknown_rank else [
            None if d.size < 0 else int(d.size) for d in info.tensor_shape.dim]
        return {"dtype": tf.as_dtype(info.dtype).name, "shape": shape}

    return {
        name: {
            "method_name": sig.method_name,
            "inputs": {k: tensor_info(v) for k, v in sig.inputs.items()},
            "outputs": {k: tensor_info(v) for k, v in sig.outputs.items()},
        }
        for name, sig in graphs[0].signature_def.items()
        if not name.startswith("__")
    }


def _compare_specs(version_dir, signature, kind, declared: dict, found: dict) -> None:
    if set(declared) != set(found):
        raise BundleError(
            f"{version_dir}: signature {signature!r} has {kind} {sorted(found)}, expected {sorted(declared)}."
        )
    for key, spec in declared.items():
        if spec["dtype"] != found[key]["dtype"] or spec["shape"] != found[key]["shape"]:
            raise BundleError(
                f"{version_dir}: signature {signature!r} {kind[:-1]} {key!r} is {found[key]['dtype']} "
                f"{found[key]['shape']}, expected {spec['dtype']} {spec['shape']}."
            )


def _read_warmup(version_dir, path) -> list:
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    try:
        raw_records = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    except Exception as error:  # noqa: BLE001 - any TFRecord corruption
        raise BundleError(f"{path} is not a readable TFRecord file: {error}") from error
    if len(raw_records) > _MAX_WARMUP_RECORDS:
        raise BundleError(
            f"{path} holds {len(raw_records)} records; TF Serving reads at most {_MAX_WARMUP_RECORDS}."
        )
    for i, raw in enumerate(raw_records):
        label = f"warmup record {i}"
        try:
            log = prediction_log_pb2.PredictionLog.FromString(raw)
        except Exception as error:  # noqa: BLE001 - protobuf decode error
            raise BundleError(f"{version_dir}: {label} is not a PredictionLog: {error}") from error
        if log.WhichOneof("log_type") != "predict_log":
            raise BundleError(
                f"{version_dir}: {label} holds a {log.WhichOneof('log_type')!r}, expected a predict_log."
            )
        request = log.predict_log.request
        name = request.model_spec.signature_name or SERVING_DEFAULT
        inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
        requests.append((label, name, inputs))
    return requests


def _replay(version_dir, loaded, declared, label, name, inputs) -> None:
    where = f"{version_dir}: {label} (signature {name!r})"
    if name not in loaded.signatures or name not in declared:
        raise BundleError(f"{where}: the bundle has no such signature.")
    spec = declared[name]
    if set(inputs) != set(spec["inputs"]):
        raise BundleError(f"{where}: inputs {sorted(inputs)} do not match the signature's {sorted(spec['inputs'])}.")
    batch = None
    for key, value in inputs.items():
        expected = spec["inputs"][key]
        if value.dtype.name != expected["dtype"] and tf.as_dtype(value.dtype).name != expected["dtype"]:
            raise BundleError(f"{where}: input {key!r} has dtype {value.dtype}, expected {expected['dtype']}.")
        if not _shape_matches(value.shape, expected["shape"]):
            raise BundleError(f"{where}: input {key!r} has shape {list(value.shape)}, expected {expected['shape']}.")
        batch = value.shape[0] if value.ndim else None
    try:
        outputs = loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
    except Exception as error:
        raise BundleError(f"{where}: running it failed: {error}") from error
    if set(outputs) != set(spec["outputs"]):
        raise BundleError(f"{where}: returned outputs {sorted(outputs)}, declared {sorted(spec['outputs'])}.")
    for key, value in outputs.items():
        value = np.asarray(value)
        shape = spec["outputs"][key]["shape"]
        if not _shape_matches(value.shape, shape) or (batch is not None and value.ndim and value.shape[0] != batch):
            raise BundleError(
                f"{where}: output {key!r} has shape {list(value.shape)}, declared {shape} with batch {batch}."
            )
        if np.issubdtype(value.dtype, np.number) and not np.all(np.isfinite(value)):
            raise BundleError(f"{where}: output {key!r} holds non-finite values (NaN or infinity).")


def _shape_matches(shape, declared) -> bool:
    if declared is None:
        return True
    return len(shape) == len(declared) and all(d is None or d == s for s, d in zip(shape, declared))


# ------------------------------------------------------------- inspection


def describe(version_dir: str | os.PathLike) -> str:
    """A readable table of a bundle's signatures and metadata (`tfcv inspect`).

    Reads `saved_model.pb` and `assets.extra/tfcv.json` without loading the
    model.

    Args:
        version_dir: `str`. A version directory (`base_path/<version>`).

    Returns:
        The table, as a `str`.
    """
    version_dir = os.path.abspath(os.fspath(version_dir))
    metadata = _read_metadata(version_dir)
    signatures = read_signature_defs(version_dir)
    rows = [("signature", "", "name", "dtype", "shape")]
    for name in sorted(signatures, key=lambda n: (n != SERVING_DEFAULT, n)):
        first = True
        for kind in ("inputs", "outputs"):
            for key, spec in sorted(signatures[name][kind].items()):
                rows.append((name if first else "", kind[:-1], key, spec["dtype"], _shape_text(spec["shape"])))
                first = False
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    table.insert(1, "-" * len(table[0]))

    spec = metadata.get("input_spec") or {}
    info = [
        ("model", f"{metadata.get('model_name')} version {metadata.get('version')}"),
        ("task", f"{metadata.get('task')} ({metadata.get('outputs')})"),
        ("input", f"{spec.get('name')} {spec.get('dtype')} {_shape_text(spec.get('shape'))} "
                  f"range {spec.get('range')}"),
    ]
    if metadata.get("class_names"):
        info.append(("classes", ", ".join(metadata["class_names"])))
    info.append(("folds", str(metadata.get("n_folds"))))
    scores = metadata.get("scores")
    if scores:
        for metric, mean in scores["mean"].items():
            per_fold = ", ".join("nan" if v is None else f"{v:.4f}" for v in scores["per_fold"][metric])
            info.append((f"cv {metric}", f"{_fmt(mean)} ± {_fmt(scores['std'][metric])}  (folds: {per_fold})"))
        for metric, value in (scores.get("test") or {}).items():
            info.append((f"test {metric}", _fmt(value)))
    randomized = metadata.get("randomized")
    info.append(("randomized", "off" if not randomized else ", ".join(
        f"{k}={v}" for k, v in randomized.items())))
    warmup = metadata.get("warmup")
    info.append(("warmup", f"{warmup['records']} records" if warmup else "none"))
    info.append(("versions", ", ".join(f"{k} {v}" for k, v in (metadata.get("versions") or {}).items())))
    info.append(("created", str(metadata.get("created"))))
    for key, value in (metadata.get("metadata") or {}).items():
        info.append((key, json.dumps(value)))
    width = max(len(k) for k, _ in info)
    return "\n".join(
        [f"Bundle {version_dir}", "", *table, "", "Metadata"] + [f"  {k.ljust(width)}  {v}" for k, v in info]
    )


def _shape_text(shape) -> str:
    return "?" if shape is None else "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _fmt(value) -> str:
    return "nan" if value is None else f"{value:.4f}"


# ------------------------------------------------------------ model config


def write_model_config(path: str | os.PathLike, models: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> str:
    """Writes a TF Serving `model_config_list` file for several models.

    Pass the file to `tensorflow_model_server --model_config_file=PATH`.

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
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

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
        unknown = set(entry) - {"name", "base_path", "version_policy", "version_labels", "model_platform"}
        if unknown:
            raise ValueError(
                f"Invalid entry in argument `models`: unknown keys {sorted(unknown)}. Accepted keys: name, "
                "base_path, version_policy, version_labels, model_platform."
            )
        name, base = entry.get("name"), entry.get("base_path")
        if not isinstance(name, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", name):
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
            if isinstance(label_version, bool) or not isinstance(label_version, (int, np.integer)):
                raise ValueError(
                    f"Invalid version label {label!r} for model {name!r}. Received: {label_version!r}. "
                    "Expected an int version."
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
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        policy.specific.versions.extend(int(v) for v in value)
        return {int(v) for v in value}
    raise ValueError(
        f"Invalid version_policy for model {name!r}. Received: version_policy={value!r}. Expected 'latest', "
        "'all', {'latest': n} or a non-empty list of versions."
    )


# -------------------------------------------------------------------- main


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tfcv.export", description="Check or describe a tfcv bundle.")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("verify", help="load a bundle, check its signatures and replay its warmup records")
    check.add_argument("version_dir")
    check.add_argument("--json", action="store_true", help="print one JSON line")
    show = sub.add_parser("describe", help="print a bundle's signatures and metadata")
    show.add_argument("version_dir")
    args = parser.parse_args(argv)
    if args.command == "describe":
        print(describe(args.version_dir))
        return 0
    try:
        report = _check_bundle(os.path.abspath(args.version_dir))
    except BundleError as error:
        print(json.dumps({"ok": False, "error": str(error)}) if args.json else f"error: {error}")
        return 1
    if args.json:
        print(json.dumps({"ok": True, **report}))
    else:
        print(f"OK: {args.version_dir}: signatures {', '.join(report['signatures'])}; "
              f"{report['replayed']} records replayed.")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
