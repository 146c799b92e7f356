"""`tfcv serve`: the local TF-Serving-compatible model server.

The flags mirror `tensorflow_model_server` (`--port` for gRPC,
`--rest_api_port`, `--model_name`, `--model_base_path`,
`--model_config_file`, `--file_system_poll_wait_seconds`,
`--enable_batching`), so a command line written for one works for the
other; the extra flags (`--host`, `--max_body_bytes`, `--strict`,
`--allowed_hosts`, `--cors_allow_origins`, the batching parameters) only
add safety. It binds 127.0.0.1 unless `--host` says otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence

__all__ = ["ServerOptions", "add_arguments", "main", "serve", "serve_from_args"]

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
        grpc_max_threads: `int`. Threads answering gRPC requests. Defaults
            to `16`.
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
    registry = ModelRegistry(
        configs, file_system_poll_wait_seconds=options.file_system_poll_wait_seconds,
        batching=options.batching(),
    )
    grpc_server = rest_server = rest_thread = None
    restore = _install_signal_handlers(stop_event)
    try:
        if options.port:
            from tfcv.serving.grpc_service import create_grpc_server

            grpc_server, port = create_grpc_server(
                registry, host=options.host, port=options.port, max_message_bytes=options.max_body_bytes,
                max_workers=options.grpc_max_threads, strict=options.strict,
            )
        registry.start()
        if grpc_server is not None:
            grpc_server.start()
            logger.info("Running gRPC ModelServer at %s:%d ...", options.host, port)
        if rest_socket is not None:
            if options.accepted_hosts() == ("*",):
                logger.warning("The REST API on %s accepts any Host header; pass --allowed_hosts with the "
                               "names clients use to refuse DNS-rebinding requests.", options.host)
            rest_server, rest_thread = _start_rest(registry, rest_socket, options)
            logger.info("Exporting HTTP/REST API at %s:%d ...", options.host, rest_socket.getsockname()[1])
        while not stop_event.wait(0.2):
            if rest_thread is not None and not rest_thread.is_alive():
                logger.error("The REST server stopped unexpectedly.")
                return 1
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


def _start_rest(registry, sock: socket.socket, options: ServerOptions):
    import uvicorn

    from tfcv.serving.rest import create_app

    app = create_app(
        registry, max_body_bytes=options.max_body_bytes, strict=options.strict,
        allowed_hosts=options.accepted_hosts(), cors_allow_origins=options.cors_allow_origins,
    )
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", server_header=False,
        timeout_keep_alive=30, timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    # Off the main thread uvicorn leaves the signal handlers to us.
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="tfcv-rest", daemon=True)
    thread.start()
    return server, thread


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the `tensorflow_model_server`-style flags of `tfcv serve` to `parser`."""
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
    add("--file_system_poll_wait_seconds", type=float, default=defaults.file_system_poll_wait_seconds,
        help="seconds between scans for new versions; 0 scans once (default %(default)s)")
    add("--enable_batching", type=_bool_flag, nargs="?", const=True, default=defaults.enable_batching,
        help="batch concurrent requests into one model call: true or false (default %(default)s)")
    add("--max_batch_size", type=int, default=defaults.max_batch_size,
        help="most rows in one batched model call (default %(default)s)")
    add("--batch_timeout_micros", type=int, default=defaults.batch_timeout_micros,
        help="longest wait for a batch to fill, in microseconds (default %(default)s)")
    add("--num_batch_threads", type=int, default=None,
        help="batches of one signature running at once (default: number of CPUs)")
    add("--grpc_max_threads", type=int, default=defaults.grpc_max_threads,
        help="threads answering gRPC requests (default %(default)s)")
    add("--max_body_bytes", type=int, default=defaults.max_body_bytes,
        help="largest REST body or gRPC message; larger ones get 413 / RESOURCE_EXHAUSTED (default %(default)s)")
    add("--strict", action="store_true", help="refuse NaN and Infinity in requests with 400 / INVALID_ARGUMENT")
    add("--allowed_hosts", type=_list_flag, default=(),
        help="comma-separated Host header names the REST API accepts, '*' for any "
        "(default: the bound host, plus localhost names on a loopback address)")
    add("--cors_allow_origins", type=_list_flag, default=(),
        help="comma-separated origins that get CORS headers (default: none, no CORS headers)")


def serve_from_args(args: argparse.Namespace, stop_event: threading.Event | None = None) -> int:
    """Runs `serve` with the flags parsed by a parser given `add_arguments`."""
    if args.model_config_file is None and args.model_base_path is None:
        raise ValueError("Missing flag: give --model_base_path (with --model_name) or --model_config_file.")
    if args.model_config_file is not None and args.model_base_path is not None:
        raise ValueError("Give --model_base_path or --model_config_file, not both.")
    options = ServerOptions(
        host=args.host, port=args.port, rest_api_port=args.rest_api_port,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        enable_batching=args.enable_batching, max_batch_size=args.max_batch_size,
        batch_timeout_micros=args.batch_timeout_micros, num_batch_threads=args.num_batch_threads,
        max_body_bytes=args.max_body_bytes, strict=args.strict, allowed_hosts=tuple(args.allowed_hosts),
        cors_allow_origins=tuple(args.cors_allow_origins), grpc_max_threads=args.grpc_max_threads,
    )
    _configure_logging()
    return serve(args.model_name, args.model_base_path, model_config_file=args.model_config_file,
                 options=options, stop_event=stop_event)


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
        return 2
