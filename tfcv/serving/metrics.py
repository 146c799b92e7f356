"""Prometheus metrics under TF Serving's names, for `--monitoring_config_file`.

TF Serving exports its monitoring metrics at the path of the
`prometheus_config` in `--monitoring_config_file` (usually
`/monitoring/prometheus/metrics`) on the REST port, with the metric paths
written as Prometheus names (`/tensorflow/serving/request_count` becomes
`:tensorflow:serving:request_count`). This module keeps the same names and
labels for what a local server measures:

- `:tensorflow:serving:request_count{model_name,status}`: requests answered.
- `:tensorflow:serving:request_latency{model_name,API,entrypoint}`: their
  latency in microseconds, a histogram (`entrypoint` is `GRPC` or `REST`).
- `:tensorflow:cc:saved_model:load_attempt_count{model_path,status}`: loads
  (TensorFlow's own SavedModel loader metric, which TF Serving exports).
- `:tensorflow:cc:saved_model:load_latency{model_path}`: microseconds spent
  loading the SavedModels that loaded, a counter.
- `:tensorflow:serving:model_warmup_latency{model_path,status}`: warmup time
  in microseconds, a histogram.
- `:tfcv:serving:model_version_state{model_name,version,state}`: 1 for the
  current state of each version. TF Serving has no such metric (it reports
  version states through the model status API only), so it is under tfcv's
  own prefix rather than one a TF Serving dashboard would take for its own.
"""

from __future__ import annotations

import os
import re
import threading
from collections import defaultdict

from tensorflow_serving.apis import get_model_status_pb2

__all__ = ["DEFAULT_PATH", "Metrics", "read_monitoring_config"]

DEFAULT_PATH = "/monitoring/prometheus/metrics"

# TF Serving's request latency buckets: 10 us growing by 1.8x, 33 of them.
_BUCKETS = tuple(10 * 1.8**i for i in range(33))
_REQUEST_COUNT = ":tensorflow:serving:request_count"
_REQUEST_LATENCY = ":tensorflow:serving:request_latency"
_LOAD_COUNT = ":tensorflow:cc:saved_model:load_attempt_count"
_LOAD_LATENCY = ":tensorflow:cc:saved_model:load_latency"
_WARMUP_LATENCY = ":tensorflow:serving:model_warmup_latency"
_VERSION_STATE = ":tfcv:serving:model_version_state"


def read_monitoring_config(path: str | os.PathLike) -> tuple[bool, str]:
    """Reads a TF Serving `MonitoringConfig` text file.

    Only `prometheus_config { enable: ... path: "..." }` means something to
    a local server; the proto is not in `tensorflow-serving-api`, so its two
    fields are read directly.

    Returns:
        `(enabled, path)`; the path defaults to `DEFAULT_PATH`.

    Raises:
        ValueError: naming the file when it is not a `MonitoringConfig`.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    body = re.sub(r"#[^\n]*", "", text)
    match = re.fullmatch(r"\s*prometheus_config\s*:?\s*\{(?P<fields>[^{}]*)\}\s*", body)
    if match is None:
        raise ValueError(
            f"Error parsing text-format tensorflow.serving.MonitoringConfig in {os.fspath(path)}: "
            "expected prometheus_config { enable: true path: \"...\" }."
        )
    fields = dict(re.findall(r"(\w+)\s*:\s*(\"[^\"]*\"|\w+)", match["fields"]))
    unknown = sorted(set(fields) - {"enable", "path"})
    if unknown:
        raise ValueError(f"Unknown field(s) {unknown} in the prometheus_config of {os.fspath(path)}.")
    enabled = fields.get("enable", "false").lower() == "true"
    metrics_path = fields.get("path", f'"{DEFAULT_PATH}"').strip('"') or DEFAULT_PATH
    return enabled, metrics_path


class _Histogram:
    __slots__ = ("counts", "sum", "count")

    def __init__(self):
        self.counts = [0] * len(_BUCKETS)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(_BUCKETS):
            if value <= bound:
                self.counts[i] += 1
                break
        self.sum += value
        self.count += 1


class Metrics:
    """Counters and histograms of one server, rendered in Prometheus' text format.

    Args:
        path: `str`. URL path the REST API serves them at. Defaults to
            `DEFAULT_PATH`.

    Example:

    >>> metrics = Metrics()
    >>> metrics.record_request("digits", "Predict", "REST", "OK", 0.004)
    >>> print(metrics.render())
    """

    def __init__(self, path: str = DEFAULT_PATH):
        self.path = path if path.startswith("/") else "/" + path
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple, int]] = defaultdict(lambda: defaultdict(int))
        self._histograms: dict[str, dict[tuple, _Histogram]] = defaultdict(dict)

    def __repr__(self) -> str:
        return f"Metrics(path={self.path!r})"

    def record_request(self, model_name: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        """Counts one answered request and its latency."""
        with self._lock:
            self._counters[_REQUEST_COUNT][(("model_name", model_name), ("status", status))] += 1
            key = (("model_name", model_name), ("API", api), ("entrypoint", entrypoint))
            self._histograms[_REQUEST_LATENCY].setdefault(key, _Histogram()).observe(seconds * 1e6)

    def record_load(self, model_path: str, ok: bool, warmup_seconds: float | None = None,
                    load_seconds: float | None = None) -> None:
        """Counts one load attempt of a version directory (and its load and warmup times)."""
        status = "success" if ok else "fail"
        with self._lock:
            self._counters[_LOAD_COUNT][(("model_path", model_path), ("status", status))] += 1
            if ok and load_seconds is not None:
                self._counters[_LOAD_LATENCY][(("model_path", model_path),)] += round(load_seconds * 1e6)
            if warmup_seconds is not None:
                key = (("model_path", model_path), ("status", "OK"))
                self._histograms[_WARMUP_LATENCY].setdefault(key, _Histogram()).observe(warmup_seconds * 1e6)

    def render(self, registry=None) -> str:
        """The metrics in Prometheus' text exposition format (version 0.0.4)."""
        lines: list[str] = []
        with self._lock:
            counters = {name: dict(values) for name, values in self._counters.items()}
            histograms = {
                name: {k: (list(h.counts), h.sum, h.count) for k, h in values.items()}
                for name, values in self._histograms.items()
            }
        for name in (_REQUEST_COUNT, _LOAD_COUNT, _LOAD_LATENCY):
            lines.append(f"# TYPE {name} counter")
            for labels, value in sorted(counters.get(name, {}).items()):
                lines.append(f"{name}{_labels(labels)} {value}")
        for name in (_REQUEST_LATENCY, _WARMUP_LATENCY):
            lines.append(f"# TYPE {name} histogram")
            for labels, (counts, total, count) in sorted(histograms.get(name, {}).items()):
                cumulative = 0
                for bound, n in zip(_BUCKETS, counts, strict=True):
                    cumulative += n
                    lines.append(f"{name}_bucket{_labels(labels + (('le', _number(bound)),))} {cumulative}")
                lines.append(f"{name}_bucket{_labels(labels + (('le', '+Inf'),))} {count}")
                lines.append(f"{name}_sum{_labels(labels)} {_number(total)}")
                lines.append(f"{name}_count{_labels(labels)} {count}")
        if registry is not None:
            lines.append(f"# TYPE {_VERSION_STATE} gauge")
            for model_name in registry.model_names:
                for status in registry.status_or_empty(model_name):
                    labels = (("model_name", model_name), ("version", str(status.version)),
                              ("state", _state_name(status.state)))
                    lines.append(f"{_VERSION_STATE}{_labels(labels)} 1")
        return "\n".join(lines) + "\n"


def _state_name(state: int) -> str:
    return get_model_status_pb2.ModelVersionStatus.State.Name(state)


def _labels(labels: tuple) -> str:
    inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))
