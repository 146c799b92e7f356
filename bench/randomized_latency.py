"""Latency of the randomized signature against the deterministic one.

For two models it exports a bundle with `Randomized(samples=S)` and one with
`Randomized(samples=1)`, reloads them, and times at batch size 1:

- `serving_default`: one deterministic forward pass;
- `predict_randomized` (S samples): S randomized passes in one vectorized call;
- a Python loop of S calls to the `samples=1` randomized signature, which is
  what the vectorized signature replaces.

The models: `mc_dropout` is the reference CNN of `tfcv run` (dropout before
its classifier, so the convolutional body runs once and only the head runs S
times); `augmentation+mc_dropout` puts an `Augmentation` layer in front of it,
so all S passes run the whole network.

The target is a vectorized randomized call under 2x the deterministic one.

Usage:

    python bench/randomized_latency.py [--samples 16] [--batch-size 1] [--repeats 300] [--json out.json] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfcv  # noqa: E402
from tfcv.export import Randomized, export_saved_model  # noqa: E402

TARGET_RATIO = 2.0


def build_model(augmentation: bool) -> keras.Model:
    keras.utils.set_random_seed(0)
    cnn = tfcv.models.reference_cnn((8, 8, 1), 10)
    if not augmentation:
        return cnn
    inputs = keras.Input((8, 8, 1), name="image")
    augmented = tfcv.layers.Augmentation([{"translate": 0.1}, {"contrast": 0.2}], seed=0)(inputs)
    return keras.Model(inputs, cnn(augmented), name="augmented_cnn")


def time_call(fn, repeats: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def summarize(times: list[float]) -> dict:
    ordered = sorted(times)
    return {
        "median_ms": statistics.median(ordered),
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))],
        "mean_ms": statistics.fmean(ordered),
    }


def measure(model, args, base) -> dict:
    x = tf.constant(np.random.default_rng(0).random((args.batch_size, 8, 8, 1), dtype="float32"))
    vectorized = tf.saved_model.load(export_saved_model(
        model, os.path.join(base, f"{model.name}_vectorized"), randomized=Randomized(args.samples), warmup=False,
    )).signatures
    single = tf.saved_model.load(export_saved_model(
        model, os.path.join(base, f"{model.name}_single"), randomized=Randomized(1), warmup=False,
    )).signatures["predict_randomized"]
    deterministic, randomized = vectorized["serving_default"], vectorized["predict_randomized"]

    def loop():
        return [single(image=x) for _ in range(args.samples)]

    results = {
        "deterministic": summarize(time_call(lambda: deterministic(image=x), args.repeats)),
        "randomized": summarize(time_call(lambda: randomized(image=x), args.repeats)),
        "python_loop": summarize(time_call(loop, max(20, args.repeats // args.samples))),
    }
    for r in results.values():
        r["ratio"] = r["median_ms"] / results["deterministic"]["median_ms"]
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 if the mc_dropout ratio is not under {TARGET_RATIO}")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as base:
        configs = {
            "mc_dropout": measure(build_model(augmentation=False), args, base),
            "augmentation+mc_dropout": measure(build_model(augmentation=True), args, base),
        }
    report = {
        "samples": args.samples, "batch_size": args.batch_size, "repeats": args.repeats,
        "cpu_count": os.cpu_count(), "load_average": os.getloadavg()[0],
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "target_ratio": TARGET_RATIO, "models": configs,
    }
    print(f"samples={args.samples}, batch size {args.batch_size}, {args.repeats} timed calls "
          f"(TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    labels = {
        "deterministic": "serving_default",
        "randomized": f"predict_randomized (samples={args.samples})",
        "python_loop": f"Python loop of {args.samples} x samples=1 calls",
    }
    for config, results in configs.items():
        print(f"\n{config:<42}{'median ms':>10}{'p90 ms':>10}{'x det.':>8}")
        for key, label in labels.items():
            r = results[key]
            print(f"  {label:<40}{r['median_ms']:>10.3f}{r['p90_ms']:>10.3f}{r['ratio']:>8.2f}")
        met = results["randomized"]["ratio"] < TARGET_RATIO
        print(f"  target randomized < {TARGET_RATIO}x deterministic: {'met' if met else 'NOT met'}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    met = configs["mc_dropout"]["randomized"]["ratio"] < TARGET_RATIO
    return 0 if met or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
