"""tfcv._tf_startup: TensorFlow's startup log lines kept off stderr.

The filter on its own here; `tfcv` commands (tests/test_cli.py) and `n_jobs`
workers (tests/test_parallel.py) end to end.
"""

from __future__ import annotations

import subprocess

from tfcv._tf_startup import filter_command


def _filtered(level, lines):
    lines = "".join(line + "\n" for line in lines)
    proc = subprocess.run(filter_command(level), input=lines, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_the_startup_filter_drops_only_what_the_log_level_asks_and_the_missing_driver():
    notice = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
    info = "I0000 00:00:1796223723.135122   19001 port.cc:153] oneDNN custom operations are on."
    no_driver = "I0000 00:00:1796223723.135423   19001 cudart_stub.cc:31] Could not find cuda drivers on your machine"
    warning = "W0000 00:00:1796223723.2   19001 some.cc:1] a warning"
    old_info = "2026-12-02 14:52:09.123456: I tensorflow/core/platform/cpu_feature_guard.cc:182] old-style info"
    cuinit = "E0000 00:00:1796223725.3   19001 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)"
    error = "E0000 00:00:1796223725.4   19001 kernel.cc:9] a real error"
    fatal = "F0000 00:00:1796223725.5   19001 cpu_feature_guard.cc:9] compiled to use AVX instructions"
    python = "/work/x.py:3: UserWarning: not TensorFlow's"
    everything = [notice, info, no_driver, warning, old_info, cuinit, error, fatal, python]
    assert _filtered(2, everything) == [error, fatal, python]
    assert _filtered(1, everything) == [warning, error, fatal, python]
    assert _filtered(3, everything) == [fatal, python]
    # With a driver that fails (no stub line before it), cuInit's failure is an error to see.
    assert _filtered(2, [cuinit, error]) == [cuinit, error]


