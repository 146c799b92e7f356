"""Batching: concurrent requests to one signature become one model call.

As TF Serving's `--enable_batching`, requests that arrive within a short
window are concatenated on the batch axis, run through the model once and
split back. A batch closes when it holds `max_batch_size` rows, when
`batch_timeout_micros` have passed since its first request, or as soon as
it holds every request in flight (waiting longer could only delay them:
their clients are waiting for these answers, so a lone request runs at
once); while the batch threads are busy, new requests queue up and form the
next batch, so a loaded server batches more and an idle one adds no
latency. One thread forms a batch at a time, as TF Serving's scheduler
does, while the others run theirs.

Each request gets a `concurrent.futures.Future`: a thread blocks on it
(`submit`), an event loop awaits it (`try_submit` and
`asyncio.wrap_future`) without a thread of its own, and a request whose
future was cancelled (a REST timeout) before its batch ran is dropped.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np

__all__ = ["BatchingOptions", "Batcher"]

Arrays = Mapping[str, np.ndarray]

_STOP = object()


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """How requests are batched, as TF Serving's batching parameters.

    Args:
        max_batch_size: `int`. Most rows in one model call. A request with
            more rows runs on its own. Defaults to `64`.
        batch_timeout_micros: `int`. Longest wait, in microseconds, for more
            requests after the first one of a batch. Defaults to `1000`.
        num_batch_threads: `int`. Batches of one signature that run at the
            same time. Defaults to the number of CPUs.
    """

    max_batch_size: int = 64
    batch_timeout_micros: int = 1000
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)

    def __post_init__(self):
        for name, minimum in (("max_batch_size", 1), ("batch_timeout_micros", 0), ("num_batch_threads", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"Invalid value for argument `{name}`. Received: {name}={value!r}. "
                    f"Expected an int >= {minimum}."
                )


class _Task:
    __slots__ = ("inputs", "rows", "future")

    def __init__(self, inputs: Arrays, rows: int):
        self.inputs = inputs
        self.rows = rows
        self.future: concurrent.futures.Future = concurrent.futures.Future()


class Batcher:
    """Runs `fn` on batches of concurrent requests.

    `fn` maps a dict of input arrays, all with the same leading (batch)
    dimension, to a dict of output arrays with that same leading dimension.
    `submit` may be called from any number of threads; each call blocks
    until its own rows of the outputs are ready.

    Args:
        fn: Callable taking and returning a dict of NumPy arrays.
        options: A `BatchingOptions`. Defaults to `BatchingOptions()`.

    Example:

    >>> batcher = Batcher(lambda x: {"y": x["x"] * 2})
    >>> batcher.submit({"x": np.ones((3, 4))})["y"].shape
    (3, 4)
    >>> batcher.close()
    """

    def __init__(self, fn: Callable[[Arrays], Arrays], options: BatchingOptions | None = None):
        self.fn = fn
        self.options = options or BatchingOptions()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._collecting = threading.Lock()
        self._carry = None
        # Requests queued, being batched or running: a batch holding all of
        # them has nothing left to wait for.
        self._in_flight = 0
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"tfcv-batch-{i}", daemon=True)
            for i in range(self.options.num_batch_threads)
        ]
        for thread in self._threads:
            thread.start()

    def __repr__(self) -> str:
        return f"Batcher(fn={self.fn!r}, options={self.options!r})"

    def submit(self, inputs: Arrays) -> dict[str, np.ndarray]:
        """Runs `fn` on `inputs`, batched with concurrent calls.

        Args:
            inputs: Dict of arrays sharing their leading dimension.

        Returns:
            Dict of output arrays for these rows only.
        """
        future = self.try_submit(inputs)
        return dict(self.fn(inputs)) if future is None else future.result()

    def try_submit(self, inputs: Arrays) -> concurrent.futures.Future | None:
        """Queues `inputs` for a batch without waiting for it.

        Args:
            inputs: Dict of arrays sharing their leading dimension.

        Returns:
            A `concurrent.futures.Future` of the output arrays for these
            rows, or `None` when the request cannot be batched (no shared
            batch dimension, more rows than `max_batch_size`, or the batcher
            is closed): the caller then calls `fn` itself.
        """
        rows = _batch_rows(inputs)
        if rows is None or rows > self.options.max_batch_size:
            return None
        task = _Task(inputs, rows)
        with self._lock:
            if self._closed:
                # A request that picked this model version just before it was
                # unloaded still gets its answer, from the caller's call.
                return None
            self._queue.put(task)
            self._in_flight += 1
        return task.future

    def close(self) -> None:
        """Finishes the queued requests, then stops the batch threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._queue.put(_STOP)

    def _work(self) -> None:
        while True:
            # One thread forms a batch at a time, as TF Serving's scheduler
            # does, while the others run theirs: two threads both waiting on
            # the queue would share the requests of one window, each running
            # half a batch (and the model twice).
            with self._collecting:
                batch, stop = self._collect()
            if batch:
                self._run(batch)
            if stop:
                return

    def _collect(self) -> tuple[list[_Task], bool]:
        """The next batch, and whether this thread got its stop signal."""
        limit = self.options.max_batch_size
        first = self._carry if self._carry is not None else self._queue.get()
        self._carry = None
        if first is _STOP:
            return [], True
        batch, rows = [first], first.rows
        deadline = time.monotonic() + self.options.batch_timeout_micros / 1e6
        while rows < limit and len(batch) < self._in_flight:
            remaining = deadline - time.monotonic()
            try:
                task = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if task is _STOP:
                return batch, True
            if rows + task.rows > limit or not _compatible(first.inputs, task.inputs):
                self._carry = task
                break
            batch.append(task)
            rows += task.rows
        return batch, False

    def _run(self, batch: list[_Task]) -> None:
        try:
            # A cancelled request (its REST timeout passed) is not run.
            running = [task for task in batch if task.future.set_running_or_notify_cancel()]
            if running:
                self._execute(running)
        finally:
            with self._lock:
                self._in_flight -= len(batch)

    def _execute(self, batch: list[_Task]) -> None:
        try:
            if len(batch) == 1:
                results = [dict(self.fn(batch[0].inputs))]
            else:
                results = self._run_merged(batch)
        except BaseException as error:  # noqa: BLE001 - handed to the waiting request
            if len(batch) > 1:
                # One bad request must not fail the others batched with it.
                for task in batch:
                    self._execute([task])
                return
            batch[0].future.set_exception(error)
            return
        for task, outputs in zip(batch, results, strict=True):
            task.future.set_result(outputs)

    def _run_merged(self, batch: list[_Task]) -> list[dict[str, np.ndarray]]:
        names = list(batch[0].inputs)
        merged = {name: np.concatenate([task.inputs[name] for task in batch]) for name in names}
        outputs = self.fn(merged)
        total = sum(task.rows for task in batch)
        for name, value in outputs.items():
            if np.ndim(value) == 0 or np.shape(value)[0] != total:
                raise ValueError(
                    f"Output {name!r} of a batch of {total} rows has shape {np.shape(value)}; "
                    "cannot split it back into requests."
                )
        offsets = np.cumsum([task.rows for task in batch])[:-1]
        split = {name: np.split(np.asarray(value), offsets) for name, value in outputs.items()}
        return [{name: parts[i] for name, parts in split.items()} for i in range(len(batch))]


def _batch_rows(inputs: Arrays) -> int | None:
    """The shared leading dimension of `inputs`, or `None` if there is none."""
    rows = {np.shape(value)[0] if np.ndim(value) else None for value in inputs.values()}
    if len(rows) != 1:
        return None
    (value,) = rows
    return value if value else None


def _compatible(a: Arrays, b: Arrays) -> bool:
    return a.keys() == b.keys() and all(
        np.shape(a[name])[1:] == np.shape(b[name])[1:] and np.asarray(a[name]).dtype == np.asarray(b[name]).dtype
        for name in a
    )
