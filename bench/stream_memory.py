"""Peak memory of a streamed TFDS cross-validation vs the dataset's size.

Generates TFDS datasets of random 64x64x3 uint8 images, by default of about
100 MiB and 400 MiB (the larger one above the 250 MiB under which TFDS would
cache a dataset in memory on its own), then cross-validates a small Keras
model on each in fresh subprocesses that report their peak resident memory
(`VmHWM` on Linux, `resource.getrusage` elsewhere):

- `streamed`: `tfcv.data.fold_datasets` with no cache: every fold reads its
  examples from disk, batch after batch.
- `cached`: the same with `Pipeline(cache="memory")`, which holds each
  fold's data in RAM: what streaming saves.

The increase is measured from a baseline taken once everything is imported
and one model has been trained on two in-memory examples, so the fixed cost
of TensorFlow and Keras counts against neither mode. What remains for
`streamed` is bounded by the pipeline, not the data: TFDS' read buffers
(8 MiB per open file, up to 16 files interleaved), the shuffle buffer and
the prefetched batches. It should stay the same from one dataset size to the
next while `cached` grows with the data.

The runs use `MALLOC_ARENA_MAX=2` (`--malloc-arena-max 0` for glibc's
default): with glibc's default of one arena per thread, freed tf.data
buffers stay in each thread's arena and the resident size creeps up epoch
after epoch without holding any more data.

Usage:

    python bench/stream_memory.py                          # ~100 and ~400 MiB, k=3
    python bench/stream_memory.py --examples 4000          # a quick run
    python bench/stream_memory.py --modes streamed --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MIB = 1024 * 1024
NAME = "tfcv_bench_noise"


def make_builder(counts: list[int], size: int):
    """Registers a TFDS builder with one config of random `size`x`size`x3
    images per entry of `counts` (config `n<count>_s<size>`)."""
    import numpy as np
    import tensorflow_datasets as tfds

    configs = {config_name(n, size): n for n in counts}

    class NoiseImages(tfds.core.GeneratorBasedBuilder):
        name = NAME
        VERSION = tfds.core.Version("1.0.0")
        BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name) for name in configs]

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description="Random uint8 images with random labels, for memory benchmarks.",
                features=tfds.features.FeaturesDict({
                    # Raw bytes, not PNG (noise does not compress) nor TFDS'
                    # default int64 list (8 bytes a pixel once parsed).
                    "image": tfds.features.Tensor(
                        shape=(size, size, 3), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
                    ),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(configs[self.builder_config.name])}

        def _generate_examples(self, examples):
            rng = np.random.default_rng(0)
            for i in range(examples):
                image = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
                yield i, {"image": image, "label": int(rng.integers(0, 10))}

    return NoiseImages


def config_name(examples: int, size: int) -> str:
    return f"n{examples}_s{size}"


def prepare(builder_cls, data_dir: str, examples: int, size: int, shards: int) -> dict:
    import tensorflow_datasets as tfds

    builder = builder_cls(data_dir=data_dir, config=config_name(examples, size))
    start = time.monotonic()
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=shards))
    seconds = time.monotonic() - start
    files = [os.path.join(builder.data_dir, f) for f in os.listdir(builder.data_dir) if ".tfrecord" in f]
    return {
        "examples": examples,
        "config": config_name(examples, size),
        "prepare_seconds": round(seconds, 1),
        "files": len(files),
        "bytes_on_disk": sum(os.path.getsize(f) for f in files),
        "bytes_decoded": examples * size * size * 3,
    }


def child(args) -> None:
    """One cross-validation in this process; prints a JSON line of results."""
    import keras

    import tfcv

    make_builder([args.examples], args.size)
    config = config_name(args.examples, args.size)
    plan = tfcv.data.tfds_folds(NAME, k=args.k, data_dir=args.data_dir, builder_kwargs={"config": config})
    pipeline = tfcv.data.Pipeline(cache="memory" if args.mode == "cached" else None, shuffle_buffer=256)

    def build():
        inputs = keras.Input((args.size, args.size, 3), dtype="uint8")
        h = keras.layers.Rescaling(1 / 255)(inputs)
        h = keras.layers.Conv2D(8, 3, strides=4, activation="relu")(h)
        h = keras.layers.GlobalAveragePooling2D()(h)
        model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    # Warm TensorFlow and Keras up (graph tracing, thread pools) on two
    # in-memory examples, so the baseline holds the fixed cost of training.
    import numpy as np

    build().fit(np.zeros((2, args.size, args.size, 3), "uint8"), np.zeros(2), epochs=1, verbose=0)
    baseline = _peak_rss()
    start = time.monotonic()
    examples_seen = 0
    for fold in range(len(plan)):
        train_ds, val_ds = tfcv.data.fold_datasets(plan, fold, batch_size=args.batch_size, seed=fold, pipeline=pipeline)
        model = build()
        model.fit(train_ds, validation_data=val_ds, epochs=args.epochs, verbose=0)
        examples_seen += args.epochs * args.examples
        del model, train_ds, val_ds
    print(json.dumps({
        "mode": args.mode,
        "examples": args.examples,
        "baseline_peak_rss": baseline,
        "peak_rss": _peak_rss(),
        "seconds": round(time.monotonic() - start, 1),
        "examples_read": examples_seen,
    }))


def _peak_rss() -> int:
    """Peak resident memory of this process, in bytes.

    On Linux this is `VmHWM` of /proc/self/status: `getrusage`'s `ru_maxrss`
    survives fork and exec, so a child started by a process that already
    held 1 GiB would report at least 1 GiB whatever it does itself.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--examples", default="8500,34000",
        help="comma-separated dataset sizes in images (default: ~100 MiB and ~400 MiB)",
    )
    parser.add_argument("--size", type=int, default=64, help="image height and width")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--modes", default="streamed,cached", help="comma-separated: streamed, cached")
    parser.add_argument(
        "--malloc-arena-max", type=int, default=2,
        help="MALLOC_ARENA_MAX for the runs (0: glibc's default of 8 per core)",
    )
    parser.add_argument("--data-dir", default=None, help="TFDS data_dir (default: a temporary directory)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--child", choices=["streamed", "cached"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.mode = args.child
        args.examples = int(args.examples)
        child(args)
        return {}

    counts = [int(n) for n in args.examples.split(",") if n.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    env = dict(os.environ)
    if args.malloc_arena_max:
        # glibc gives every thread that allocates its own arena and keeps
        # freed blocks there, so tf.data's many threads make the RSS creep up
        # epoch after epoch without holding any more data.
        env["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)
    with tempfile.TemporaryDirectory(prefix="tfcv-bench-") as tmp:
        args.data_dir = os.path.abspath(args.data_dir or tmp)
        builder_cls = make_builder(counts, args.size)
        datasets = [prepare(builder_cls, args.data_dir, n, args.size, args.shards) for n in counts]
        runs = []
        for dataset in datasets:
            for mode in modes:
                command = [
                    sys.executable, os.path.abspath(__file__), "--child", mode,
                    "--examples", str(dataset["examples"]), "--size", str(args.size), "--k", str(args.k),
                    "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                    "--data-dir", args.data_dir,
                ]
                done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
                if done.returncode:
                    sys.stderr.write(done.stderr[-4000:])
                    raise SystemExit(f"benchmark child {mode!r} failed with exit code {done.returncode}")
                run = json.loads(done.stdout.strip().splitlines()[-1])
                run["dataset_bytes"] = dataset["bytes_decoded"]
                run["peak_increase"] = run["peak_rss"] - run["baseline_peak_rss"]
                run["increase_over_dataset"] = round(run["peak_increase"] / dataset["bytes_decoded"], 3)
                runs.append(run)
    report = {
        "datasets": datasets, "k": args.k, "epochs": args.epochs,
        "malloc_arena_max": args.malloc_arena_max or None, "runs": runs,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)
    return report


def _print_table(report) -> None:
    for d in report["datasets"]:
        print(
            f"dataset {NAME}/{d['config']}: {d['bytes_decoded'] / MIB:.0f} MiB of images "
            f"({d['bytes_on_disk'] / MIB:.0f} MiB in {d['files']} files, prepared in {d['prepare_seconds']} s)"
        )
    print(f"k={report['k']}, epochs={report['epochs']}, MALLOC_ARENA_MAX={report['malloc_arena_max'] or 'default'}")
    print(
        f"{'mode':<10}{'dataset MiB':>12}{'baseline MiB':>14}{'peak MiB':>10}"
        f"{'increase MiB':>14}{'increase/dataset':>18}{'seconds':>9}"
    )
    for run in report["runs"]:
        print(
            f"{run['mode']:<10}{run['dataset_bytes'] / MIB:>12.0f}{run['baseline_peak_rss'] / MIB:>14.0f}"
            f"{run['peak_rss'] / MIB:>10.0f}{run['peak_increase'] / MIB:>14.0f}"
            f"{run['increase_over_dataset']:>18.2f}{run['seconds']:>9.1f}"
        )


if __name__ == "__main__":
    main()
