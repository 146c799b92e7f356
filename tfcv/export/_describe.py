"""`describe`: a bundle's signatures and metadata as a table (`tfcv inspect`)."""

from __future__ import annotations

import json
import os

from tfcv import bundle
from tfcv.bundle import SERVING_DEFAULT
from tfcv.export._image_bytes import IMAGE_BYTES

__all__ = ["describe"]


def describe(version_dir: str | os.PathLike) -> str:
    """A readable table of a bundle's signatures and metadata (`tfcv inspect`).

    Reads `saved_model.pb` and `assets.extra/tfcv.json` without loading the
    model.

    Args:
        version_dir: `str`. A version directory (`base_path/<version>`).

    Returns:
        The table, as a `str`.
    """
    version_dir = os.path.abspath(os.fspath(version_dir))
    metadata = bundle.read_metadata(version_dir)
    signatures = bundle.read_signature_defs(version_dir)
    rows = [("signature", "", "name", "dtype", "shape")]
    for name in sorted(signatures, key=lambda n: (n != SERVING_DEFAULT, n)):
        first = True
        for kind in ("inputs", "outputs"):
            for key, spec in sorted(signatures[name][kind].items()):
                rows.append((name if first else "", kind[:-1], key, spec["dtype"], _shape_text(spec["shape"])))
                first = False
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    table.insert(1, "-" * len(table[0]))

    info = [
        ("model", f"{metadata.get('model_name')} version {metadata.get('version')}"),
        ("task", f"{metadata.get('task')} ({metadata.get('outputs')})"),
        ("input", _input_text(metadata.get("input_spec") or {})),
    ]
    bytes_signatures = sorted(n for n, s in signatures.items() if IMAGE_BYTES in s["inputs"])
    if bytes_signatures:
        info.append((IMAGE_BYTES, "encoded JPEG, PNG, GIF or BMP files (base64 over REST), decoded and resized "
                                  f"in the model; in {', '.join(bytes_signatures)}"))
    if metadata.get("class_names"):
        info.append(("classes", ", ".join(metadata["class_names"])))
    info.append(("folds", str(metadata.get("n_folds"))))
    scores = metadata.get("scores")
    if scores:
        for metric, mean in scores["mean"].items():
            per_fold = ", ".join("nan" if v is None else f"{v:.4f}" for v in scores["per_fold"][metric])
            info.append((f"cv {metric}", f"{_fmt(mean)} ± {_fmt(scores['std'][metric])}  (folds: {per_fold})"))
        for metric, value in (scores.get("test") or {}).items():
            info.append((f"test {metric}", _fmt(value)))
    randomized = metadata.get("randomized")
    info.append(("randomized", "off" if not randomized else ", ".join(
        f"{k}={v}" for k, v in randomized.items())))
    warmup = metadata.get("warmup")
    info.append(("warmup", f"{warmup['records']} records" if warmup else "none"))
    info.append(("versions", ", ".join(f"{k} {v}" for k, v in (metadata.get("versions") or {}).items())))
    info.append(("created", str(metadata.get("created"))))
    for key, value in (metadata.get("metadata") or {}).items():
        info.append((key, json.dumps(value)))
    width = max(len(k) for k, _ in info)
    return "\n".join(
        [f"Bundle {version_dir}", "", *table, "", "Metadata"] + [f"  {k.ljust(width)}  {v}" for k, v in info]
    )


def _input_text(spec: dict) -> str:
    text = f"{spec.get('name')} {spec.get('dtype')} {_shape_text(spec.get('shape'))}"
    if spec.get("dtype") == "string":
        # A string input has no value range: it is raw text the model vectorizes itself.
        return f"{text} raw UTF-8 text, one sentence per example, vectorized in the model"
    if spec.get("range") is None:
        return f"{text} range unknown"
    low, high = spec["range"]
    return f"{text} range [{low:g}, {high:g}]"


def _shape_text(shape) -> str:
    return "?" if shape is None else "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _fmt(value) -> str:
    return "nan" if value is None else f"{value:.4f}"
