"""TF Serving's REST API, on Starlette (served by uvicorn).

Endpoints, request and response shapes follow TF Serving's `api_rest.md`
and `json_tensor.cc`:

- `GET /v1/models/{name}[/versions/{v}|/labels/{label}]`: version status.
- `GET /v1/models/{name}[/versions/{v}|/labels/{label}]/metadata`: the
  signature defs.
- `POST /v1/models/{name}[/versions/{v}|/labels/{label}]:predict` with
  `instances` (row format, answered with `predictions`) or `inputs`
  (columnar format, answered with `outputs`), and `signature_name`.
- `POST ...:classify` and `...:regress` with `examples` (and `context`),
  answered with `results`.
- `GET /monitoring/prometheus/metrics` (the path of `--monitoring_config_file`)
  when metrics are enabled.

Errors are `{"error": "..."}` with 400 (malformed URL or body, bad input,
unknown signature or version label), 403 (a Host header that is not this
server: DNS rebinding), 404 (unknown model or version), 413 (body above the
limit) or 504 (`--rest_api_timeout_in_ms`), as TF Serving answers them.
JSON is parsed with Python's `json`, which accepts `NaN`, `Infinity` and
`-Infinity` as TF Serving does; `strict=True` refuses them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from tfcv.serving import inference
from tfcv.serving.errors import (
    DeadlineExceeded,
    InvalidArgument,
    PayloadTooLarge,
    ServingError,
)
from tfcv.serving.metrics import Metrics
from tfcv.serving.registry import ModelRegistry, parse_version
from tfcv.serving.servable import Servable, Signature, TensorInfo

__all__ = [
    "classify_json",
    "create_app",
    "decode_predict_request",
    "encode_predict_response",
    "parse_json",
    "predict_json",
    "regress_json",
]

logger = logging.getLogger("tfcv.serving")

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
# Predict requests up to this size are parsed on the event loop, and answers
# up to this many values encoded there; larger ones go to a worker thread so
# that one big request does not hold up the others.
_LOOP_BODY_BYTES = 64 * 1024
_LOOP_OUTPUT_VALUES = 4096
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?/?$"
)
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
_JSON_KINDS = {"b": "booleans", "i": "integers", "u": "integers", "f": "decimal numbers",
               "U": "strings", "S": "strings", "O": "nulls, objects or out-of-range numbers"}
_PROTO_JSON = {"preserving_proto_field_name": True, "always_print_fields_with_no_presence": True}


def create_app(registry: ModelRegistry, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, strict: bool = False,
               allowed_hosts: Iterable[str] = LOOPBACK_NAMES, cors_allow_origins: Sequence[str] = (),
               metrics: Metrics | None = None, timeout_ms: int = 0):
    """The ASGI application of the REST API.

    Args:
        registry: The `ModelRegistry` holding the served models.
        max_body_bytes: `int`. Largest accepted request body; larger ones are
            refused with 413. Defaults to 16 MiB.
        strict: `bool`. Refuse `NaN` and `Infinity` in requests with 400.
            Defaults to `False`, as TF Serving.
        allowed_hosts: Host names (without port) accepted in the `Host`
            header; `"*"` accepts any. Defaults to the loopback names.
        cors_allow_origins: Origins that get CORS headers. Defaults to none:
            no CORS headers are sent.
        metrics: A `Metrics` that counts requests and is exported at its
            `path`, or `None` for no metrics. Defaults to `None`.
        timeout_ms: `int`. Answer 504 to a request that takes longer; `0`
            waits as long as it takes. Defaults to `0`.

    Returns:
        An ASGI application (Starlette's, with a direct route for
        `:predict`), to run with uvicorn.

    Example:

    >>> app = create_app(registry)
    >>> uvicorn.run(app, host="127.0.0.1", port=8501)
    """
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ValueError(
            f"Invalid value for argument `max_body_bytes`. Received: max_body_bytes={max_body_bytes!r}. "
            "Expected an int >= 1."
        )
    handler = _Handler(registry, max_body_bytes=max_body_bytes, strict=bool(strict), metrics=metrics,
                       timeout_ms=int(timeout_ms))
    middleware = [Middleware(_HostCheck, allowed_hosts=[h.lower() for h in allowed_hosts])]
    if cors_allow_origins:
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=list(cors_allow_origins), allow_methods=["GET", "POST"],
            allow_headers=["Content-Type"],
        ))

    async def endpoint(request: Request) -> Response:
        return await handler(request)

    app = Starlette(routes=[Route("/{path:path}", endpoint, methods=_METHODS)], middleware=middleware)
    if cors_allow_origins:
        return app
    return _DirectPredict(app, handler, allowed_hosts=[h.lower() for h in allowed_hosts])


class _DirectPredict:
    """Answers `POST ...:predict` without Starlette, everything else with it.

    Starlette's middleware stack, router and `Request` cost about a fifth of
    the event loop's busy time on a one-row predict; the direct route makes
    the same Host check and the same answer (`_Handler.answer_verb`). With
    CORS origins configured every request goes through Starlette.
    """

    def __init__(self, app, handler: _Handler, allowed_hosts: Sequence[str]):
        self.app = app
        self.handler = handler
        self.allowed_hosts = set(allowed_hosts)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            match = _PATH.match(scope["path"])
            if match is not None and match["verb"] == "predict":
                response = _host_refusal(scope, self.allowed_hosts)
                if response is None:
                    response = await self.handler.answer_direct(match, scope, receive)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _Handler:
    def __init__(self, registry: ModelRegistry, *, max_body_bytes: int, strict: bool,
                 metrics: Metrics | None = None, timeout_ms: int = 0):
        self.registry = registry
        self.max_body_bytes = max_body_bytes
        self.strict = strict
        self.metrics = metrics
        self.timeout = timeout_ms / 1000 if timeout_ms > 0 else None

    async def __call__(self, request: Request) -> Response:
        return await self._guarded(self._dispatch(request), request.method, request.url.path)

    async def answer_direct(self, match: re.Match, scope, receive) -> Response:
        """The answer to a `POST ...:predict` read from the raw ASGI `scope` and `receive`."""
        length = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"content-length"), None)

        async def answer() -> Response:
            body = await self._read_body(length, _receive_body(receive))
            return await self.answer_verb(match, body)

        return await self._guarded(answer(), "POST", scope["path"])

    async def _guarded(self, answer, method: str, path: str) -> Response:
        try:
            return await answer
        except ServingError as error:
            return _error(error.http_status, error.message)
        except Exception as error:  # noqa: BLE001 - a server bug still answers JSON
            logger.exception("Unexpected error answering %s %s", method, path)
            return _error(500, f"Internal error: {type(error).__name__}: {error}")

    async def _dispatch(self, request: Request) -> Response:
        path = request.url.path
        if self.metrics is not None and path.rstrip("/") == self.metrics.path.rstrip("/"):
            _require_method(request, "GET")
            return Response(self.metrics.render(self.registry), media_type="text/plain; version=0.0.4")
        match = _PATH.match(path)
        verb = match["verb"] if match is not None else None
        if match is None or (verb is not None and verb not in _VERBS):
            raise InvalidArgument(f"Malformed request: {request.method} {path}")
        name, label = match["name"], match["label"]
        version = parse_version(match["version"]) if match["version"] is not None else None
        if verb is not None:
            _require_method(request, "POST")
            body = await self._read_body(request.headers.get("content-length"), request.stream())
            return await self.answer_verb(match, body)
        _require_method(request, "GET")
        if match["metadata"]:
            servable = self.registry.get(name, version, label)
            return _json_response(metadata_json(servable))
        status = self.registry.status(name, version, label)
        return _json_response(json_format.MessageToDict(status, **_PROTO_JSON))

    async def answer_verb(self, match: re.Match, body: bytes) -> Response:
        """The answer to a POST of `body` to the `_PATH` match of a `:verb` URL."""
        verb, name, label = match["verb"], match["name"], match["label"]
        version = parse_version(match["version"]) if match["version"] is not None else None
        started = time.perf_counter()
        status = "OK"
        try:
            if verb == "predict" and len(body) <= _LOOP_BODY_BYTES:
                call = self._predict_on_loop(body, name=name, version=version, label=label)
            else:
                call = run_in_threadpool(
                    _VERBS[verb], self.registry, body, name=name, version=version, label=label, strict=self.strict
                )
            try:
                result = await asyncio.wait_for(call, self.timeout) if self.timeout else await call
            except asyncio.TimeoutError:
                raise DeadlineExceeded(
                    f"Request timed out after {self.timeout * 1000:.0f} ms (--rest_api_timeout_in_ms)."
                ) from None
        except ServingError as error:
            status = error.grpc_code
            raise
        finally:
            if self.metrics is not None:
                self.metrics.record_request(name, _API_NAMES[verb], "REST", status, time.perf_counter() - started)
        return Response(result, media_type="application/json")

    async def _predict_on_loop(self, body: bytes, *, name: str, version: int | None, label: str | None) -> bytes:
        # A small request is decoded on the event loop and awaits its batch
        # there: handing it to a worker thread and back costs more than the
        # parsing, and both hops wait for the GIL.
        signature, inputs, row_format = _decode_predict(self.registry, body, name=name, version=version,
                                                        label=label, strict=self.strict)
        future = signature.try_predict_batched(inputs, allow_nonfinite=not self.strict, strict=self.strict)
        if future is None:
            outputs = await run_in_threadpool(
                signature.predict, inputs, allow_nonfinite=not self.strict, strict=self.strict
            )
        else:
            outputs = await asyncio.wrap_future(future)
        if sum(np.size(value) for value in outputs.values()) > _LOOP_OUTPUT_VALUES:
            return await run_in_threadpool(_encode_predict, outputs, row_format)
        return _encode_predict(outputs, row_format)

    async def _read_body(self, length: str | None, stream: AsyncIterator[bytes]) -> bytes:
        limit = self.max_body_bytes
        too_large = f"Request body exceeds the limit of {limit} bytes (--max_body_bytes)."
        if length is not None and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(too_large)
        chunks, total = [], 0
        async for chunk in stream:
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(too_large)
            chunks.append(chunk)
        return b"".join(chunks)


async def _receive_body(receive) -> AsyncIterator[bytes]:
    """The body chunks of an ASGI HTTP request, as Starlette's `Request.stream`."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


class _HostCheck:
    """Refuses requests whose Host header is not this server (DNS rebinding)."""

    def __init__(self, app, allowed_hosts: Sequence[str]):
        self.app = app
        self.allowed_hosts = set(allowed_hosts)

    async def __call__(self, scope, receive, send):
        response = _host_refusal(scope, self.allowed_hosts) if scope["type"] == "http" else None
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _host_refusal(scope, allowed_hosts: set[str]) -> Response | None:
    """The 403 answer to an HTTP `scope` whose Host is not allowed, else `None`."""
    if "*" in allowed_hosts:
        return None
    headers = dict(scope["headers"])
    host = _host_name(headers.get(b"host", b"").decode("latin-1"))
    if host in allowed_hosts:
        return None
    shown = host or "(none)"
    return _error(
        403, f"Host header {shown!r} is not accepted by this server; accepted hosts: "
        f"{sorted(allowed_hosts)} (see --allowed_hosts).",
    )


def _host_name(header: str) -> str:
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _require_method(request: Request, method: str) -> None:
    # TF Serving answers a wrong method as any other URL it does not know.
    if request.method != method:
        raise InvalidArgument(f"Malformed request: {request.method} {request.url.path}")


def _error(status: int, message: str) -> Response:
    return _json_response({"error": message}, status)


def _json_response(document: Any, status: int = 200) -> Response:
    return Response(_dumps(document), status_code=status, media_type="application/json")


def _dumps(document: Any) -> bytes:
    # allow_nan: NaN and Infinity are written as TF Serving writes them.
    return json.dumps(document, allow_nan=True, separators=(",", ":")).encode("utf-8")


# --------------------------------------------------------------------- predict


def predict_json(registry: ModelRegistry, body: bytes, *, name: str, version: int | None = None,
                 label: str | None = None, strict: bool = False) -> bytes:
    """Answers a REST `:predict` body with the JSON TF Serving would send.

    Raises:
        ServingError: with the status to answer.
    """
    signature, inputs, row_format = _decode_predict(registry, body, name=name, version=version, label=label,
                                                    strict=strict)
    outputs = signature.predict(inputs, allow_nonfinite=not strict, strict=strict)
    return _encode_predict(outputs, row_format)


def _decode_predict(registry: ModelRegistry, body: bytes, *, name: str, version: int | None, label: str | None,
                    strict: bool) -> tuple[Signature, dict[str, np.ndarray], bool]:
    servable = registry.get(name, version, label)
    document = parse_json(body, strict=strict)
    signature = servable.signature(_signature_name(document))
    inputs, row_format = decode_predict_request(document, signature)
    return signature, inputs, row_format


def _encode_predict(outputs: Mapping[str, np.ndarray], row_format: bool) -> bytes:
    return _dumps(encode_predict_response(outputs, row_format=row_format))


def classify_json(registry: ModelRegistry, body: bytes, *, name: str, version: int | None = None,
                  label: str | None = None, strict: bool = False) -> bytes:
    """Answers a REST `:classify` body: `{"results": [[[label, score], ...], ...]}`."""
    return _examples_json(inference.classify, inference.classification_json, registry, body,
                          name=name, version=version, label=label, strict=strict)


def regress_json(registry: ModelRegistry, body: bytes, *, name: str, version: int | None = None,
                 label: str | None = None, strict: bool = False) -> bytes:
    """Answers a REST `:regress` body: `{"results": [value, ...]}`."""
    return _examples_json(inference.regress, inference.regression_json, registry, body,
                          name=name, version=version, label=label, strict=strict)


def _examples_json(run, to_json, registry, body, *, name, version, label, strict) -> bytes:
    servable = registry.get(name, version, label)
    document = parse_json(body, strict=strict)
    examples = inference.examples_from_input(inference.examples_from_json(document))
    return _dumps(to_json(run(servable, _signature_name(document), examples)))


def _signature_name(document: Mapping) -> str:
    signature_name = document.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise InvalidArgument(f"'signature_name' must be a string, received {_short(signature_name)}.")
    return signature_name


def parse_json(body: bytes, *, strict: bool = False) -> dict:
    """Parses a request body into a JSON object.

    Args:
        body: The raw request body.
        strict: `bool`. Refuse `NaN`, `Infinity` and `-Infinity`.

    Raises:
        InvalidArgument: for an empty, malformed, too deeply nested or
            non-object document, saying what is wrong and where.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidArgument(f"JSON Parse error: the body is not UTF-8 (byte {error.start}).") from None
    if not text.strip():
        raise InvalidArgument("JSON Parse error: The document is empty.")
    try:
        document = json.loads(text, parse_constant=_refuse_constant if strict else None)
    except RecursionError:
        raise InvalidArgument("JSON Parse error: the document is nested too deeply.") from None
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"JSON Parse error: {error.msg} at offset {error.pos}.") from None
    except ValueError as error:  # e.g. an integer of more than 4,300 digits
        raise InvalidArgument(f"JSON Parse error: {error}.") from None
    if not isinstance(document, dict):
        raise InvalidArgument(f"JSON Parse error: expected a JSON object, received {type(document).__name__}.")
    return document


def _refuse_constant(token: str):
    raise InvalidArgument(
        f"JSON value {token} is not accepted: this server runs with --strict, which refuses NaN and Infinity."
    )


def decode_predict_request(document: Mapping, signature: Signature) -> tuple[dict[str, np.ndarray], bool]:
    """Turns a `:predict` JSON document into input arrays.

    Args:
        document: The parsed request, with `instances` or `inputs`.
        signature: The `Signature` the request is for.

    Returns:
        `(inputs, row_format)`: a dict of arrays with the signature's dtypes
        and whether the request used the row (`instances`) format.

    Raises:
        InvalidArgument: naming the problem (and the element, for rows).
    """
    infos = signature.inputs
    if ("instances" in document) == ("inputs" in document):
        if "instances" in document:
            raise InvalidArgument("Expecting only one of 'inputs' or 'instances' keys, received both.")
        raise InvalidArgument("Missing 'inputs' or 'instances' key in the request body.")
    if "instances" in document:
        instances = document["instances"]
        if not isinstance(instances, list):
            raise InvalidArgument(f"Expecting 'instances' to be a list, received {type(instances).__name__}.")
        if not instances:
            raise InvalidArgument("No values in 'instances' array: the batch is empty.")
        if _is_named(instances[0]):
            for i, instance in enumerate(instances):
                if not _is_named(instance):
                    raise InvalidArgument(f"Expecting an object at item {i} of 'instances', like item 0.")
                signature.check_names(instance, where=f"Item {i} of 'instances'")
            columns = {name: [instance[name] for instance in instances] for name in infos}
        else:
            if len(infos) != 1:
                raise InvalidArgument(
                    "'instances' is a plain list, but signature "
                    f"`{signature.name}` has several inputs {sorted(infos)}: send a list of objects."
                )
            if any(_is_named(instance) for instance in instances):
                raise InvalidArgument("'instances' mixes objects and values; use one or the other.")
            columns = {next(iter(infos)): instances}
        where = "in 'instances'"
    else:
        value = document["inputs"]
        if _is_named(value):
            signature.check_names(value, where="'inputs'")
            columns = value
        else:
            if len(infos) != 1:
                raise InvalidArgument(
                    f"'inputs' is a plain value/list, but signature `{signature.name}` has several inputs "
                    f"{sorted(infos)}: send an object."
                )
            columns = {next(iter(infos)): value}
        where = "in 'inputs'"
    arrays = {name: json_to_array(columns[name], info, where=f"Input `{name}` {where}") for name, info in infos.items()}
    return arrays, "instances" in document


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _is_named(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def json_to_array(value: Any, info: TensorInfo, *, where: str) -> np.ndarray:
    """Converts a JSON value to an array of `info.dtype`, as TF Serving types it.

    Decimal numbers are accepted for floating-point inputs only, integers
    for integer and floating-point inputs, `true`/`false` for booleans, and
    strings or `{"b64": ...}` for strings.

    Raises:
        InvalidArgument: for ragged lists, values of the wrong JSON type or
            values out of the dtype's range.
    """
    if info.dtype == tf.string:
        return _string_array(value, where)
    expected = np.dtype(info.dtype.as_numpy_dtype)
    try:
        array = np.array(value)
    except (ValueError, TypeError, RecursionError):
        raise InvalidArgument(
            f"{where} is not a dense tensor: its nested lists have different lengths or mix lists and values."
        ) from None
    if array.size == 0:
        return array.astype(expected)
    kind = array.dtype.kind
    accepted = {"f": "iuf", "c": "iuf", "i": "iu", "u": "iu", "b": "b"}.get(expected.kind, "")
    if kind not in accepted:
        raise InvalidArgument(
            f"{where} expects {info.dtype_name} values, received {_JSON_KINDS.get(kind, str(array.dtype))}."
        )
    if expected.kind in "iu":
        limits = np.iinfo(expected)
        if array.min() < limits.min or array.max() > limits.max:
            raise InvalidArgument(f"{where} has values out of the range of {info.dtype_name}.")
        return array.astype(expected)
    with np.errstate(over="ignore", invalid="ignore"):
        converted = array.astype(expected)
    if expected.kind == "f" and (np.isinf(converted) & np.isfinite(array)).any():
        raise InvalidArgument(f"{where} has values out of the range of {info.dtype_name}.")
    return converted


def _string_array(value: Any, where: str) -> np.ndarray:
    shape: list[int] = []
    probe = value
    while isinstance(probe, list):
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    flat: list[bytes] = []

    def fill(item: Any, level: int) -> None:
        if isinstance(item, list):
            if level >= len(shape) or len(item) != shape[level]:
                raise InvalidArgument(f"{where} is not a dense tensor: its nested lists have different lengths.")
            for element in item:
                fill(element, level + 1)
            return
        if level != len(shape):
            raise InvalidArgument(f"{where} is not a dense tensor: values found at different depths.")
        if isinstance(item, str):
            flat.append(item.encode("utf-8"))
        elif _is_b64(item):
            try:
                flat.append(base64.b64decode(item["b64"], validate=True))
            except (binascii.Error, ValueError):
                raise InvalidArgument(f"{where} has a 'b64' value that is not valid base64.") from None
        else:
            raise InvalidArgument(
                f"{where} expects DT_STRING values (strings or {{\"b64\": ...}}), received {_short(item)}."
            )

    try:
        fill(value, 0)
    except RecursionError:
        raise InvalidArgument(f"{where} is nested too deeply.") from None
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def encode_predict_response(outputs: Mapping[str, np.ndarray], *, row_format: bool) -> dict:
    """The JSON document TF Serving answers for `outputs`.

    Row format: `{"predictions": [...]}`, one value per instance, or one
    object per instance when there are several outputs. Columnar format:
    `{"outputs": value}`, or an object of outputs when there are several.
    """
    names = sorted(outputs)
    values = {name: array_to_json(outputs[name], name) for name in names}
    if not row_format:
        return {"outputs": values[names[0]] if len(names) == 1 else values}
    sizes = {}
    for name in names:
        if np.ndim(outputs[name]) == 0:
            raise InvalidArgument(f"Tensor name: {name} has no batch dimension; use the 'inputs' format.")
        sizes[name] = np.shape(outputs[name])[0]
    if len(set(sizes.values())) > 1:
        raise InvalidArgument(f"Outputs have inconsistent batch sizes {sizes}; use the 'inputs' format.")
    if len(names) == 1:
        return {"predictions": values[names[0]]}
    return {"predictions": [{name: values[name][i] for name in names} for i in range(sizes[names[0]])]}


def array_to_json(array: np.ndarray, name: str = "") -> Any:
    """Nested lists of JSON values; float32 written as its shortest repr, as TF Serving."""
    array = np.asarray(array)
    kind = array.dtype.kind
    if kind == "f" and array.dtype.itemsize < 8:
        # The shortest string that round-trips the float32 value, not the
        # float64 expansion (0.2, not 0.20000000298023224).
        return array.astype(str).astype(np.float64).tolist()
    if kind in "OS":
        as_bytes = name.endswith("_bytes")

        def convert(item):
            item = item if isinstance(item, bytes) else str(item).encode("utf-8")
            if as_bytes:
                return {"b64": base64.b64encode(item).decode("ascii")}
            return item.decode("utf-8", errors="replace")

        return np.vectorize(convert, otypes=[object])(array).tolist() if array.size else array.tolist()
    return array.tolist()


def metadata_json(servable: Servable) -> dict:
    """The REST metadata document: `model_spec` and the signature defs."""
    return {
        "model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
        "metadata": {"signature_def": json_format.MessageToDict(servable.signature_def_map, **_PROTO_JSON)},
    }


def _short(value: Any, limit: int = 80) -> str:
    try:
        text = json.dumps(value, allow_nan=True, default=str)
    except (RecursionError, ValueError):
        return type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


_VERBS = {"predict": predict_json, "classify": classify_json, "regress": regress_json}
_API_NAMES = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}
