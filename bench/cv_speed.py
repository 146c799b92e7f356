"""Cross-validation wall time: the hand-written Keras loop against tfcv.

One command, one run, one table. Every figure is the median of --repeats
runs; the ratio column divides by the hand-written loop's median measured
in the same run.

    python bench/cv_speed.py                 # digits, reference CNN, 5 folds x 10 epochs, batch 64
    python bench/cv_speed.py --repeats 1 --epochs 3 --no-ray

Rows:
  hand-written loop   StratifiedKFold, a fresh compiled model per fold, fit and evaluate
  tfcv sequential     CrossValidator(...).fit(...)
  tfcv n_jobs=2       folds in two local processes (joblib's loky backend)
  tfcv n_jobs=2 ray   folds as tasks on a local 2-CPU Ray cluster (if ray is installed)

The stacked strategy (all folds in one graph, issue #8) is not implemented
yet; its row will join this table.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def hand_written_loop(x, y, *, folds, epochs, batch_size, seed):
    """What a user writes by hand: no tfcv at all."""
    import keras
    from sklearn.model_selection import StratifiedKFold

    from tfcv.models import reference_cnn

    accuracies = []
    for train, val in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        keras.utils.set_random_seed(seed)
        model = reference_cnn(x.shape[1:], 10)
        model.fit(x[train], y[train], epochs=epochs, batch_size=batch_size, verbose=0)
        _, accuracy = model.evaluate(x[val], y[val], verbose=0)
        accuracies.append(accuracy)
    return accuracies


def tfcv_run(x, y, *, folds, epochs, batch_size, seed, n_jobs=None):
    import tfcv

    build = functools.partial(tfcv.models.reference_cnn, x.shape[1:], 10)
    result = tfcv.CrossValidator(build, folds=folds, seed=seed).fit(
        x, y, epochs=epochs, batch_size=batch_size, verbose=0, n_jobs=n_jobs
    )
    return result.scores["accuracy"]


def tfcv_ray(x, y, **kwargs):
    import joblib
    import ray
    from ray.util.joblib import register_ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    register_ray()
    with joblib.parallel_backend("ray"):
        return tfcv_run(x, y, n_jobs=2, **kwargs)


def measure(fn, repeats, **kwargs):
    times, accuracies = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        accuracies = fn(**kwargs)
        times.append(time.perf_counter() - start)
    return statistics.median(times), accuracies


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray row")
    args = parser.parse_args()

    import tfcv

    x, y = tfcv.datasets.load_digits()
    common = {"folds": args.folds, "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed}
    rows = [
        ("hand-written loop", functools.partial(hand_written_loop, x, y)),
        ("tfcv sequential", functools.partial(tfcv_run, x, y)),
        ("tfcv n_jobs=2", functools.partial(tfcv_run, x, y, n_jobs=2)),
    ]
    if not args.no_ray:
        try:
            import ray  # noqa: F401

            rows.append(("tfcv n_jobs=2 ray", functools.partial(tfcv_ray, x, y)))
        except ImportError:
            print("ray is not installed: skipping the Ray row (pip install 'tfcv[ray]')")
    samples = len(x) * (args.folds - 1) / args.folds * args.folds * args.epochs
    print(f"digits {x.shape}, reference CNN, {args.folds} folds x {args.epochs} epochs, batch {args.batch_size}, "
          f"median of {args.repeats}, {os.cpu_count()} CPU cores")
    header = f"{'strategy':<20} {'wall s':>8} {'train samples/s':>16} {'accuracy':>17} {'x hand loop':>12}"
    print(header)
    print("-" * len(header))
    baseline = None
    for name, fn in rows:
        seconds, accuracies = measure(fn, args.repeats, **common)
        baseline = baseline or seconds
        acc = f"{np.mean(accuracies):.4f} ± {np.std(accuracies):.4f}"
        print(f"{name:<20} {seconds:>8.1f} {samples / seconds:>16.0f} {acc:>17} {seconds / baseline:>12.2f}", flush=True)


if __name__ == "__main__":
    main()
