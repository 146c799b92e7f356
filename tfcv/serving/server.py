"""`tfcv serve`: the local TF-Serving-compatible model server.

Every `tensorflow_model_server` flag is accepted, so a command line written
for one works for the other. Those that mean something locally are
implemented (`--port`, `--rest_api_port`, `--model_name`,
`--model_base_path`, `--model_config_file` and
`--model_config_file_poll_wait_seconds`, `--file_system_poll_wait_seconds`,
`--enable_batching` with `--batching_parameters_file`,
`--enable_model_warmup`, `--monitoring_config_file`,
`--rest_api_timeout_in_ms`, `--grpc_socket_path`,
`--grpc_channel_arguments`, `--grpc_max_threads`,
`--allow_version_labels_for_unavailable_models`,
`--tensorflow_intra_op_parallelism`, `--tensorflow_inter_op_parallelism`,
`--enable_serialization_as_tensor_content`, `--version`); the others (TPU,
TFLite, SSL, profiler, ...) are accepted with a one-line notice saying they
have no effect here. The extra flags (`--host`, `--max_body_bytes`,
`--strict`, `--allowed_hosts`, `--cors_allow_origins`) only add safety. It
binds 127.0.0.1 unless `--host` says otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Sequence

__all__ = ["ServerOptions", "add_arguments", "main", "read_batching_parameters", "serve", "serve_from_args"]

logger = logging.getLogger("tfcv.serving")

_WILDCARD_HOSTS = ("0.0.0.0", "::", "")


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """Everything `serve` needs besides the models.

    Args:
        host: `str`. Address both servers bind. Defaults to `"127.0.0.1"`.
        port: `int`. gRPC port; `0` disables gRPC. Defaults to `8500`.
        rest_api_port: `int`. REST port; `0` disables REST. Defaults to
            `8501`.
        file_system_poll_wait_seconds: `float`. Seconds between scans of the
            base paths for new versions; `0` scans once. Defaults to `1`.
        enable_batching: `bool`. Batch concurrent requests into one model
            call. Defaults to `True`.
        max_batch_size: `int`. Most rows in one batched call. Defaults to
            `64`.
        batch_timeout_micros: `int`. Longest wait for a batch to fill.
            Defaults to `1000`.
        num_batch_threads: `int` or `None` (the number of CPUs). Batches of
            one signature that run at once.
        max_body_bytes: `int`. Largest REST body or gRPC message accepted.
            Defaults to 16 MiB.
        strict: `bool`. Refuse NaN and Infinity in requests. Defaults to
            `False`, as TF Serving accepts them.
        allowed_hosts: Tuple of host names accepted in the REST `Host`
            header, `("*",)` for any. Defaults to `host` (and the loopback
            names when `host` is a loopback address).
        cors_allow_origins: Tuple of origins that get CORS headers.
            Defaults to none.
        grpc_max_threads: `int`. Threads running the gRPC requests its
            event loop does not answer itself (unbatched model calls,
            classify, regress, multi-inference, large tensors). Defaults to
            `16`.
        model_config_file_poll_wait_seconds: `float`. Seconds between two
            reads of the model config file; `0` reads it once. Defaults to
            `0`.
        enable_model_warmup: `bool`. Replay warmup records before serving a
            version. Defaults to `True`.
        monitoring_path: `str` or `None`. REST path of the Prometheus
            metrics; `None` exports none. Defaults to `None`.
        rest_api_timeout_in_ms: `int`. REST requests taking longer get 504;
            `0` for no limit. Defaults to `0`.
        grpc_socket_path: `str` or `None`. Unix socket gRPC also listens
            on. Defaults to `None`.
        grpc_channel_arguments: Tuple of `(name, value)` gRPC server
            arguments. Defaults to none.
        allow_version_labels_for_unavailable_models: `bool`. Defaults to
            `False`, as TF Serving.
        tensor_content: `bool`. Write gRPC outputs in `tensor_content`
            instead of the typed fields. Defaults to `False`, as TF Serving.
    """

    host: str = "127.0.0.1"
    port: int = 8500
    rest_api_port: int = 8501
    file_system_poll_wait_seconds: float = 1.0
    enable_batching: bool = True
    max_batch_size: int = 64
    batch_timeout_micros: int = 1000
    num_batch_threads: int | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    strict: bool = False
    allowed_hosts: tuple[str, ...] = ()
    cors_allow_origins: tuple[str, ...] = ()
    grpc_max_threads: int = 16
    model_config_file_poll_wait_seconds: float = 0.0
    enable_model_warmup: bool = True
    monitoring_path: str | None = None
    rest_api_timeout_in_ms: int = 0
    grpc_socket_path: str | None = None
    grpc_channel_arguments: tuple = ()
    allow_version_labels_for_unavailable_models: bool = False
    tensor_content: bool = False

    def __post_init__(self):
        for name in ("port", "rest_api_port"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
                raise ValueError(
                    f"Invalid value for argument `{name}`. Received: {name}={value!r}. "
                    "Expected a port number in [0, 65535] (0 disables it)."
                )
        if not self.port and not self.rest_api_port:
            raise ValueError(
                "Invalid values for arguments `port` and `rest_api_port`. Received: port=0, rest_api_port=0. "
                "Expected at least one of them to be a port number."
            )
        if self.max_body_bytes < 1:
            raise ValueError(
                f"Invalid value for argument `max_body_bytes`. Received: max_body_bytes={self.max_body_bytes!r}. "
                "Expected an int >= 1."
            )

    def accepted_hosts(self) -> tuple[str, ...]:
        """The Host header names the REST API accepts."""
        if self.allowed_hosts:
            return tuple(self.allowed_hosts)
        if self.host in _WILDCARD_HOSTS:
            return ("*",)
        if _is_loopback(self.host):
            return tuple(dict.fromkeys((self.host, "127.0.0.1", "localhost", "::1")))
        return (self.host,)

    def batching(self):
        from tfcv.serving.batching import BatchingOptions

        if not self.enable_batching:
            return None
        threads = self.num_batch_threads or os.cpu_count() or 1
        return BatchingOptions(self.max_batch_size, self.batch_timeout_micros, threads)


def serve(model_name: str | None = None, model_base_path: str | os.PathLike | None = None, *,
          model_config_file: str | os.PathLike | None = None, options: ServerOptions | None = None,
          stop_event: threading.Event | None = None) -> int:
    """Serves models over REST and gRPC until SIGINT/SIGTERM or `stop_event`.

    Give either `model_name` and `model_base_path`, or `model_config_file`
    (TF Serving's text `ModelServerConfig`), as to `tensorflow_model_server`.

    Args:
        model_name: `str`. Name of the single model. Defaults to
            `"default"`, as TF Serving.
        model_base_path: `str`. Directory holding the numbered versions.
        model_config_file: `str`. Path of a `models.config` file.
        options: A `ServerOptions`. Defaults to `ServerOptions()`.
        stop_event: A `threading.Event` that stops the server when set.

    Returns:
        The exit status: `0` after a clean shutdown.

    Example:

    >>> tfcv.serving.serve("digits", "models/digits")  # blocks
    """
    from tfcv.serving.registry import ModelConfig, ModelRegistry, read_model_config_file

    options = options or ServerOptions()
    if model_config_file is not None and model_base_path is not None:
        raise ValueError(
            f"Invalid arguments: received both model_config_file={os.fspath(model_config_file)!r} and "
            f"model_base_path={os.fspath(model_base_path)!r}. Expected one of them."
        )
    if model_config_file is not None:
        configs = read_model_config_file(model_config_file)
    elif model_base_path is not None:
        configs = [ModelConfig(model_name or "default", os.fspath(model_base_path))]
    else:
        raise ValueError(
            "Invalid arguments: expected `model_base_path` (with `model_name`) or `model_config_file`."
        )
    stop_event = stop_event or threading.Event()
    rest_socket = _bind_socket(options.host, options.rest_api_port) if options.rest_api_port else None
    metrics = None
    if options.monitoring_path:
        from tfcv.serving.metrics import Metrics

        metrics = Metrics(options.monitoring_path)
    registry = ModelRegistry(
        configs, file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
        batching=options.batching(), enable_model_warmup=options.enable_model_warmup, metrics=metrics,
        allow_version_labels_for_unavailable_models=options.allow_version_labels_for_unavailable_models,
    )
    grpc_server = rest_server = rest_thread = None
    restore = _install_signal_handlers(stop_event)
    try:
        if options.port:
            from tfcv.serving.grpc_service import create_grpc_server

            grpc_server, port = create_grpc_server(
                registry, host=options.host, port=options.port, max_message_bytes=options.max_body_bytes,
                max_workers=options.grpc_max_threads, strict=options.strict,
                socket_path=options.grpc_socket_path, channel_arguments=options.grpc_channel_arguments,
                metrics=metrics, tensor_content=options.tensor_content,
            )
        registry.start()
        if grpc_server is not None:
            grpc_server.start()
            logger.info("Running gRPC ModelServer at %s:%d ...", options.host, port)
        if rest_socket is not None:
            if options.accepted_hosts() == ("*",):
                logger.warning("The REST API on %s accepts any Host header; pass --allowed_hosts with the "
                               "names clients use to refuse DNS-rebinding requests.", options.host)
            rest_server, rest_thread = _start_rest(registry, rest_socket, options, metrics)
            logger.info("Exporting HTTP/REST API at %s:%d ...", options.host, rest_socket.getsockname()[1])
        config_watch = _ConfigWatch(model_config_file, options.model_config_file_poll_wait_seconds)
        while not stop_event.wait(0.2):
            if rest_thread is not None and not rest_thread.is_alive():
                logger.error("The REST server stopped unexpectedly.")
                return 1
            config_watch.poll(registry)
        logger.info("Shutting down.")
        return 0
    finally:
        if rest_server is not None:
            rest_server.should_exit = True
            rest_thread.join(timeout=10)
        if grpc_server is not None:
            grpc_server.stop(grace=1).wait()
        registry.stop()
        if rest_socket is not None:
            rest_socket.close()
        restore()


class _ConfigWatch:
    """Re-reads `--model_config_file` every `wait` seconds and applies a changed one."""

    def __init__(self, path, wait: float):
        import time

        self.path = os.fspath(path) if path is not None and wait > 0 else None
        self.wait = wait
        self._clock = time.monotonic
        self._next = self._clock() + wait
        self._text = self._read() if self.path else None

    def _read(self) -> str | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                return f.read()
        except OSError as error:
            logger.error("Cannot read the model config file %s: %s", self.path, error.strerror or error)
            return None

    def poll(self, registry) -> None:
        if self.path is None or self._clock() < self._next:
            return
        self._next = self._clock() + self.wait
        text = self._read()
        if text is None or text == self._text:
            return
        from tfcv.serving.registry import read_model_config_file

        try:
            registry.reload_config(read_model_config_file(self.path))
        except (ValueError, OSError) as error:
            logger.error("Not applying the changed model config file %s: %s", self.path, error)
        else:
            logger.info("Applied the changed model config file %s.", self.path)
        self._text = text


def _start_rest(registry, sock: socket.socket, options: ServerOptions, metrics=None):
    import uvicorn

    from tfcv.serving.rest import create_app

    app = create_app(
        registry, max_body_bytes=options.max_body_bytes, strict=options.strict,
        allowed_hosts=options.accepted_hosts(), cors_allow_origins=options.cors_allow_origins,
        metrics=metrics, timeout_ms=options.rest_api_timeout_in_ms,
    )
    # loop="asyncio": with uvloop installed uvicorn would pick it, and REST
    # then answered 5-30% fewer requests/s under bench/serve_load.py (3
    # alternating runs); only the gRPC loop gains from it.
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", server_header=False,
        timeout_keep_alive=30, timeout_graceful_shutdown=5, http=_http_parser(), loop="asyncio",
    )
    server = uvicorn.Server(config)
    # Off the main thread uvicorn leaves the signal handlers to us.
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="tfcv-rest", daemon=True)
    thread.start()
    return server, thread


def _http_parser() -> str:
    # httptools (C) parses a request in a fraction of h11's (pure Python)
    # time: about 0.1 ms less server CPU per :predict, measured with
    # bench/serve_load.py. It is a dependency; without it REST still works.
    try:
        import httptools  # noqa: F401
    except ImportError:
        logger.warning("httptools is not installed; the REST API parses HTTP with h11, which is slower.")
        return "h11"
    return "httptools"


def _bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say
    # so; without it every response stalls ~40 ms on delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"Cannot bind the REST port {host}:{port}: {error.strerror or error}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _install_signal_handlers(stop_event: threading.Event):
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda *_: stop_event.set())

    def restore():
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    return restore


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------ flags


def _bool_flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _list_flag(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


# tensorflow_model_server flags that have no meaning in this server: accepted
# (a command line written for TF Serving runs unchanged) with a notice.
_IGNORED_FLAGS = {
    "rest_api_num_threads": "uvicorn serves REST on one event loop and a thread pool",
    "rest_api_enable_cors_support": "use --cors_allow_origins to send CORS headers",
    "num_load_threads": "versions load one after the other",
    "num_unload_threads": "versions unload one after the other",
    "max_num_load_retries": "a failed version is retried when its files change",
    "load_retry_interval_micros": "a failed version is retried when its files change",
    "flush_filesystem_caches": "there is no file system cache to flush",
    "tensorflow_session_parallelism": "use --tensorflow_intra_op_parallelism / --tensorflow_inter_op_parallelism",
    "use_alts_credentials": "ALTS is not supported; gRPC is plaintext on the bound host",
    "ssl_config_file": "TLS is not supported; gRPC and REST are plaintext on the bound host",
    "platform_config_file": "only TensorFlow SavedModels are served",
    "saved_model_tags": "the 'serve' meta graph is loaded",
    "num_request_iterations_for_warmup": "each warmup record is replayed once",
    "prefer_tflite_model": "TFLite models are not served",
    "num_tflite_pools": "TFLite models are not served",
    "num_tflite_interpreters_per_pool": "TFLite models are not served",
    "enable_profiler": "the TensorFlow profiler service is not offered",
    "thread_pool_factory_config_file": "TensorFlow's own thread pools run the model",
    "mixed_precision": "models run in the precision they were saved in",
    "skip_initialize_tpu": "TPUs are not used",
    "enable_grpc_healthcheck_service": "the gRPC health service is not offered; GetModelStatus tells readiness",
    "enable_per_model_batching_parameters": "one --batching_parameters_file applies to every model",
    "tensorflow_session_config_file": "TensorFlow's default session config is used",
    "per_process_gpu_memory_fraction": "TensorFlow's default GPU memory growth is used",
    "remove_unused_fields_from_bundle_metagraph": "the MetaGraph is kept as saved",
    "enable_signature_method_name_check": "signatures are checked by their inputs and outputs, as by default",
    "xla_cpu_compilation_enabled": "models run as saved",
    "xla_gpu_compilation_enabled": "models run as saved",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds every `tensorflow_model_server` flag, and tfcv's own, to `parser`."""
    defaults = ServerOptions()
    add = parser.add_argument
    add("--port", type=int, default=defaults.port, help="gRPC port; 0 disables gRPC (default %(default)s)")
    add("--rest_api_port", type=int, default=defaults.rest_api_port,
        help="REST port; 0 disables REST (default %(default)s)")
    add("--host", default=defaults.host,
        help="address to bind; the server never listens beyond this machine unless asked (default %(default)s)")
    add("--model_name", default="default", help="name of the model in URLs and requests (default %(default)s)")
    add("--model_base_path", help="directory whose numbered subdirectories are the model versions")
    add("--model_config_file", help="TF Serving models.config (text ModelServerConfig) listing several models")
    add("--model_config_file_poll_wait_seconds", type=float, default=0.0,
        help="seconds between reads of --model_config_file; a changed file is applied; 0 reads it once "
        "(default %(default)s)")
    add("--file_system_poll_wait_seconds", type=float, default=defaults.file_system_poll_wait_seconds,
        help="seconds between scans for new versions; 0 scans once (default %(default)s)")
    add("--enable_batching", type=_bool_flag, nargs="?", const=True, default=defaults.enable_batching,
        help="batch concurrent requests into one model call: true or false (default %(default)s)")
    add("--batching_parameters_file",
        help="TF Serving BatchingParameters text file (max_batch_size, batch_timeout_micros, num_batch_threads)")
    add("--max_batch_size", type=int, default=None,
        help=f"most rows in one batched model call (default {defaults.max_batch_size})")
    add("--batch_timeout_micros", type=int, default=None,
        help=f"longest wait for a batch to fill, in microseconds (default {defaults.batch_timeout_micros})")
    add("--num_batch_threads", type=int, default=None,
        help="batches of one signature running at once (default: number of CPUs)")
    add("--enable_model_warmup", type=_bool_flag, nargs="?", const=True, default=True,
        help="replay assets.extra/tf_serving_warmup_requests before serving a version (default %(default)s)")
    add("--monitoring_config_file",
        help="TF Serving MonitoringConfig text file; prometheus_config exports metrics on the REST port")
    add("--rest_api_timeout_in_ms", type=int, default=0,
        help="REST requests taking longer get 504; 0 for no limit (default %(default)s; TF Serving's is 30000)")
    add("--grpc_socket_path", help="also serve gRPC on this Unix domain socket")
    add("--grpc_channel_arguments", default="",
        help="comma-separated name=value gRPC server arguments, e.g. grpc.max_connection_age_ms=2000")
    add("--grpc_max_threads", type=int, default=defaults.grpc_max_threads,
        help="threads running the gRPC requests the event loop does not answer itself: unbatched model "
        "calls, classify, regress, multi-inference, large tensors (default %(default)s)")
    add("--allow_version_labels_for_unavailable_models", type=_bool_flag, nargs="?", const=True, default=False,
        help="let a reloaded model config label a version that is not yet available (default %(default)s)")
    add("--tensorflow_intra_op_parallelism", type=int, default=0,
        help="threads one op may use; 0: the CPUs divided among the batch threads when batching, "
             "else TensorFlow's choice (default %(default)s)")
    add("--tensorflow_inter_op_parallelism", type=int, default=0,
        help="ops run at once; 0 lets TensorFlow choose (default %(default)s)")
    add("--enable_serialization_as_tensor_content", type=_bool_flag, nargs="?", const=True, default=False,
        help="write gRPC outputs in tensor_content rather than the typed fields (default %(default)s)")
    add("--version", action="store_true", help="print the server version and exit")
    add("--max_body_bytes", type=int, default=defaults.max_body_bytes,
        help="largest REST body or gRPC message; larger ones get 413 / RESOURCE_EXHAUSTED (default %(default)s)")
    add("--strict", action="store_true",
        help="check input shapes against the signature before the model runs, and refuse NaN and Infinity, "
        "with 400 / INVALID_ARGUMENT (TF Serving leaves shapes to TensorFlow and accepts NaN)")
    add("--allowed_hosts", type=_list_flag, default=(),
        help="comma-separated Host header names the REST API accepts, '*' for any "
        "(default: the bound host, plus localhost names on a loopback address)")
    add("--cors_allow_origins", type=_list_flag, default=(),
        help="comma-separated origins that get CORS headers (default: none, no CORS headers)")
    group = parser.add_argument_group(
        "tensorflow_model_server flags without effect here (accepted, with a notice)")
    for name, reason in _IGNORED_FLAGS.items():
        group.add_argument(f"--{name}", nargs="?", const="true", default=None, metavar="VALUE",
                           help=f"no effect: {reason}")


def read_batching_parameters(path: str | os.PathLike) -> dict[str, int]:
    """Reads a TF Serving `BatchingParameters` text file (`--batching_parameters_file`).

    Returns:
        The `max_batch_size`, `batch_timeout_micros` and `num_batch_threads`
        it sets. The other fields (`max_enqueued_batches`,
        `allowed_batch_sizes`, ...) are accepted and have no effect: this
        server's queue is unbounded and batches are not padded.

    Raises:
        ValueError: naming the file when it is not a `BatchingParameters`.
    """
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"#[^\n]*", "", f.read())
    entry = re.compile(r"\s*(\w+)\s*:?\s*\{\s*value\s*:\s*(\"[^\"]*\"|[\w.\-]+)\s*\}|\s*(\w+)\s*:\s*([\w.\-]+)")
    values, position = {}, 0
    text = text.strip()
    while position < len(text):
        match = entry.match(text, position)
        if match is None:
            raise ValueError(
                f"Error parsing text-format tensorflow.serving.BatchingParameters in {os.fspath(path)} "
                f"near {text[position:position + 40]!r}."
            )
        key, value = (match[1], match[2]) if match[1] else (match[3], match[4])
        values[key] = value
        position = match.end()
        while position < len(text) and text[position] in " \t\r\n,;":
            position += 1
    wanted = {}
    for key in ("max_batch_size", "batch_timeout_micros", "num_batch_threads"):
        if key in values:
            try:
                wanted[key] = int(values[key])
            except ValueError:
                raise ValueError(f"{os.fspath(path)}: {key} must be an integer, got {values[key]!r}.") from None
    return wanted


def serve_from_args(args: argparse.Namespace, stop_event: threading.Event | None = None) -> int:
    """Runs `serve` with the flags parsed by a parser given `add_arguments`."""
    if getattr(args, "version", False):
        print(f"TensorFlow ModelServer: tfcv serve {_package_version()}")
        return 0
    _configure_logging()
    for name in _IGNORED_FLAGS:
        if getattr(args, name, None) is not None:
            logger.warning("--%s is accepted for compatibility and has no effect: %s.", name, _IGNORED_FLAGS[name])
    if args.model_config_file is None and args.model_base_path is None:
        raise ValueError("Missing flag: give --model_base_path (with --model_name) or --model_config_file.")
    if args.model_config_file is not None and args.model_base_path is not None:
        raise ValueError("Give --model_base_path or --model_config_file, not both.")
    defaults = ServerOptions()
    batching = {}
    if args.batching_parameters_file:
        batching = read_batching_parameters(args.batching_parameters_file)
    for key in ("max_batch_size", "batch_timeout_micros", "num_batch_threads"):
        if getattr(args, key) is not None:
            batching[key] = getattr(args, key)
    intra = args.tensorflow_intra_op_parallelism
    if not intra and args.enable_batching:
        intra = _intra_op_threads(batching.get("num_batch_threads"))
    # Before anything runs TensorFlow: its thread pools are fixed once the
    # eager context is initialized.
    _set_parallelism(intra, args.tensorflow_inter_op_parallelism)
    monitoring_path = None
    if args.monitoring_config_file:
        from tfcv.serving.metrics import read_monitoring_config

        enabled, path = read_monitoring_config(args.monitoring_config_file)
        monitoring_path = path if enabled else None
    from tfcv.serving.grpc_service import parse_channel_arguments

    options = ServerOptions(
        host=args.host, port=args.port, rest_api_port=args.rest_api_port,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        enable_batching=args.enable_batching,
        max_batch_size=batching.get("max_batch_size", defaults.max_batch_size),
        batch_timeout_micros=batching.get("batch_timeout_micros", defaults.batch_timeout_micros),
        num_batch_threads=batching.get("num_batch_threads"),
        max_body_bytes=args.max_body_bytes, strict=args.strict, allowed_hosts=tuple(args.allowed_hosts),
        cors_allow_origins=tuple(args.cors_allow_origins), grpc_max_threads=args.grpc_max_threads,
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        enable_model_warmup=args.enable_model_warmup, monitoring_path=monitoring_path,
        rest_api_timeout_in_ms=args.rest_api_timeout_in_ms, grpc_socket_path=args.grpc_socket_path,
        grpc_channel_arguments=tuple(parse_channel_arguments(args.grpc_channel_arguments)),
        allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
        tensor_content=args.enable_serialization_as_tensor_content,
    )
    return serve(args.model_name, args.model_base_path, model_config_file=args.model_config_file,
                 options=options, stop_event=stop_event)


def _intra_op_threads(num_batch_threads: int | None) -> int:
    # num_batch_threads batches run at once and share the CPUs; TensorFlow's
    # default gives each op all of them, and the idle threads of its pool
    # spin between calls (about 7% of the server's CPU under
    # bench/serve_load.py, measured with perf).
    cpus = os.cpu_count() or 1
    return max(1, cpus // (num_batch_threads or cpus))


def _set_parallelism(intra: int, inter: int) -> None:
    if not intra and not inter:
        return
    import tensorflow as tf

    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(inter)


def _package_version() -> str:
    from tfcv import __version__

    return __version__


def _configure_logging() -> None:
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s tfcv.serving: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m tfcv.serving`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(
        prog="python -m tfcv.serving",
        description="A local TensorFlow-Serving-compatible model server (REST and gRPC).",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return serve_from_args(args)
    except (ValueError, OSError) as error:
        print(f"tfcv serve: error: {error}", file=sys.stderr)
        return 1
