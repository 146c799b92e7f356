"""Posts image files to a TF Serving REST API (TensorFlow Serving or `tfcv serve`).

The bundle must be exported with `tfcv export --image-bytes` (or
`export_saved_model(..., image_bytes=True)`): its `serving_bytes` signature
takes `image_bytes`, encoded JPEG, PNG, GIF or BMP files, which the REST API
carries as base64 (`{"b64": "..."}`, as TF Serving expects) and the model
decodes, resizes and scales itself. Prints the predicted class of each file
(by name with `--class-names` or a bundle's `--bundle` metadata). Only the
Python standard library is needed.

Usage:

    python serving/clients/rest_image_client.py photo1.jpg photo2.png [--url http://localhost:8501]
        [--model photos] [--bundle serving/models/photos/1] [--randomized]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.request


def call(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode("utf-8"), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        sys.exit(f"{error.code} from {url}: {error.read().decode('utf-8', 'replace')}")
    except OSError as error:  # refused, unknown host, timed out (URLError is one)
        sys.exit(f"Cannot reach {url}: {getattr(error, 'reason', error)}. Is TF Serving's REST API (tfcv serve or "
                 "tensorflow_model_server --rest_api_port) listening at --url?")


def class_names(args) -> list[str] | None:
    if args.class_names:
        return args.class_names.split(",")
    if args.bundle:
        path = os.path.join(args.bundle, "assets.extra", "tfcv.json")
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f).get("class_names")
        except (OSError, ValueError) as error:
            sys.exit(f"--bundle {args.bundle}: cannot read {path} ({error}). Expected a version directory "
                     "that tfcv exported.")
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, GIF, BMP)")
    parser.add_argument("--url", default="http://localhost:8501", help="REST address (default %(default)s)")
    parser.add_argument("--model", default="digits", help="model name (default %(default)s)")
    parser.add_argument("--class-names", help="comma-separated class names, in the model's order")
    parser.add_argument("--bundle", help="version directory whose tfcv.json holds the class names")
    parser.add_argument("--randomized", action="store_true",
                        help="ask predict_randomized_bytes (mean ± std over randomized passes)")
    args = parser.parse_args(argv)
    names = class_names(args)

    instances = []
    for path in args.images:
        try:
            with open(path, "rb") as f:
                instances.append({"b64": base64.b64encode(f.read()).decode("ascii")})
        except OSError as error:
            parser.error(f"cannot read the image file {path!r}: {error.strerror}")
    signature = "predict_randomized_bytes" if args.randomized else "serving_bytes"
    url = f"{args.url.rstrip('/')}/v1/models/{args.model}:predict"
    predictions = call(url, {"signature_name": signature, "instances": instances})["predictions"]
    for path, prediction in zip(args.images, predictions):
        probabilities = prediction["mean"] if args.randomized else prediction
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        label = names[best] if names else str(best)
        spread = f" ± {prediction['std'][best]:.3f}" if args.randomized else ""
        print(f"{path}: {label} (p={probabilities[best]:.3f}{spread})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
