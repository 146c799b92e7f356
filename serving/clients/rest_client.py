"""Calls a TF Serving REST API (TensorFlow Serving or `tfcv serve`) for digits.

Asks the model's metadata for its input, sends a few 8x8 digits (or random
inputs of the model's shape when scikit-learn is missing) to
`serving_default` in the row format and to `predict_randomized` in the
columnar format, and prints each prediction with its uncertainty. Only the
Python standard library is needed (scikit-learn, if present, supplies the
digits).

Usage:

    python serving/clients/rest_client.py [--url http://localhost:8501] [--model digits] [--count 3]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import urllib.error
import urllib.request


def call(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            # TF Serving writes NaN and Infinity; json.loads reads them.
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        message = error.read().decode("utf-8", "replace")
        sys.exit(f"{error.code} from {url}: {message}")
    except OSError as error:  # refused, unknown host, timed out (URLError is one)
        sys.exit(f"Cannot reach {url}: {getattr(error, 'reason', error)}. Is TF Serving's REST API (tfcv serve or "
                 "tensorflow_model_server --rest_api_port) listening at --url?")


def input_spec(metadata: dict) -> tuple[str, list[int]]:
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    ((name, info),) = signature["inputs"].items()
    return name, [int(d["size"]) for d in info["tensor_shape"]["dim"]][1:]


def sample_inputs(shape: list[int], count: int) -> tuple[list, list]:
    if shape == [8, 8, 1]:
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            pass
        else:
            digits = load_digits()
            images = [[[[v / 16.0] for v in row] for row in image] for image in digits.images[:count].tolist()]
            return images, [int(t) for t in digits.target[:count]]
    rng = random.Random(0)

    def fill(dims):
        return [fill(dims[1:]) for _ in range(dims[0])] if dims else rng.random()

    return [fill(shape) for _ in range(count)], [None] * count


def argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://localhost:8501", help="REST address (default %(default)s)")
    parser.add_argument("--model", default="digits", help="model name (default %(default)s)")
    parser.add_argument("--count", type=int, default=3, help="how many inputs to send (default %(default)s)")
    args = parser.parse_args(argv)
    base = f"{args.url.rstrip('/')}/v1/models/{args.model}"

    status = call(base)["model_version_status"]
    print("versions:", ", ".join(f"{s['version']} {s['state']}" for s in status))
    name, shape = input_spec(call(f"{base}/metadata"))
    images, labels = sample_inputs(shape, args.count)

    # Row format: one entry per instance; answered with "predictions".
    predictions = call(f"{base}:predict", {"instances": images})["predictions"]
    # Columnar format: one tensor per input name; answered with "outputs".
    randomized = call(f"{base}:predict", {"signature_name": "predict_randomized", "inputs": {name: images}})["outputs"]

    for i, label in enumerate(labels):
        probabilities = predictions[i]
        predicted = argmax(probabilities)
        mean, std = randomized["mean"][i], randomized["std"][i]
        entropy = randomized.get("predictive_entropy", [math.nan] * len(labels))[i]
        agreement = randomized.get("agreement", [math.nan] * len(labels))[i]
        truth = "" if label is None else f"label {label}: "
        print(
            f"{truth}predicted {predicted} (p={probabilities[predicted]:.3f}) | randomized: "
            f"{argmax(mean)} p={mean[argmax(mean)]:.3f} ± {std[argmax(mean)]:.3f}, "
            f"entropy {entropy:.3f} nats, agreement {agreement:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
