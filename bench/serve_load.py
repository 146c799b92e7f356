"""Load test of `tfcv serve`: requests/s and p50/p99 latency over REST and gRPC.

Exports the reference CNN (or uses `--model_base_path`), starts
`python -m tfcv.serving` on free ports of 127.0.0.1, and runs `--clients`
concurrent clients for `--duration` seconds each against:

- `in-process`: the SavedModel's `serving_default` called directly, the
  floor that no server can beat;
- `rest`: `POST /v1/models/<name>:predict` in the row format, one
  keep-alive HTTP/1.1 connection per client: a raw socket writing a
  prepared request (`SocketRestClient`, the default) or httpx
  (`--rest-client httpx`, the client of the figures before 2026-12-03,
  which spends more CPU per request than the server's whole answer);
- `grpc`: `PredictionService/Predict` through the official stub, one
  channel shared by the clients and one prepared request (a channel per
  client, or `Predict.future(...).result()`, cost the clients as much or
  more).

Every answer is checked: the HTTP status and the JSON body of each REST
answer, the outputs of each gRPC one; a failed request counts as an error.

Clients and server share the machine's CPUs, so the numbers are a lower
bound of what the server does with its own cores. The CPU time the server
process spends per request (`CPU ms/req`, from `/proc/<pid>/stat`, Linux
only) is printed too, far less noisy than latency on a shared machine, with
the CPU of the clients (`client CPU`: this process; in the in-process mode
both columns are this process, the model call included).

Usage:

    python bench/serve_load.py [--clients 8] [--duration 10] [--batch-size 1]
        [--model_base_path DIR --model_name NAME] [--enable_batching true|false]
        [--rest-client socket|httpx] [--modes in-process,rest,grpc] [--json out.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402

START_TIMEOUT = 300
NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def export_reference(directory: str) -> str:
    import tfcv
    from tfcv.export import Randomized, export_saved_model

    base = os.path.join(directory, "digits")
    export_saved_model(tfcv.models.reference_cnn((8, 8, 1), 10), base, version=1, randomized=Randomized(samples=16))
    return base


class SocketRestClient:
    """A keep-alive HTTP/1.1 client that sends one prepared `POST`, on a raw socket.

    The request (headers and body) goes out in one `sendall`; the answer is
    read up to its headers, then exactly `Content-Length` bytes of body. An
    answer without `Content-Length` (chunked) is refused. The connection is
    opened again after the server says `Connection: close`; a connection the
    server closed counts as an error. It costs the bench a tenth of httpx's
    CPU per request, so the load generator no longer weighs as much as the
    server it measures.

    Args:
        host: `str`. Server address.
        port: `int`. Server port.
        path: `str`. Request path, e.g. `"/v1/models/digits:predict"`.
        body: `bytes`. The JSON body sent with every request.
    """

    def __init__(self, host: str, port: int, path: str, body: bytes):
        self.address = (host, port)
        self.request = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode("latin-1") + body
        self.sock = None
        self.buffer = b""

    def post(self) -> tuple[int, bytes]:
        """Sends the request and returns the answer's `(status, body)`."""
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=30)
            self.sock.setsockopt(*NODELAY)
            self.buffer = b""
        self.sock.sendall(self.request)
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        while end < 0:
            buffer += self._recv()
            end = buffer.find(b"\r\n\r\n")
        status_line, *lines = buffer[:end].split(b"\r\n")
        version, status, _ = (status_line + b" ").split(b" ", 2)
        if not version.startswith(b"HTTP/1.") or not status.isdigit():
            raise http.client.BadStatusLine(status_line.decode("latin-1"))
        headers = {}
        for line in lines:
            key, _, value = line.partition(b":")
            headers[key.strip().lower()] = value.strip()
        length = headers.get(b"content-length", b"")
        if not length.isdigit():
            raise http.client.HTTPException(f"expected an answer with Content-Length, got headers {headers}")
        body_end = end + 4 + int(length)
        while len(buffer) < body_end:
            buffer += self._recv()
        self.buffer = buffer[body_end:]
        if headers.get(b"connection", b"").lower() == b"close":
            self.close()
        return int(status), buffer[end + 4:body_end]

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            self.close()
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def rest_caller(kind: str, port: int, path: str, body: bytes):
    """A `call()` that posts `body` to `path`, with one keep-alive connection per thread.

    `kind` is `"socket"` (`SocketRestClient`) or `"httpx"`. Every answer's
    status is checked and its JSON body parsed.
    """
    local = threading.local()

    def check(status: int, content: bytes) -> None:
        if status != 200:
            raise http.client.HTTPException(f"HTTP {status}: {content[:200]!r}")
        if "predictions" not in json.loads(content):
            raise ValueError(f"no predictions in {content[:200]!r}")

    def call_socket():
        if not hasattr(local, "client"):
            local.client = SocketRestClient("127.0.0.1", port, path, body)
        check(*local.client.post())

    def call_httpx():
        if not hasattr(local, "client"):
            # httpx writes the headers and the body separately: without
            # TCP_NODELAY, Nagle's algorithm and delayed ACKs add ~40 ms to
            # every request.
            transport = httpx.HTTPTransport(socket_options=[NODELAY])
            local.client = httpx.Client(timeout=30, transport=transport)
        response = local.client.post(f"http://127.0.0.1:{port}{path}", content=body,
                                     headers={"Content-Type": "application/json"})
        check(response.status_code, response.content)

    return {"socket": call_socket, "httpx": call_httpx}[kind]


def grpc_call(stub, request) -> None:
    """`Predict` through the official stub; an answer without outputs is an error."""
    if not stub.Predict(request, timeout=30).outputs:
        raise ValueError("a PredictResponse without outputs")


def run_clients(clients: int, duration: float, call) -> dict:
    """Runs `call()` in `clients` threads for `duration` seconds; latency stats in ms."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    first_error: list[str] = []
    start_gate = threading.Barrier(clients + 1)
    deadline = [0.0]

    def worker(k: int) -> None:
        start_gate.wait()
        while time.perf_counter() < deadline[0]:
            t0 = time.perf_counter()
            try:
                call()
            except Exception as error:  # noqa: BLE001 - counted, the load goes on
                errors[k] += 1
                first_error[:] = first_error or [f"{type(error).__name__}: {error}"[:300]]
                continue
            latencies[k].append((time.perf_counter() - t0) * 1e3)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + duration
    begin = time.perf_counter()
    start_gate.wait()
    for t in threads:
        t.join(timeout=duration + 60)
    elapsed = time.perf_counter() - begin
    values = np.concatenate([np.asarray(v) for v in latencies]) if any(latencies) else np.zeros(0)
    return {
        "requests": int(values.size),
        "errors": int(sum(errors)),
        "requests_per_s": values.size / elapsed,
        "p50_ms": float(np.percentile(values, 50)) if values.size else float("nan"),
        "p99_ms": float(np.percentile(values, 99)) if values.size else float("nan"),
        "first_error": first_error[0] if first_error else None,
    }


def process_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of process `pid` (`None`: this process)."""
    if pid is None:
        return time.process_time()
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    # utime and stime are fields 14 and 15 of proc(5); [1:] starts at field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(args, base: str, rest_port: int, grpc_port: int, log) -> subprocess.Popen:
    argv = [
        sys.executable, "-m", "tfcv.serving", f"--model_name={args.model_name}", f"--model_base_path={base}",
        f"--port={grpc_port}", f"--rest_api_port={rest_port}", f"--enable_batching={args.enable_batching}",
        *args.server_flag,
    ]
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    url = f"http://127.0.0.1:{rest_port}/v1/models/{args.model_name}"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode}; see {log.name}")
        try:
            if "AVAILABLE" in httpx.get(url, timeout=2).text:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    process.kill()
    raise SystemExit(f"the server was not ready after {START_TIMEOUT}s; see {log.name}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default %(default)s)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per mode (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=1, help="instances per request (default %(default)s)")
    parser.add_argument("--model_base_path", help="bundle base path (default: export the reference CNN)")
    parser.add_argument("--model_name", default="digits", help="model name (default %(default)s)")
    parser.add_argument("--enable_batching", default="true", choices=("true", "false"),
                        help="server-side batching (default %(default)s)")
    parser.add_argument("--server-flag", action="append", default=[],
                        help="extra flag for the server, e.g. --server-flag=--batch_timeout_micros=0 (repeatable)")
    parser.add_argument("--modes", default="in-process,rest,grpc",
                        help="comma-separated modes to run, in this order (default %(default)s)")
    parser.add_argument("--rest-client", default="socket", choices=("socket", "httpx"),
                        help="REST client: a raw keep-alive socket or httpx (default %(default)s)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.clients < 1 or not 0 < args.duration <= 600 or args.batch_size < 1:
        parser.error("expected --clients >= 1, 0 < --duration <= 600 and --batch-size >= 1")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - {"in-process", "rest", "grpc"}:
        parser.error(f"expected --modes among in-process, rest and grpc, got {args.modes!r}")

    with tempfile.TemporaryDirectory(prefix="tfcv-serve-load-") as tmp:
        base = args.model_base_path or export_reference(tmp)
        versions = sorted(int(v) for v in os.listdir(base) if v.isdigit())
        loaded = tf.saved_model.load(os.path.join(base, str(versions[-1])))
        signature = loaded.signatures["serving_default"]
        ((name, spec),) = signature.structured_input_signature[1].items()
        shape = (args.batch_size, *spec.shape[1:])
        x = np.random.default_rng(0).random(shape).astype(spec.dtype.as_numpy_dtype)

        rest_port, grpc_port = free_port(), free_port()
        with open(os.path.join(tmp, "server.log"), "w") as log:
            server = start_server(args, base, rest_port, grpc_port, log)
            try:
                tensor = tf.constant(x)
                body = json.dumps({"instances": x.tolist()}).encode()
                rest_call = rest_caller(args.rest_client, rest_port, f"/v1/models/{args.model_name}:predict", body)
                request = predict_pb2.PredictRequest()
                request.model_spec.name = args.model_name
                request.inputs[name].CopyFrom(tf.make_tensor_proto(x))
                channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
                stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
                calls = {
                    "in-process": lambda: signature(**{name: tensor}),
                    "rest": rest_call,
                    "grpc": lambda: grpc_call(stub, request),
                }
                print(f"server pid {server.pid}", flush=True)
                results = {}
                for mode in modes:
                    pid = None if mode == "in-process" else server.pid
                    cpu, own = process_cpu_seconds(pid), process_cpu_seconds()
                    results[mode] = run_clients(args.clients, args.duration, calls[mode])
                    cpu, own = process_cpu_seconds(pid) - cpu, process_cpu_seconds() - own
                    count = max(results[mode]["requests"], 1)
                    results[mode]["cpu_ms_per_request"] = cpu * 1e3 / count
                    results[mode]["client_cpu_ms_per_request"] = own * 1e3 / count
                channel.close()
            finally:
                server.terminate()
                server.wait(timeout=30)

    print(f"{args.clients} clients x {args.duration:g} s, batch size {args.batch_size}, "
          f"server batching {args.enable_batching}, REST client {args.rest_client}, "
          f"{os.cpu_count()} CPUs shared by clients and server")
    print(f"{'mode':<11} {'requests/s':>11} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9} {'errors':>7} "
          f"{'CPU ms/req':>10} {'client CPU':>10}")
    for mode, r in results.items():
        print(f"{mode:<11} {r['requests_per_s']:>11.1f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['requests']:>9d} {r['errors']:>7d} {r['cpu_ms_per_request']:>10.3f} "
              f"{r['client_cpu_ms_per_request']:>10.3f}")
    for mode, r in results.items():
        if r["first_error"]:
            print(f"{mode}: first error: {r['first_error']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "results": results}, f, indent=2)
    return 1 if any(r["errors"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
