"""`verify`: load a bundle as TF Serving would and replay its warmup records."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from tfcv import bundle
from tfcv.bundle import METADATA_FILE, PREDICT_METHOD, SERVING_DEFAULT, BundleError
from tfcv.export._calibrated import PREDICT_SET
from tfcv.export._signatures import PREDICT_FOLDS, PREDICT_RANDOMIZED, random_tensor

__all__ = ["verify"]


def verify(version_dir: str | os.PathLike, *, fresh_process: bool = True) -> dict:
    """Checks a bundle as TF Serving would load it, and raises on any defect.

    Loads the bundle with `tf.saved_model.load` (tag `serve`), checks that
    every expected signature exists as a `tensorflow/serving/predict` method
    with the input and output specs declared in `assets.extra/tfcv.json`,
    replays every warmup record through its signature (or, without warmup
    file, one random batch per signature) and checks that every output is
    finite and shaped as declared.

    Args:
        version_dir: `str`. A version directory (`base_path/<version>`).
        fresh_process: `bool`. Load the bundle in a fresh Python process, so
            nothing from this process (registered classes, traced functions)
            can help it load. Defaults to `True`.

    Returns:
        A `dict` report: `signatures` (names) and `replayed` (records run).

    Raises:
        BundleError: With a message naming the file, signature or warmup
            record and the problem.

    Example:

    >>> tfcv.export.verify("serving/models/digits/1")
    {'signatures': ['predict_folds', 'predict_randomized', 'serving_default'], 'replayed': 9}
    """
    version_dir = os.path.abspath(os.fspath(version_dir))
    if not fresh_process:
        return check_bundle(version_dir)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    # `tfcv verify --json` in a fresh process: the one place that writes the report line.
    proc = subprocess.run(
        [sys.executable, "-m", "tfcv", "verify", "--json", version_dir],
        capture_output=True, text=True, env=env, check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if lines:
        report = json.loads(lines[-1])
        if report.get("ok"):
            return {"signatures": report["signatures"], "replayed": report["replayed"]}
        raise BundleError(report["error"])
    tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
    raise BundleError(f"Verifying {version_dir!r} crashed the verifier process (exit {proc.returncode}): {tail}")


def check_bundle(version_dir: str, *, loaded=None) -> dict:
    """`verify` in this process; `loaded` reuses an already loaded bundle."""
    metadata = bundle.read_metadata(version_dir)
    declared = metadata.get("signatures") or {}
    expected = [SERVING_DEFAULT]
    if int(metadata.get("n_folds") or 1) > 1:
        expected.append(PREDICT_FOLDS)
    if metadata.get("randomized"):
        expected.append(PREDICT_RANDOMIZED)
    if metadata.get("conformal"):
        expected.append(metadata["conformal"].get("signature") or PREDICT_SET)
    for name in expected:
        if name not in declared:
            raise BundleError(f"{version_dir}: {METADATA_FILE} does not declare the expected signature {name!r}.")

    on_disk = bundle.read_signature_defs(version_dir)
    for name in expected:
        if name not in on_disk:
            raise BundleError(
                f"{version_dir}: signature {name!r} is missing from saved_model.pb "
                f"(present: {sorted(on_disk)})."
            )
        found = on_disk[name]
        if found["method_name"] != PREDICT_METHOD:
            raise BundleError(
                f"{version_dir}: signature {name!r} has method {found['method_name']!r}, expected {PREDICT_METHOD!r}."
            )
        for kind in ("inputs", "outputs"):
            _compare_specs(version_dir, name, kind, declared[name][kind], found[kind])

    if loaded is None:
        if not os.path.isfile(os.path.join(version_dir, bundle.VARIABLES_INDEX)):
            # TensorFlow would blame the device ("You may be trying to load on a different device").
            raise BundleError(f"{version_dir}: {bundle.VARIABLES_INDEX} is missing, so the variables cannot be restored.")
        try:
            loaded = tf.saved_model.load(version_dir, tags=[bundle.SERVE_TAG])
        except Exception as error:  # noqa: BLE001 - any load failure is the bundle's defect
            raise BundleError(f"{version_dir}: tf.saved_model.load failed: {' '.join(str(error).split())}") from error
    for name in expected:
        if name not in loaded.signatures:
            raise BundleError(f"{version_dir}: the loaded bundle has no signature {name!r}.")

    warmup_path = os.path.join(version_dir, bundle.WARMUP_PATH)
    if os.path.exists(warmup_path):
        requests = [
            (f"warmup record {i}", request.model_spec.signature_name or SERVING_DEFAULT,
             {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()})
            for i, request in enumerate(bundle.read_warmup(version_dir))
        ]
    elif metadata.get("warmup"):
        raise BundleError(f"{version_dir}: {METADATA_FILE} declares warmup records but {warmup_path} is missing.")
    else:
        rng = np.random.default_rng(0)
        spec = metadata["input_spec"]
        shape = [d if d is not None else 2 for d in spec["shape"]]
        requests = [
            (f"random batch for {name!r}", name, {spec["name"]: random_tensor(rng, shape, spec["dtype"], spec["range"])})
            for name in expected
        ]

    for label, name, inputs in requests:
        _replay(version_dir, loaded, declared, label, name, inputs)
    return {"signatures": sorted(expected), "replayed": len(requests)}


def _compare_specs(version_dir, signature, kind, declared: dict, found: dict) -> None:
    if set(declared) != set(found):
        raise BundleError(
            f"{version_dir}: signature {signature!r} has {kind} {sorted(found)}, expected {sorted(declared)}."
        )
    for key, spec in declared.items():
        if spec["dtype"] != found[key]["dtype"] or spec["shape"] != found[key]["shape"]:
            raise BundleError(
                f"{version_dir}: signature {signature!r} {kind[:-1]} {key!r} is {found[key]['dtype']} "
                f"{found[key]['shape']}, expected {spec['dtype']} {spec['shape']}."
            )


def _replay(version_dir, loaded, declared, label, name, inputs) -> None:
    where = f"{version_dir}: {label} (signature {name!r})"
    if name not in loaded.signatures or name not in declared:
        raise BundleError(f"{where}: the bundle has no such signature.")
    spec = declared[name]
    if set(inputs) != set(spec["inputs"]):
        raise BundleError(f"{where}: inputs {sorted(inputs)} do not match the signature's {sorted(spec['inputs'])}.")
    batch = None
    for key, value in inputs.items():
        expected = spec["inputs"][key]
        if value.dtype.name != expected["dtype"] and tf.as_dtype(value.dtype).name != expected["dtype"]:
            raise BundleError(f"{where}: input {key!r} has dtype {value.dtype}, expected {expected['dtype']}.")
        if not _shape_matches(value.shape, expected["shape"]):
            raise BundleError(f"{where}: input {key!r} has shape {list(value.shape)}, expected {expected['shape']}.")
        batch = value.shape[0] if value.ndim else None
    try:
        outputs = loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
    except Exception as error:  # noqa: BLE001 - any failure of a signature is the bundle's defect
        raise BundleError(f"{where}: running it failed: {error}") from error
    if set(outputs) != set(spec["outputs"]):
        raise BundleError(f"{where}: returned outputs {sorted(outputs)}, declared {sorted(spec['outputs'])}.")
    for key, value in outputs.items():
        value = np.asarray(value)
        shape = spec["outputs"][key]["shape"]
        if not _shape_matches(value.shape, shape) or (batch is not None and value.ndim and value.shape[0] != batch):
            raise BundleError(
                f"{where}: output {key!r} has shape {list(value.shape)}, declared {shape} with batch {batch}."
            )
        if np.issubdtype(value.dtype, np.number) and not np.all(np.isfinite(value)):
            raise BundleError(f"{where}: output {key!r} holds non-finite values (NaN or infinity).")


def _shape_matches(shape, declared) -> bool:
    if declared is None:
        return True
    return len(shape) == len(declared) and all(d is None or d == s for s, d in zip(shape, declared))
