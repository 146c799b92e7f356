"""Cross-validation wall time: the hand-written Keras loop against tfcv.

One command, one run, one table per workload. Every figure is the median of
--repeats repetitions (default 3). Each repetition runs every row once, in
table order, so that a burst of load on the machine hits one repetition of
each row rather than every repetition of one row. The `x hand loop` column
divides by the hand-written loop's median measured in the same run, and
`x limit` divides by the workload's arithmetic limit on this machine (see
below).

    python bench/cv_speed.py                        # both workloads, median of 3
    python bench/cv_speed.py --markdown             # the same, tables in Markdown (for the README)
    python bench/cv_speed.py --repeats 1 --epochs 2 --synthetic-epochs 1      # quick smoke run
    python bench/cv_speed.py --workload digits --n-jobs --ray                 # add the slow rows

Workloads (--workload digits|synthetic|both, default both):
  digits      tfcv.datasets.load_digits() (1,797 images 8x8x1), tfcv.models.reference_cnn,
              5 folds x 10 epochs (--epochs), batch 64
  synthetic   10,000 images 32x32x3 in 10 classes (--synthetic-samples), made with numpy: each
              class is a fixed random colour template (smooth blobs plus a finer pattern, at 0.5
              contrast around grey), each image its class template shifted by up to 3 whole
              pixels plus Gaussian noise (std 0.3), clipped to [0, 1];
              tfcv.models.reference_cnn(filters=(16, 32, 64)) (three Conv2D-BatchNorm-ReLU-
              MaxPool blocks, global average pooling, dropout, softmax), 5 folds x 1 epoch
              (--synthetic-epochs), batch 64
--folds and --batch-size apply to both workloads.

The synthetic defaults are smaller than first planned (filters 32/64/128 and
3 epochs): on 2 CPU cores that model trains ~200 samples/s, so three rows of
three repetitions would take over an hour. Filters 16/32/64 and one epoch keep
the default run at about 15 minutes on 2 cores.

Rows:
  hand-written loop   what a user writes by hand: scikit-learn StratifiedKFold(shuffle=True),
                      keras.utils.set_random_seed then a fresh compiled model per fold,
                      model.fit(x[train], y[train]) and model.evaluate(x[val], y[val])
  tfcv sequential     CrossValidator(build, strategy="sequential").fit(...)
  tfcv stacked        CrossValidator(build, strategy="stacked").fit(...)
  tfcv n_jobs=2       (--n-jobs) sequential, folds in two local processes (joblib's loky backend)
  tfcv n_jobs=2 ray   (--ray) folds as tasks on a local 2-CPU Ray cluster, if ray is installed
The last two are off by default: on 2 cores they are slow.
  kernel floor        the workload's steps alone, timed with TensorFlow's kernels and nothing else:
                      every fold's train_step on a fixed batch of its training split, all folds
                      in one tf.function loop body (concurrent, as in the stacked graph), for the
                      workload's epochs and steps, then one test_step pass over each held-out
                      split; no data pipeline, no fit loop, no callbacks, building and tracing
                      not counted (see kernel_floor)
  floor + val/epoch   the same with the validation pass after every epoch, as tfcv does: the
                      least any tfcv strategy can take with these kernels

Columns:
  wall s            median wall time of the whole cross-validation
  s/fold            wall s / folds
  train samples/s   training samples processed (sum over folds of len(train) * epochs) / wall s
  accuracy          mean ± std (ddof=0) of the per-fold validation accuracy, last repetition
  x hand loop       wall s / the hand-written loop's wall s
  x floor           wall s / the `floor + val/epoch` row's wall s
  x limit           wall s / the arithmetic limit
  peak MiB          (tfcv rows) how far the resident memory of a fresh process rises during one
                    cross-validation above where it stood once data and libraries were loaded
                    (sampled every 5 ms; one run per row, outside the timed runs)

Scaling (--scaling digits|synthetic|both|none, default digits): for the named workloads, two
more tables without the hand loop: the same workload with 10 folds (--scaling-folds), and with
twice the data (each image and a copy shifted by one pixel, labels repeated; the copies make
the task easier, so compare time, not accuracy). Stacked's s/fold at 10 folds against its s/fold
at 5 says whether putting more copies in one graph costs more per fold.

Arithmetic limit: the machine's float32 matrix-multiply rate is measured once
at start (1024x1024 @ 1024x1024, 20 chained matmuls in one tf.function, best
of 5 timed calls after a warm-up, 2 n^3 FLOPs each). A workload's FLOPs are
3 x forward FLOPs per sample x training samples processed (forward + backward
~ 3 forward) plus 1 x forward FLOPs for each validation sample (len(val) once
per fold). Forward FLOPs per sample are counted from the model's layers:
Conv2D 2 * out_h * out_w * out_channels * kernel_h * kernel_w * in_channels
(/ groups), Dense 2 * in * out; BatchNormalization, activations, pooling and
the rest are ignored (tf.compat.v1.profiler on the frozen forward graph counts
1.6% more for both models, the ignored layers). limit s = FLOPs / measured FLOP/s. Only the hand loop
and the limit follow this accounting exactly: tfcv also validates after every
epoch, then evaluates and predicts each fold's held-out split once more, which
is extra work not counted in the limit.

The hand loop runs with TensorFlow op determinism off, as in a fresh process;
tfcv turns it on (CrossValidator(deterministic=True), process-wide) when it runs.

The kernel floor rows have no accuracy: their models train on fixed batches.

The targets of issue #21 are checked at the end: on the digits, stacked <= 1.3x
`floor + val/epoch` and sequential <= 0.6x the hand-written loop; on the
synthetic workload stacked <= 1.15x `floor + val/epoch`; each at equal accuracy
(|mean - hand mean| <= the hand loop's fold std).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# Issue #21: sequential against the hand loop, stacked against the floor with
# per-epoch validation (what any tfcv strategy must spend with these kernels).
HAND_TARGETS = {"tfcv sequential": 0.6}
FLOOR_TARGETS = {"digits": 1.3, "synthetic": 1.15}
HAND = "hand-written loop"
FLOOR = "kernel floor"
FLOOR_EACH_EPOCH = "floor + val/epoch"


# ------------------------------------------------------------------ workloads


def synthetic_images(n=10_000, *, size=32, channels=3, num_classes=10, shift=3, contrast=0.5, noise=0.3, seed=0):
    """`n` images `(size, size, channels)` in [0, 1] and balanced int64 labels.

    Each class has a fixed random template: smooth colour blobs (uniform noise
    on an 8x8 grid, upsampled) plus a finer random pattern, at `contrast`
    around mid-grey. An image is its class's template shifted by a random
    whole-pixel offset of up to `shift` in each direction, plus Gaussian noise
    of std `noise`, clipped to [0, 1]. The defaults make the task learnable
    but not trivial: one epoch of the deeper CNN on 8,000 images reaches about
    0.78 accuracy on the other 2,000.
    """
    rng = np.random.default_rng(seed)
    big = size + 2 * shift
    coarse = rng.random((num_classes, 8, 8, channels))
    coarse = coarse.repeat(-(-big // 8), axis=1).repeat(-(-big // 8), axis=2)[:, :big, :big]
    fine = rng.random((num_classes, big, big, channels))
    templates = (0.5 + contrast * (0.7 * coarse + 0.3 * fine - 0.5)).astype("float32")
    y = rng.permutation(np.arange(n) % num_classes).astype("int64")
    dy, dx = rng.integers(0, 2 * shift + 1, size=(2, n))
    x = np.empty((n, size, size, channels), dtype="float32")
    for i in range(n):
        x[i] = templates[y[i], dy[i]:dy[i] + size, dx[i]:dx[i] + size]
    x += rng.normal(0.0, noise, size=x.shape).astype("float32")
    np.clip(x, 0.0, 1.0, out=x)
    return x, y


def load_workload(name, args, *, scale=1):
    """(x, y, build, epochs, description) of workload `name`; `scale=2`
    appends a copy of every image shifted by one pixel."""
    import tfcv

    if name == "digits":
        x, y = tfcv.datasets.load_digits()
        build = functools.partial(tfcv.models.reference_cnn, x.shape[1:], 10)
        epochs, description = args.epochs, "reference CNN"
    else:
        x, y = synthetic_images(args.synthetic_samples, seed=args.seed)
        build = functools.partial(tfcv.models.reference_cnn, x.shape[1:], 10, filters=(16, 32, 64))
        epochs, description = args.synthetic_epochs, "deeper CNN (16/32/64)"
    if scale == 2:
        x, y = np.concatenate([x, np.roll(x, 1, axis=2)]), np.concatenate([y, y])
    return x, y, build, epochs, description


# ----------------------------------------------------------------------- rows


def hand_written_loop(x, y, build, *, folds, epochs, batch_size, seed):
    """What a user writes by hand: no tfcv except the model-building function."""
    import keras
    from sklearn.model_selection import StratifiedKFold

    accuracies = []
    for train, val in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        keras.utils.set_random_seed(seed)
        model = build()
        model.fit(x[train], y[train], epochs=epochs, batch_size=batch_size, verbose=0)
        _, accuracy = model.evaluate(x[val], y[val], verbose=0)
        accuracies.append(accuracy)
    return accuracies


def tfcv_run(x, y, build, *, folds, epochs, batch_size, seed, strategy="sequential", n_jobs=None):
    import tfcv

    result = tfcv.CrossValidator(build, folds=folds, seed=seed, strategy=strategy).fit(
        x, y, epochs=epochs, batch_size=batch_size, verbose=0, n_jobs=n_jobs
    )
    return result.scores["accuracy"]


def tfcv_ray(x, y, build, **kwargs):
    import joblib
    import ray
    from ray.util.joblib import register_ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    register_ray()
    with joblib.parallel_backend("ray"):
        return tfcv_run(x, y, build, n_jobs=2, **kwargs)


def without_op_determinism(fn):
    """Runs `fn` with TensorFlow op determinism off, as in a fresh process
    (a tfcv row earlier in this process turned it on)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            from tensorflow.python.framework import config
        except ImportError:
            return fn(*args, **kwargs)
        if config.is_op_determinism_enabled():
            config.disable_op_determinism()
        return fn(*args, **kwargs)

    return run


def timed(fn, **kwargs):
    start = time.perf_counter()
    accuracies = fn(**kwargs)
    return time.perf_counter() - start, accuracies


def _rss_bytes():
    """The process's resident memory now (Linux), or its peak so far
    (elsewhere: ru_maxrss, KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def probe_memory(args):
    """(--probe) One tfcv cross-validation in this fresh process; prints as
    JSON how far its resident memory rose above where it stood once the
    data and libraries were loaded (sampled every 5 ms)."""
    import threading

    import tensorflow as tf

    x, y, build, epochs, _ = load_workload(args.workload, args, scale=args.scale)
    tf.reduce_sum(tf.ones((2, 2))).numpy()
    before, peak, done = _rss_bytes(), [0], threading.Event()

    def sample():
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    tfcv_run(x, y, build, folds=args.folds, epochs=epochs, batch_size=args.batch_size, seed=args.seed,
             strategy=args.probe)
    done.set()
    sampler.join()
    print(json.dumps({"peak_growth_bytes": max(peak[0], _rss_bytes()) - before}))


def peak_memory(workload, strategy, args, *, folds, scale):
    """The peak memory growth of one tfcv run of `strategy`, measured in a
    fresh process (see probe_memory), in MiB."""
    cmd = [sys.executable, os.path.abspath(__file__), "--probe", strategy, "--workload", workload,
           "--folds", str(folds), "--scale", str(scale), "--epochs", str(args.epochs),
           "--synthetic-epochs", str(args.synthetic_epochs), "--synthetic-samples", str(args.synthetic_samples),
           "--batch-size", str(args.batch_size), "--seed", str(args.seed)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_growth_bytes"] / 2**20


# --------------------------------------------------------------- arithmetic


def matmul_flops(n=1024, chained=20, trials=5):
    """The float32 matrix-multiply rate of this machine in FLOP/s (best of
    `trials` calls of `chained` dependent n x n matmuls in one tf.function)."""
    import tensorflow as tf

    a = tf.random.normal((n, n), seed=1)
    b = tf.random.normal((n, n), seed=2) / n**0.5  # keeps the chain's magnitude steady

    @tf.function
    def chain(c):
        for _ in tf.range(chained):
            c = tf.linalg.matmul(c, b)
        return tf.reduce_sum(c)

    chain(a).numpy()  # trace and warm up
    best = float("inf")
    for _ in range(trials):
        start = time.perf_counter()
        chain(a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * chained / best


def forward_flops(model):
    """Forward FLOPs of one sample: Conv2D and Dense layers only."""
    import keras

    total = 0
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a nested model
            total += forward_flops(layer)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            # Conv2D kernel: (kh, kw, in / groups, out); Dense kernel: (in, out).
            positions = int(np.prod(layer.output.shape[1:-1]))
            total += 2 * positions * int(np.prod(layer.kernel.shape))
    return total


def kernel_floor(x, y, build, *, folds, epochs, batch_size, seed):
    """What the workload's own steps take with TensorFlow's kernels and
    nothing else.

    One model per fold, built and warmed up first (building and tracing are
    not counted). Then, in one tf.function per batch shape, every fold's
    `train_step` on a fixed batch of its own training split, all folds in one
    loop body (so they run concurrently, as in the stacked graph), for
    `epochs` x (the smallest training split's full batches + its remainder
    batch), and one `test_step` pass over each held-out split in batches of
    256 (the hand loop's evaluate). No data pipeline, no fit loop, no
    callbacks, no per-epoch validation: what any strategy that runs these
    steps with these kernels must spend at least.

    Returns:
        `(train_seconds, validation_seconds)`: the training steps' time and
        one validation pass's.
    """
    import keras
    import tensorflow as tf
    from sklearn.model_selection import StratifiedKFold

    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y))
    keras.utils.set_random_seed(seed)
    models = [build() for _ in splits]
    n_train = min(len(train) for train, _ in splits)
    full, remainder = divmod(n_train, batch_size)

    def batches(part, start, stop):
        return [(tf.constant(x[idx[start:stop]]), tf.constant(y[idx[start:stop]])) for idx in part]

    train_parts = [train for train, _ in splits]
    val_parts = [val for _, val in splits]
    train_batches = [(batches(train_parts, 0, batch_size), full)]
    if remainder:
        train_batches.append((batches(train_parts, 0, remainder), 1))
    n_val = min(len(val) for val in val_parts)
    val_batches = [batches(val_parts, start, min(start + 256, n_val)) for start in range(0, n_val, 256)]

    for model, (xb, yb) in zip(models, train_batches[0][0]):
        model.fit(xb, yb, epochs=1, batch_size=batch_size, verbose=0)  # builds the optimizer and metrics

    def train_loop(data, steps):
        for _ in tf.range(steps):
            for model, batch in zip(models, data):
                model.train_step(batch)

    def val_pass(data):
        for model, batch in zip(models, data):
            model.test_step(batch)

    train_fns = [(tf.function(train_loop), data, tf.constant(steps)) for data, steps in train_batches]
    val_fns = [(tf.function(val_pass), data) for data in val_batches]
    for fn, data, _ in train_fns:
        fn(data, tf.constant(1))
    for fn, data in val_fns:
        fn(data)

    start = time.perf_counter()
    for _ in range(epochs):
        for fn, data, steps in train_fns:
            fn(data, steps)
    middle = time.perf_counter()
    for fn, data in val_fns:
        fn(data)
    return middle - start, time.perf_counter() - middle


# -------------------------------------------------------------------- tables


def format_row(cells, markdown):
    name, *rest = cells
    if markdown:
        return "| " + " | ".join([name, *rest]) + " |"
    widths = (7, 7, 16, 17, 12, 8, 8, 9)
    return f"{name:<20}" + "".join(f" {cell:>{w}}" for cell, w in zip(rest, widths))


COLUMNS = ("strategy", "wall s", "s/fold", "train samples/s", "accuracy", "x hand loop", "x floor", "x limit",
           "peak MiB")


def print_header(markdown, title):
    line = format_row((title, *COLUMNS[1:]), markdown)
    print(line)
    print("|" + "|".join([":---"] + ["---:"] * (len(COLUMNS) - 1)) + "|" if markdown else "-" * len(line))


def run_workload(name, args, rows, flops_per_second, *, folds=None, scale=1):
    """Times `rows` (and the two floor rows) on workload `name` with `folds`
    folds and `scale` times the data; prints the table and returns
    `{row: (seconds, mean accuracy, accuracy std)}`."""
    import keras
    from sklearn.model_selection import StratifiedKFold

    folds = folds or args.folds
    x, y, build, epochs, model_name = load_workload(name, args, scale=scale)
    keras.utils.set_random_seed(args.seed)
    per_sample = forward_flops(build())
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=args.seed).split(x, y))
    train_samples = sum(len(train) for train, _ in splits) * epochs
    val_samples = sum(len(val) for _, val in splits)
    flops = per_sample * (3 * train_samples + val_samples)
    limit = flops / flops_per_second
    common = {"folds": folds, "epochs": epochs, "batch_size": args.batch_size, "seed": args.seed}
    title = f"{name}{', 2x data' if scale == 2 else ''}, {folds} folds x {epochs} epoch{'s' * (epochs != 1)}"

    print()
    print(f"{title}: x {x.shape}, {model_name}, batch {args.batch_size}, "
          f"median of {args.repeats}, {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
    print(f"{name}: {per_sample / 1e6:.3f} MFLOP forward/sample, {flops / 1e9:.1f} GFLOP "
          f"(3 x {train_samples} training + {val_samples} validation samples), matmul {flops_per_second / 1e9:.1f} GFLOP/s, "
          f"limit {limit:.2f} s")
    # Every repetition runs every row once, so that a burst of load on this
    # machine slows one repetition of each row rather than all of one row.
    times = {row: [] for row in [name for name, _ in rows] + [FLOOR, FLOOR_EACH_EPOCH]}
    accuracies = {}
    for _ in range(args.repeats):
        for row, fn in rows:
            seconds, accuracies[row] = timed(functools.partial(fn, x, y, build), **common)
            times[row].append(seconds)
        train_seconds, val_seconds = kernel_floor(x, y, build, **common)
        # The hand loop validates once per fold; tfcv after every epoch.
        times[FLOOR].append(train_seconds + val_seconds)
        times[FLOOR_EACH_EPOCH].append(train_seconds + epochs * val_seconds)
    memory = {}
    if args.memory:
        for row, _ in rows:
            if row in ("tfcv sequential", "tfcv stacked"):
                memory[row] = peak_memory(name, row.removeprefix("tfcv "), args, folds=folds, scale=scale)
    hand = statistics.median(times[HAND]) if HAND in times else None
    floor = statistics.median(times[FLOOR_EACH_EPOCH])
    print_header(args.markdown, title)
    measured = {}
    for row, row_times in times.items():
        seconds = statistics.median(row_times)
        scores = accuracies.get(row)
        mean, std = (float(np.mean(scores)), float(np.std(scores))) if scores is not None else (float("nan"),) * 2
        measured[row] = (seconds, mean, std)
        cells = (
            row, f"{seconds:.1f}", f"{seconds / folds:.2f}", f"{train_samples / seconds:.0f}",
            f"{mean:.4f} ± {std:.4f}" if scores is not None else "-",
            f"{seconds / hand:.2f}" if hand else "-", f"{seconds / floor:.2f}", f"{seconds / limit:.1f}",
            f"{memory[row]:.0f}" if row in memory else "-",
        )
        print(format_row(cells, args.markdown), flush=True)
    return measured


def report_targets(results):
    print()
    print("targets (issue #21): sequential <= 0.6x the hand-written loop on the digits; stacked <= "
          + ", ".join(f"{target}x" + f" the floor + val/epoch on {name}" for name, target in FLOOR_TARGETS.items())
          + "; each at equal accuracy (within the hand loop's fold std)")
    for name, measured in results.items():
        if HAND not in measured:
            continue
        hand_seconds, hand_mean, hand_std = measured[HAND]
        floor_seconds = measured[FLOOR_EACH_EPOCH][0]
        checks = [(row, measured[row], measured[row][0] / hand_seconds, target, "the hand loop")
                  for row, target in HAND_TARGETS.items() if name == "digits" and row in measured]
        if "tfcv stacked" in measured:
            checks.append(("tfcv stacked", measured["tfcv stacked"], measured["tfcv stacked"][0] / floor_seconds,
                           FLOOR_TARGETS[name], "the floor + val/epoch"))
        for row, (_, mean, _), ratio, target, against in checks:
            fast, same = ratio <= target, abs(mean - hand_mean) <= hand_std
            print(f"  {name:<9} {row.removeprefix('tfcv '):<10} {ratio:.3f}x {against} (target <= {target}x: "
                  f"{'yes' if fast else 'no'}), accuracy {mean:.4f} vs {hand_mean:.4f} ± {hand_std:.4f} "
                  f"({'equal' if same else 'not equal'}): {'MET' if fast and same else 'NOT MET'}")


def report_scaling(base, scaled, base_folds):
    """Stacked's and sequential's cost per fold with more folds or more
    data, against the base table's."""
    print()
    for name, label, measured, folds in scaled:
        for row in ("tfcv stacked", "tfcv sequential"):
            per_fold, base_per_fold = measured[row][0] / folds, base[name][row][0] / base_folds
            print(f"  {label:<22} {row.removeprefix('tfcv '):<10} {per_fold:.2f} s/fold vs {base_per_fold:.2f} "
                  f"at {base_folds} folds ({per_fold / base_per_fold:.2f}x)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=("digits", "synthetic", "both"), default="both")
    parser.add_argument("--folds", type=int, default=5, help="folds of both workloads")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the digits workload")
    parser.add_argument("--synthetic-epochs", type=int, default=1, help="epochs of the synthetic workload")
    parser.add_argument("--synthetic-samples", type=int, default=10_000, help="images of the synthetic workload")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size of both workloads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-jobs", action="store_true", help="add the n_jobs=2 row (local processes)")
    parser.add_argument("--ray", action="store_true", help="add the n_jobs=2 row on a local Ray cluster")
    parser.add_argument("--markdown", action="store_true", help="print the tables in Markdown")
    parser.add_argument("--scaling", choices=("digits", "synthetic", "both", "none"), default="digits",
                        help="workloads that get the 10-fold and 2x-data tables (default digits)")
    parser.add_argument("--scaling-folds", type=int, default=10)
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the peak-memory probes (one fresh process per tfcv row)")
    parser.add_argument("--probe", choices=("sequential", "stacked"), help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        return probe_memory(args)

    # Pay TensorFlow's, Keras' and scikit-learn's import and start-up before any row.
    import keras  # noqa: F401
    import sklearn.model_selection  # noqa: F401
    import tensorflow as tf

    import tfcv  # noqa: F401

    tf.reduce_sum(tf.ones((2, 2))).numpy()

    rows = [
        (HAND, without_op_determinism(hand_written_loop)),
        ("tfcv sequential", tfcv_run),
        ("tfcv stacked", functools.partial(tfcv_run, strategy="stacked")),
    ]
    if args.n_jobs:
        rows.append(("tfcv n_jobs=2", functools.partial(tfcv_run, n_jobs=2)))
    if args.ray:
        try:
            import ray  # noqa: F401

            rows.append(("tfcv n_jobs=2 ray", tfcv_ray))
        except ImportError:
            print("ray is not installed: skipping the Ray row (pip install 'tfcv[ray]')")

    flops_per_second = matmul_flops()
    print(f"matmul float32 1024x1024: {flops_per_second / 1e9:.1f} GFLOP/s (best of 5 x 20 chained matmuls)")
    workloads = ("digits", "synthetic") if args.workload == "both" else (args.workload,)
    start = time.perf_counter()
    results = {name: run_workload(name, args, rows, flops_per_second) for name in workloads}
    scaling = [name for name in workloads if args.scaling in (name, "both")]
    tfcv_rows = [row for row in rows if row[0] in ("tfcv sequential", "tfcv stacked")]
    scaled = []
    for name in scaling:
        more_folds = run_workload(name, args, tfcv_rows, flops_per_second, folds=args.scaling_folds)
        scaled.append((name, f"{name}, {args.scaling_folds} folds", more_folds, args.scaling_folds))
        more_data = run_workload(name, args, tfcv_rows, flops_per_second, scale=2)
        scaled.append((name, f"{name}, 2x data", more_data, args.folds))
    report_targets(results)
    if scaled:
        report_scaling(results, scaled, args.folds)
    print(f"\ntotal {time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
