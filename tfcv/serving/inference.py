"""Classify, regress and multi-inference on `tf.Example`s, as TF Serving runs them.

A classify or regress signature takes one input, `inputs`: a vector of
serialized `tf.Example`s, which the graph parses itself. A request carries
the examples as an `Input` proto (gRPC: `example_list`, or
`example_list_with_context` whose context features every example
inherits) or as JSON objects (REST: `examples`, with an optional
`context`); both become that vector. The answer follows TF Serving's
`classifier.cc` and `regressor.cc`: a classify signature has a `classes`
(`DT_STRING`) and/or a `scores` (`DT_FLOAT`) output of shape
`[batch_size, num_classes]`, a regress signature one `outputs` of shape
`[batch_size]` or `[batch_size, 1]`, and their errors are worded as there.
As in TF Serving (`--enable_signature_method_name_check` off), a
signature's method name is not checked, only its inputs and outputs.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    input_pb2,
    regression_pb2,
)

from tfcv.serving.errors import InvalidArgument, ServingError, Unimplemented
from tfcv.serving.servable import Servable, Signature, tensor_protos_to_arrays

__all__ = [
    "CLASSIFY_METHOD",
    "REGRESS_METHOD",
    "classify",
    "examples_from_input",
    "examples_from_json",
    "multi_inference",
    "regress",
    "replay_warmup_log",
]

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
_INPUTS, _CLASSES, _SCORES, _OUTPUTS = "inputs", "classes", "scores", "outputs"


# ---------------------------------------------------------------- inputs


def examples_from_input(proto: input_pb2.Input) -> np.ndarray:
    """The serialized examples of an `Input` proto, as a string vector.

    With `example_list_with_context`, each example is serialized after its
    context, so that parsing merges them and a feature of the example wins
    over the context's feature of the same name, as in TF Serving.

    Raises:
        InvalidArgument: for an empty `Input` or one without examples.
    """
    kind = proto.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in proto.example_list.examples]
    elif kind == "example_list_with_context":
        context = proto.example_list_with_context.context.SerializeToString()
        examples = [context + e.SerializeToString() for e in proto.example_list_with_context.examples]
    else:
        raise InvalidArgument("Input is empty.")
    if not examples:
        raise InvalidArgument("Input is empty.")
    return _string_vector(examples)


def examples_from_json(document: Mapping) -> input_pb2.Input:
    """The `Input` proto of a REST `:classify` or `:regress` body.

    `examples` is a list of objects, one per example, whose keys are
    feature names; `context`, an optional object of features every example
    shares. A feature is a value or a list of values: strings and
    `{"b64": ...}` become a `bytes_list`, integers an `int64_list`, other
    numbers a `float_list`.

    Raises:
        InvalidArgument: naming the example and feature that is malformed.
    """
    if "examples" not in document:
        raise InvalidArgument("'examples' is a required field in the request body.")
    examples = document["examples"]
    if not isinstance(examples, list):
        raise InvalidArgument(f"'examples' must be an array, received {type(examples).__name__}.")
    if not examples:
        raise InvalidArgument("'examples' is empty: send at least one example.")
    proto = input_pb2.Input()
    if "context" in document:
        target = proto.example_list_with_context
        _fill_example(target.context, document["context"], "'context'")
    else:
        target = proto.example_list
    for i, example in enumerate(examples):
        _fill_example(target.examples.add(), example, f"Item {i} of 'examples'")
    return proto


def _fill_example(example: example_pb2.Example, value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise InvalidArgument(f"{where} must be an object of features, received {type(value).__name__}.")
    for name, feature in value.items():
        _fill_feature(example.features.feature[name], feature, f"Feature '{name}' of {where.lower()}")


def _fill_feature(feature: feature_pb2.Feature, value: Any, where: str) -> None:
    values = value if isinstance(value, list) else [value]
    kinds = {_feature_kind(v, where) for v in values}
    if len(kinds) > 1:
        if kinds == {"int64", "float"}:
            kinds = {"float"}
        else:
            raise InvalidArgument(f"{where} mixes values of types {sorted(kinds)}; a feature has one type.")
    kind = kinds.pop() if kinds else "float"
    if kind == "bytes":
        feature.bytes_list.value.extend(_feature_bytes(v, where) for v in values)
    elif kind == "int64":
        if any(not -(2**63) <= v < 2**63 for v in values):
            raise InvalidArgument(f"{where} has integers out of the int64 range.")
        feature.int64_list.value.extend(values)
    else:
        feature.float_list.value.extend(float(v) for v in values)


def _feature_kind(value: Any, where: str) -> str:
    if isinstance(value, bool):
        raise InvalidArgument(f"{where} holds a boolean; features hold strings, integers or numbers.")
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str) or (isinstance(value, dict) and set(value) == {"b64"}):
        return "bytes"
    raise InvalidArgument(f"{where} holds {type(value).__name__} values; expected strings, integers or numbers.")


def _feature_bytes(value: Any, where: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidArgument(f"{where} has a 'b64' value that is not valid base64.") from None


def _string_vector(items: Sequence[bytes]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = list(items)
    return array


# ---------------------------------------------------------------- running


def _check_classify(signature: Signature) -> list[str]:
    if len(signature.inputs) != 1:
        raise InvalidArgument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise InvalidArgument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if _INPUTS not in signature.inputs:
        raise InvalidArgument(f"No classification inputs found in SignatureDef: {signature.name}")
    outputs = [k for k in (_CLASSES, _SCORES) if k in signature.outputs]
    if not outputs:
        raise InvalidArgument(
            'Expected classification signature outputs to contain at least one of "classes" or "scores". '
            f"Signature was: {signature.name}"
        )
    return outputs


def _check_regress(signature: Signature) -> None:
    if len(signature.inputs) != 1:
        raise InvalidArgument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise InvalidArgument("Expected one output Tensor.")
    if _INPUTS not in signature.inputs:
        raise InvalidArgument(f"No regression inputs found in SignatureDef: {signature.name}")
    if _OUTPUTS not in signature.outputs:
        raise InvalidArgument(f"No regression outputs found in SignatureDef: {signature.name}")


def _signature(servable: Servable, signature_name: str) -> Signature:
    key = signature_name or "serving_default"
    if key not in servable.signatures:
        raise InvalidArgument(f"No signature was found with the name: {key}")
    return servable.signatures[key]


def _run(signature: Signature, examples: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
    return signature.predict({_INPUTS: examples}, output_filter=outputs, strict=False)


def classify(servable: Servable, signature_name: str, examples: np.ndarray) -> classification_pb2.ClassificationResult:
    """Runs a classify signature on serialized examples.

    Args:
        servable: The `Servable` to run.
        signature_name: `str`. The signature, `""` for `serving_default`.
        examples: String vector of serialized `tf.Example`s.

    Returns:
        A `ClassificationResult`: per example, one `Class` (label, score)
        per column of `classes`/`scores`.

    Raises:
        InvalidArgument: worded as TF Serving's classifier.
    """
    signature = _signature(servable, signature_name)
    wanted = _check_classify(signature)
    outputs = _run(signature, examples, wanted)
    n = len(examples)
    classes, scores = outputs.get(_CLASSES), outputs.get(_SCORES)
    for name, value, dtype in ((_CLASSES, classes, "DT_STRING"), (_SCORES, scores, "DT_FLOAT")):
        if value is None:
            continue
        if value.ndim != 2:
            raise InvalidArgument(f"Expected Tensor shape: [batch_size num_classes] but got {list(value.shape)}")
        kind_ok = value.dtype.kind in "OS" if name == _CLASSES else value.dtype == np.float32
        if not kind_ok:
            raise InvalidArgument(f"Expected {name} Tensor of {dtype}. Got: {value.dtype}")
        if value.shape[0] != n:
            raise InvalidArgument(f"Expected {name} output batch size of {n}. Got: {value.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise InvalidArgument(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    num_classes = (classes if classes is not None else scores).shape[1]
    result = classification_pb2.ClassificationResult()
    for i in range(n):
        row = result.classifications.add()
        for c in range(num_classes):
            entry = row.classes.add()
            if classes is not None:
                label = classes[i, c]
                entry.label = label.decode("utf-8", errors="replace") if isinstance(label, bytes) else str(label)
            if scores is not None:
                entry.score = float(scores[i, c])
    return result


def regress(servable: Servable, signature_name: str, examples: np.ndarray) -> regression_pb2.RegressionResult:
    """Runs a regress signature on serialized examples.

    Returns:
        A `RegressionResult`: one value per example.

    Raises:
        InvalidArgument: worded as TF Serving's regressor.
    """
    signature = _signature(servable, signature_name)
    _check_regress(signature)
    value = _run(signature, examples, [_OUTPUTS])[_OUTPUTS]
    n = len(examples)
    if not (value.ndim == 1 or (value.ndim == 2 and value.shape[1] == 1)):
        raise InvalidArgument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {list(value.shape)}"
        )
    if value.shape[0] != n:
        raise InvalidArgument(f"Input batch size did not match output batch size: {n} vs. {value.shape[0]}")
    if value.dtype != np.float32:
        raise InvalidArgument(f"Expected output Tensor of DT_FLOAT.  Got: {value.dtype}")
    result = regression_pb2.RegressionResult()
    for v in value.reshape(-1).tolist():
        result.regressions.add(value=v)
    return result


def multi_inference(servable: Servable, request: inference_pb2.MultiInferenceRequest,
                    examples: np.ndarray) -> inference_pb2.MultiInferenceResponse:
    """Runs every task of a `MultiInferenceRequest` on the same examples.

    The tasks must name one model (the one `servable` is a version of),
    each signature once, and a classify or regress method.

    Raises:
        InvalidArgument: for tasks of several models, a repeated or unknown
            signature; `Unimplemented` for another method, as TF Serving.
    """
    seen = set()
    for task in request.tasks:
        key = task.model_spec.signature_name or "serving_default"
        if key in seen:
            raise InvalidArgument(f"Duplicate evaluation of signature: {key}")
        seen.add(key)
        if key not in servable.signatures:
            raise InvalidArgument(f"Requested signature not found in model graph: {key}")
        if task.method_name == CLASSIFY_METHOD:
            _check_classify(servable.signatures[key])
        elif task.method_name == REGRESS_METHOD:
            _check_regress(servable.signatures[key])
        else:
            raise Unimplemented(f"Unsupported signature method_name: {task.method_name}")
    response = inference_pb2.MultiInferenceResponse()
    for task in request.tasks:
        result = response.results.add()
        if task.method_name == CLASSIFY_METHOD:
            result.classification_result.CopyFrom(classify(servable, task.model_spec.signature_name, examples))
        else:
            result.regression_result.CopyFrom(regress(servable, task.model_spec.signature_name, examples))
        set_model_spec(result.model_spec, servable, task.model_spec.signature_name)
    return response


def check_multi_inference_model(request: inference_pb2.MultiInferenceRequest) -> str:
    """The one model name the tasks of a `MultiInferenceRequest` share.

    Raises:
        InvalidArgument: worded as TF Serving's multi-inference.
    """
    if not request.tasks:
        raise InvalidArgument("MultiInferenceRequest must contain at least one task.")
    names = set()
    for task in request.tasks:
        if not task.model_spec.name:
            raise InvalidArgument("Found ModelSpec with an empty model name.")
        names.add(task.model_spec.name)
    if len(names) > 1:
        raise InvalidArgument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
    return names.pop()


def set_model_spec(spec, servable: Servable, signature_name: str) -> None:
    """Fills a response's `ModelSpec` as TF Serving's `MakeModelSpec`."""
    spec.name = servable.name
    spec.version.value = servable.version
    spec.signature_name = signature_name or "serving_default"


# ------------------------------------------------------------------ JSON


def classification_json(result: classification_pb2.ClassificationResult) -> dict:
    """`{"results": [[[label, score], ...], ...]}`, as TF Serving's REST `:classify`."""
    return {"results": [[[c.label, _json_float(c.score)] for c in row.classes] for row in result.classifications]}


def regression_json(result: regression_pb2.RegressionResult) -> dict:
    """`{"results": [value, ...]}`, as TF Serving's REST `:regress`."""
    return {"results": [_json_float(r.value) for r in result.regressions]}


def _json_float(value: float) -> float:
    # The shortest repr that round-trips the float32 (3.5, not 3.5000000001).
    if not math.isfinite(value):
        return value
    return float(str(np.float32(value)))


def replay_warmup_log(servable: Servable, log) -> None:
    """Replays one warmup `PredictionLog` of any kind on `servable`.

    Raises:
        ServingError: if the request fails.
    """
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        request = log.predict_log.request
        signature = servable.signature(request.model_spec.signature_name)
        inputs = tensor_protos_to_arrays(request.inputs, signature, strict=False)
        signature.predict(inputs, output_filter=request.output_filter, strict=False)
    elif kind == "classify_log":
        request = log.classify_log.request
        classify(servable, request.model_spec.signature_name, examples_from_input(request.input))
    elif kind == "regress_log":
        request = log.regress_log.request
        regress(servable, request.model_spec.signature_name, examples_from_input(request.input))
    elif kind == "multi_inference_log":
        request = log.multi_inference_log.request
        multi_inference(servable, request, examples_from_input(request.input))
    else:
        raise ServingError(f"Warmup records of kind {kind!r} cannot be replayed.")
