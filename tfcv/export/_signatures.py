"""The signature graphs of a bundle and what is written beside them.

`_ExportPlan` checks the models of one export, builds `serving_default`,
`predict_folds` and `predict_randomized` as `keras.export.ExportArchive`
endpoints, compares the written bundle with the in-memory models, and
draws the warmup requests and the `tfcv.json` metadata.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfcv import __version__, _atomic, _calibration, _compat, bundle
from tfcv.bundle import SERVING_DEFAULT, BundleError
from tfcv.export._calibrated import (
    PREDICT_INTERVAL,
    PREDICT_SET,
    Calibrated,
    prediction_interval,
    prediction_set,
    temper,
)
from tfcv.export._randomized import (
    Randomized,
    agreement,
    entropy,
    has_random_layers,
    split_at_randomness,
    tile,
)
from tfcv.export._sources import CVResult
from tfcv.export._strings import sentences
from tfcv.layers import randomized_inference

PREDICT_FOLDS = "predict_folds"
PREDICT_RANDOMIZED = "predict_randomized"

# Max abs difference allowed between the exported serving_default and the
# in-memory model before anything is published.
_TOLERANCE = 1e-5
_WARMUP_BATCH_SIZES = (1, 2, 5)
_AUTO_INPUT_NAME = re.compile(r"^(input|input_layer|keras_tensor)(_\d+)?$")
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_STATE_NAME = "seed_generator_state"
_KNOWN_METADATA = ("class_names", "task", "input_range", "model")


def check_metadata(metadata) -> dict:
    """The `metadata` argument of `export_saved_model`, checked, as a new `dict`."""
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



class _ExportPlan:
    """What gets exported: the models, their specs and the signature graphs."""

    def __init__(self, models: list[keras.Model], result: CVResult | None, randomized: Randomized | None,
                 metadata: dict, warmup):
        self.models, self.result = models, result
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
        if randomized is not None and self.n_folds == 1 and not has_random_layers(first, randomized):
            warnings.warn(
                f"predict_randomized will be deterministic (std 0): model {first.name!r} has no layer that "
                f"{randomized!r} randomizes (tfcv.layers.Augmentation with augmentation=True, dropout "
                "layers with mc_dropout=True). Pass randomized=None to leave the signature out.",
                UserWarning,
                stacklevel=3,
            )
        self.splits = [None if randomized is None else split_at_randomness(m, randomized) for m in self.models]
        # `tfcv.export._image_bytes.ImageBytes` when the bundle also takes
        # encoded images (`export_saved_model(image_bytes=True)`).
        self.image_bytes = None
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
        # Temperatures and conformal state, fitted on the folds by
        # `tfcv.export._calibrated.fit`; the default changes nothing.
        self.calibrated = Calibrated()

    # ------------------------------------------------------------ specs

    def _input_range(self, warmup):
        self.text_samples = None
        if self.input_dtype == tf.string:
            # Sentences carry no value range; warmup text comes from the
            # given samples or the models' adapted vocabulary.
            self.sample_shape = self.input_shape[1:]
            if warmup is not True and warmup is not False and warmup is not None:
                self.text_samples = np.asarray(warmup, dtype=object)
            return None
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
        if self.input_dtype == tf.string:
            return sentences(self.models[0], self.rng, (batch_size, *self.sample_shape), self.text_samples)
        return random_tensor(self.rng, (batch_size, *self.sample_shape), self.input_dtype, self.input_range)

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
        if names is None and self.result is not None:
            names = self.result.info.get("class_names")
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
        converted = self._convert(model(x, training=False), model)
        if self.task != "classification":
            return converted
        t = self.calibrated.temperature(SERVING_DEFAULT)
        return {name: temper(value, t) for name, value in converted.items()}

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
        config = self.randomized
        counts = self.samples_per_fold()
        batch = tf.shape(x)[0]
        draws: dict[str, list] = {name: [] for name in self.output_names}
        weights = []
        t = self.calibrated.temperature(PREDICT_RANDOMIZED) if self.task == "classification" else 1.0
        with randomized_inference(augmentation=bool(config.augmentation), dropout=bool(config.mc_dropout)):
            for model, split, count in zip(self.models, self.splits, counts):
                # One call on the batch tiled `count` times: the randomized
                # passes run as one vectorized graph, not a loop. Layers
                # before the first randomized one run once, on the batch.
                if split is None:
                    raw = model(tile(x, count), training=False)
                else:
                    prefix, suffix = split
                    shared = prefix(x, training=False)
                    raw = suffix(tf.nest.map_structure(lambda t, n=count: tile(t, n), shared), training=False)
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
            # The temperature calibrates the mean, not each draw (see
            # _calibration.fit_temperature); std, agreement and mutual
            # information describe the draws as they are.
            stats = {"mean": temper(mean, t), "std": std}
            if self.task == "classification":
                stats["predictive_entropy"] = entropy(stats["mean"])
                stats["agreement"] = agreement(y, w)
                # The epistemic part of the entropy: what the draws disagree on.
                stats["mutual_information"] = tf.maximum(
                    entropy(mean) - tf.reduce_sum(wb[..., 0] * entropy(y), axis=0), 0.0)
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
        if self.calibrated.conformal is not None:
            if self.task == "classification":
                functions[PREDICT_SET] = self.predict_set
            else:
                functions[PREDICT_INTERVAL] = self.predict_interval
        return functions

    def predict_set(self, x):
        if self.calibrated.conformal.on == "randomized":
            p = self.predict_randomized(x)["mean"]
        else:
            p = self.serve(x)[self.output_names[0]]
        return prediction_set(p, self.calibrated.threshold, self.calibrated.conformal)

    def predict_interval(self, x):
        name = self.output_names[0]
        return prediction_interval([self._outputs(model, x)[name] for model in self.models], self.calibrated)

    def endpoints(self) -> dict:
        """Signature name -> (function, input spec): the float signatures,
        then their encoded-image twins when asked for."""
        spec = tf.TensorSpec(self.input_shape, self.input_dtype, name=self.input_name)
        endpoints = {name: (fn, spec) for name, fn in self.signature_functions().items()}
        if self.image_bytes is not None:
            endpoints.update(self.image_bytes.endpoints(endpoints))
        return endpoints

    def write_saved_model(self, directory: str) -> dict:
        archive = keras.export.ExportArchive()
        for model in self.models:
            archive.track(model)
        signatures = {}
        for name, (fn, spec) in self.endpoints().items():
            endpoint = archive.add_endpoint(name, _single_argument(fn), input_signature=[spec])
            concrete = endpoint.get_concrete_function()
            signatures[name] = {
                "inputs": {spec.name: _spec_dict(spec)},
                "outputs": {k: _spec_dict(v) for k, v in concrete.structured_outputs.items()},
            }
        states = self._seed_states()
        if states:
            archive.add_variable_collection("randomized_state", states)
        with self._seeded(states):
            archive.write_out(directory, verbose=False)
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
                if self.task == "classification":
                    value = _calibration.temper(value, self.calibrated.temperature(SERVING_DEFAULT))
                values.append(value)
            expected = np.mean(values, axis=0)
            diff = float(np.max(np.abs(np.asarray(got[name]) - expected)))
            if not diff <= _TOLERANCE:
                raise BundleError(
                    f"The exported serving_default output {name!r} differs from the in-memory model by "
                    f"{diff:.3g} (max abs difference; accepted <= {_TOLERANCE}). Nothing was published. "
                    "Does a layer behave differently inside tf.function than eagerly?"
                )

    def warmup_requests(self, *, model_name: str) -> list:
        """Random requests for every signature, at batch sizes 1, 2 and 5
        (or the model's fixed batch size); none with `warmup=False`."""
        if not self.warmup:
            return []
        return [
            bundle.warmup_request(model_name, signature, {spec.name: (
                self.random_inputs(batch_size) if spec.name == self.input_name
                else self.image_bytes.random_inputs(batch_size))})
            for signature, (_, spec) in self.endpoints().items()
            for batch_size in _warmup_batch_sizes(self.input_shape)
        ]

    def metadata(self, signatures, *, version, model_name, warmup_records) -> dict:
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
            # Which model of a CVResult is served: the fold ensemble or the refit model.
            "model": self.user_metadata.get("model"),
            "scores": scores,
            "randomized": randomized,
            "signatures": signatures,
            "warmup": {"file": bundle.WARMUP_FILE, "records": warmup_records} if warmup_records else None,
            "versions": {"tfcv": __version__, "tensorflow": tf.__version__, "keras": keras.__version__},
            "metadata": extra,
            **{key: self.calibrated.metadata.get(key) for key in ("calibration", "conformal")},
        }


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
    layer = _output_layer(model)
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


def _output_layer(model):
    """The layer whose call produced `model.outputs[0]`, or `None`."""
    target = model.outputs[0]
    for layer in model.layers:
        try:
            produced = keras.tree.flatten(layer.output)
        except (AttributeError, ValueError, RuntimeError):
            continue  # never called in a graph: it produced nothing here
        if any(t is target for t in produced):
            return layer
    # `layer.output` is a layer's first call only; a layer called more
    # than once (shared) is found among the graph's nodes.
    found = _compat.nodes_by_depth(model)
    for nodes in (found[1].values() if found else ()):
        for node in nodes:
            if any(t is target for t in node.output_tensors):
                return node.operation
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




def _spec_dict(spec) -> dict:
    shape = spec.shape
    return {
        "dtype": tf.as_dtype(spec.dtype).name,
        "shape": None if shape.rank is None else [None if d is None else int(d) for d in shape.as_list()],
    }


def _warmup_batch_sizes(input_shape) -> tuple[int, ...]:
    return _WARMUP_BATCH_SIZES if input_shape[0] is None else (int(input_shape[0]),)


def random_tensor(rng, shape, dtype, value_range) -> np.ndarray:
    """Random inputs of `dtype` in `value_range`, for warmup records and checks."""
    dtype = tf.as_dtype(dtype)
    low, high = value_range
    if dtype.is_bool:
        return rng.random(shape) < 0.5
    if dtype.is_integer:
        return rng.integers(math.ceil(low), math.floor(high) + 1, size=shape).astype(dtype.as_numpy_dtype)
    if dtype.is_floating:
        return rng.uniform(low, high, size=shape).astype(dtype.as_numpy_dtype)
    if dtype == tf.string:
        # Checks without warmup records: empty text is valid for any model
        # that takes strings.
        return np.full(shape, b"", dtype=object)
    raise TypeError(f"Cannot draw random inputs of dtype {dtype.name}; tfcv.export supports numeric inputs.")


def _finite_or_none(value):
    value = float(value)
    return value if math.isfinite(value) else None

