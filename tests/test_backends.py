"""tfcv._parallel.joblib_backend: the joblib backends `n_jobs` runs on."""

from __future__ import annotations

import os
import sys

import joblib
import pytest

from tfcv._parallel import joblib_backend


def _backend_name():
    backend, _ = joblib.parallel.get_active_backend()
    return type(backend).__name__


@pytest.mark.parametrize("name", [None, "loky"])
def test_loky_runs_jobs_in_other_processes(name):
    with joblib_backend(name):
        assert _backend_name() == "LokyBackend"
        pids = joblib.Parallel(n_jobs=2)(joblib.delayed(os.getpid)() for _ in range(4))
    assert os.getpid() not in pids


def test_unknown_backend_names_what_is_accepted():
    with pytest.raises(ValueError, match=r"backend='spark'.*\['loky', 'ray'\]"):
        joblib_backend("spark")


def test_address_needs_ray():
    with pytest.raises(ValueError, match=r"address='auto' with backend='loky'.*backend='ray'"):
        joblib_backend("loky", address="auto")
    with pytest.raises(ValueError, match="address='auto'"):
        joblib_backend(address="auto")


def test_ray_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ImportError, match=r"pip install 'tfcv\[ray\]'"):
        joblib_backend("ray")


@pytest.mark.slow
def test_ray_starts_a_local_cluster_and_shuts_it_down():
    ray = pytest.importorskip("ray", reason="install the ray extra: pip install 'tfcv[ray]'")
    assert not ray.is_initialized()
    with joblib_backend("ray"):
        assert ray.is_initialized()
        assert _backend_name() == "RayBackend"
        assert joblib.Parallel(n_jobs=2)(joblib.delayed(abs)(-i) for i in range(3)) == [0, 1, 2]
    assert not ray.is_initialized()
