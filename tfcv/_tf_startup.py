"""TensorFlow's start, with the log lines it prints while it loads kept off stderr.

TensorFlow 2.21 logs while its libraries load, before it reads
`TF_CPP_MIN_LOG_LEVEL` (oneDNN's and the CUDA stub's INFO lines, and absl's
notice that they come before `absl::InitializeLog()`), so that variable cannot
silence them; and on a machine without a CUDA driver, the cuInit failure that
follows is logged as an ERROR. `start_tensorflow` imports TensorFlow and finds
its devices with stderr going through a filter that drops the log lines below
`TF_CPP_MIN_LOG_LEVEL`, absl's notice with them, and the cuInit failure once
the stub has said there is no driver; everything else passes, and once
TensorFlow has started stderr is the process' own again.

The `tfcv` command calls it first thing, and every joblib worker of
`n_jobs` calls it when it starts (`tfcv._parallel`), before a task (whose
arguments import Keras) reaches it. This module imports nothing of
TensorFlow or tfcv, so that a worker can run it before anything else.
"""

from __future__ import annotations

import os
import sys

__all__ = ["filter_command", "start_tensorflow"]

# A child process rather than a thread, so that what TensorFlow says before
# aborting (a FATAL line) still gets out.
_FILTER = r"""
import re, sys
level = int(sys.argv[1])
log = re.compile(rb"([IWEF])\d{4} [\d:.]+ +\d+ [^\]]+\] |\d{4}-\d\d-\d\d [\d:.]+: ([IWEF]) ")
no_driver = False
for line in sys.stdin.buffer:
    match = log.match(line)
    severity = match and (match.group(1) or match.group(2)).decode()
    no_driver = no_driver or (severity == "I" and b"Could not find cuda drivers" in line)
    if (
        (severity and "IWEF".index(severity) < level)
        or (level and line.startswith(b"WARNING: All log messages before absl::InitializeLog()"))
        or (no_driver and severity == "E" and b"failed call to cuInit" in line)
    ):
        continue
    sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()
"""


def filter_command(level: int) -> list[str]:
    """The command of the filter process: reads log lines on stdin and
    writes those TensorFlow's log `level` (`TF_CPP_MIN_LOG_LEVEL`) keeps."""
    return [sys.executable, "-I", "-S", "-c", _FILTER, str(level)]


def start_tensorflow() -> None:
    """Imports TensorFlow and finds its devices, with the startup log lines
    that `TF_CPP_MIN_LOG_LEVEL` does not reach filtered out of stderr.

    Does nothing once TensorFlow is imported, and only imports it when the
    level is unset or `0` (nothing to filter) or stderr cannot be filtered.
    """
    if "tensorflow" in sys.modules:
        return
    try:
        level = int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        level = 0
    if level <= 0:
        import tensorflow  # noqa: F401

        return
    import subprocess

    sys.stderr.flush()
    saved = None
    try:
        saved = os.dup(2)
        child = subprocess.Popen(filter_command(level), stdin=subprocess.PIPE, stdout=saved, stderr=saved)
    except (OSError, ValueError):
        # No stderr to filter, or no interpreter to filter it with.
        if saved is not None:
            os.close(saved)
        import tensorflow  # noqa: F401

        return
    os.dup2(child.stdin.fileno(), 2)
    child.stdin.close()
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        sys.stderr.flush()
        # The child ends when the pipe's last writer (this fd 2) is gone.
        os.dup2(saved, 2)
        os.close(saved)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
