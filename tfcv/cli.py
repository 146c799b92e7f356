"""The `tfcv` command line: `tfcv run | export | inspect | verify | evaluate | compare | serve`.

It parses and calls the library, nothing else, and imports the library only
in the command that needs it: `tfcv --help` loads neither TensorFlow nor the
server. A command starts TensorFlow itself, first (`tfcv._tf_startup`), to
keep the log lines TensorFlow prints while it loads (below
`TF_CPP_MIN_LOG_LEVEL`, `2` unless set) off stderr; `n_jobs` workers start it
the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

from tfcv._tf_startup import start_tensorflow

__all__ = ["main"]

RUN_DEFAULTS: dict[str, Any] = {
    "name": "digits",
    "folds": 5,
    "epochs": 10,
    "batch_size": 32,
    "seed": 0,
    "run_dir": None,
    "test_size": None,
    "export": None,
    "verbose": "auto",
    "model": None,
    "n_jobs": None,
    "backend": None,
    "address": None,
    "strategy": "auto",
    "data": None,
    "image_size": None,
    "text_column": None,
    "label_column": None,
    "image_key": None,
    "label_key": None,
    "refit": False,
}
STRATEGIES = ("sequential", "stacked", "auto")


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


def _add_run_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="cross-validate a model on the embedded digits or your own data",
        description=(
            "Cross-validates a model (the reference CNN, or the reference text model for text, unless the "
            "config has a `model:` section) on the embedded digits data or the data of --data (or a `data:` "
            "section), prints per-fold scores and mean ± std, and writes a resumable run directory. Keys of "
            "the optional YAML config mirror the flags (batch_size or batch-size); flags win."
        ),
    )
    p.add_argument("config", nargs="?", help="optional YAML experiment file")
    p.add_argument("--name", help=f"run name, used in the default run directory (default {RUN_DEFAULTS['name']})")
    p.add_argument("--folds", type=int, help=f"number of stratified folds (default {RUN_DEFAULTS['folds']})")
    p.add_argument("--epochs", type=int, help=f"epochs per fold (default {RUN_DEFAULTS['epochs']})")
    p.add_argument("--batch-size", dest="batch_size", type=int, help=f"batch size (default {RUN_DEFAULTS['batch_size']})")
    p.add_argument("--seed", type=int, help=f"seed of the fold plan and of every fold (default {RUN_DEFAULTS['seed']})")
    p.add_argument(
        "--run-dir", dest="run_dir",
        help="run directory (default runs/<name>-<timestamp>); an existing one is resumed",
    )
    p.add_argument(
        "--test-size", dest="test_size", type=float,
        help="hold out this fraction as a stratified test set before the folds are made, "
        "report the fold ensemble's scores on it and keep it for `tfcv evaluate`",
    )
    p.add_argument("--export", help="after the run, export the fold ensemble as a TF Serving bundle under this base path")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), help="0 silent, 1 progress display, 2 one line per epoch")
    p.add_argument("--n-jobs", dest="n_jobs", type=int, help="folds trained at once through joblib (-1: every core)")
    p.add_argument("--backend", help="joblib backend for --n-jobs: loky (local processes, the default) or ray")
    p.add_argument("--address", help="with --backend ray: the Ray cluster to join (default: start a local one)")
    p.add_argument(
        "--strategy",
        help="how folds train: sequential (one after the other), stacked (all folds side by side in one graph) "
        f"or auto (default {RUN_DEFAULTS['strategy']})",
    )
    p.add_argument(
        "--data",
        help="your data: an image folder (one subfolder per class), tfds:NAME[:SPLIT], FILE.npz (x, y, "
        "optional groups) or FILE.csv (with --text-column and --label-column)",
    )
    p.add_argument("--image-size", dest="image_size", type=int, nargs=2, metavar=("H", "W"),
                   help="resize images of --data to H x W (default 64 64 for image folders)")
    p.add_argument("--text-column", dest="text_column", help="CSV column holding the sentences")
    p.add_argument("--label-column", dest="label_column", help="CSV column holding the labels")
    p.add_argument("--image-key", dest="image_key",
                   help="feature of a TFDS dataset without supervised keys that holds the input")
    p.add_argument("--label-key", dest="label_key",
                   help="feature of a TFDS dataset without supervised keys that holds the label")
    p.add_argument("--refit", action="store_true", default=None,
                   help="after the folds, train one more model on all the data (saved in RUN_DIR/refit)")
    p.set_defaults(handler=_run_command)


def _load_yaml(path: str) -> dict:
    from tfcv._yaml import read_yaml

    if not os.path.isfile(path):
        raise CLIError(f"config file {path!r} does not exist")
    try:
        # A safe loader that also reads `1e-3` as a float (PyYAML alone reads a string).
        loaded = read_yaml(pathlib.Path(path))
    except ValueError as error:
        raise CLIError(str(error)) from error
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise CLIError(f"config file {path!r} must hold a mapping of settings, got {type(loaded).__name__}")
    return {str(k).replace("-", "_"): v for k, v in loaded.items()}


def resolve_run_config(args: argparse.Namespace) -> dict:
    """Defaults < YAML config < command-line flags."""
    config = dict(RUN_DEFAULTS)
    if args.config:
        from_file = _load_yaml(args.config)
        unknown = sorted(set(from_file) - set(RUN_DEFAULTS))
        if unknown:
            raise CLIError(
                f"unknown keys in {args.config!r}: {unknown}. Accepted keys: {sorted(RUN_DEFAULTS)}"
            )
        config.update(from_file)
    for key in RUN_DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            config[key] = value
    for key in ("folds", "epochs", "batch_size", "seed"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise CLIError(f"`{key}` must be an int, got {key}={value!r}")
    # Checked before training: `bool("no")` would refit, and an export path only fails after the run.
    if not isinstance(config["refit"], bool):
        raise CLIError(f"`refit` must be true or false, got refit={config['refit']!r}")
    for key in ("run_dir", "export"):
        if config[key] is not None and not isinstance(config[key], str):
            raise CLIError(f"`{key}` must be a path, got {key}={config[key]!r}")
    if config["strategy"] not in STRATEGIES:
        raise CLIError(f"`strategy` must be one of {list(STRATEGIES)}, got strategy={config['strategy']!r}")
    if config["run_dir"] is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        config["run_dir"] = os.path.join("runs", f"{config['name']}-{stamp}")
    return config


def _build_fn(config: dict, input_shape, num_classes, kind="image"):
    from tfcv.builder import ModelBuilder
    from tfcv.models import ReferenceCNN, TextClassifier
    from tfcv.spec import ModelSpec

    if not config.get("model"):
        return TextClassifier(num_classes) if kind == "text" else ReferenceCNN(input_shape, num_classes)
    # The data fills in what a `model:` section may leave out.
    spec = dict(config["model"])
    spec.setdefault("input_shape", list(input_shape))
    if kind == "text":
        spec.setdefault("text", {})
    if spec.get("task", "classification") == "classification":
        spec.setdefault("num_classes", int(num_classes))
    return ModelBuilder(ModelSpec.from_dict(spec))


def _num_classes(config: dict, data, y) -> int | None:
    """The classes a model made for the data outputs: the data's own count,
    else counted from `y` (one-hot rows by their width)."""
    import numpy as np

    from tfcv.folds import class_labels, is_classification_target

    if y is None:
        return data.num_classes
    y = np.asarray(y)
    if (config.get("model") or {}).get("task") == "regression":
        return None
    if not is_classification_target(y):
        raise CLIError(
            f"the labels of {data.description} are not class labels (dtype {y.dtype}, shape {y.shape}, "
            f"{len(np.unique(y))} distinct values): tfcv run's ready-made models classify. Pass integer or string "
            "labels (or one-hot rows), or a `model:` section with `task: regression`"
        )
    labels = np.unique(class_labels(y))
    if len(labels) < 2:
        raise CLIError(f"the labels of {data.description} hold a single class ({labels[0].item()!r}); a classifier needs "
                       "at least two")
    return int(y.shape[1]) if y.ndim == 2 and y.shape[1] > 1 else data.num_classes or len(labels)


def _run_command(args: argparse.Namespace) -> int:
    config = resolve_run_config(args)
    from tfcv._parallel import joblib_backend

    try:
        backend = joblib_backend(config["backend"], address=config["address"])
    except ImportError as error:
        raise CLIError(str(error)) from error

    import numpy as np

    from tfcv.crossval import CrossValidator
    from tfcv.folds import holdout_split

    data = _load_data(config)
    x, y, groups, folds, pipeline = data.x, data.y, data.groups, data.folds, data.pipeline
    x_test = y_test = None
    if config["test_size"] is not None:
        if not isinstance(x, np.ndarray):
            raise CLIError(f"--test-size needs in-memory data (digits, .npz or .csv), not {data.description}")
        x, x_test, y, y_test = holdout_split(x, y, test_size=config["test_size"], seed=config["seed"])
    if not config.get("model") and data.kind != "text" and len(data.input_shape or ()) != 3:
        raise CLIError(
            f"{data.description}: the default model, the reference CNN, takes images of shape (height, width, "
            "channels). Save x with a channel axis (x[..., None] for grey images of shape (height, width)), or "
            "describe a model for these samples in a `model:` section of a config file"
        )
    build_fn = _build_fn(config, data.input_shape, _num_classes(config, data, y), data.kind)
    cv = CrossValidator(build_fn, folds=folds or config["folds"], seed=config["seed"], strategy=config["strategy"])
    print(
        f"tfcv run: {data.description}, {config['folds']} folds x {config['epochs']} epochs, "
        f"batch size {config['batch_size']}, seed {config['seed']}"
        + (f", {config['strategy']} strategy" if config["strategy"] != RUN_DEFAULTS["strategy"] else "")
        + (f", {len(x_test)} held out for testing" if x_test is not None else "")
        + f"\nrun directory: {config['run_dir']}",
        flush=True,
    )
    with backend:
        result = cv.fit(
            x, y, epochs=config["epochs"], batch_size=config["batch_size"], groups=groups, pipeline=pipeline,
            # A spec's own callbacks (two-phase fine-tuning).
            callbacks=getattr(build_fn, "callbacks", list)(),
            run_dir=config["run_dir"], verbose=config["verbose"], n_jobs=config["n_jobs"],
            refit=bool(config["refit"]),
        )
    if x_test is not None:
        result.evaluate(x_test, y_test)
        # `fit` has written the run; only the held-out scores are new.
        result.save(config["run_dir"])
        from tfcv._run_dir import save_test_set

        save_test_set(config["run_dir"], x_test, y_test)
    _write_plots(result, config["run_dir"])
    print()
    print(result.summary())
    print(f"\nSaved to {config['run_dir']}")
    if config["export"]:
        from tfcv.export import export_saved_model

        path = export_saved_model(result, config["export"])
        print(f"Exported TF Serving bundle to {path}")
    return 0


def _load_data(config: dict):
    from tfcv.sources import Data, load_data, parse_data

    options = {key: config[key] for key in ("image_size", "text_column", "label_column", "image_key", "label_key")}
    if config["data"] is None:
        if any(v is not None for v in options.values()):
            raise CLIError(f"{', '.join('--' + k.replace('_', '-') for k, v in options.items() if v is not None)} "
                           "need --data (or a `data:` section)")
        from tfcv.datasets import load_digits

        x, y = load_digits()
        return Data(x=x, y=y, groups=None, folds=None, input_shape=x.shape[1:], num_classes=None, class_names=None,
                    kind="image", description=f"{len(x)} digits")
    return load_data(parse_data(config["data"], **options), folds=config["folds"], seed=config["seed"])


def _write_plots(result, run_dir) -> None:
    try:
        from tfcv import plots
    except ImportError:
        return
    writer = getattr(plots, "save_run_plots", None)
    if writer is not None:
        writer(result, run_dir)


def _add_export_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a saved run as a TF Serving bundle",
        description=(
            "Exports the fold ensemble of a saved run directory (models loaded with safe_mode=True) as "
            "a TF Serving bundle BASE_PATH/<version> with the signatures serving_default, predict_folds "
            "and predict_randomized, warmup records and tfcv.json metadata, checked before it is published."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `tfcv run` or CVResult.save")
    p.add_argument("--base-path", dest="base_path", required=True,
                   help="model base path that TF Serving polls, e.g. serving/models/digits")
    p.add_argument("--version", type=int, help="version to write (default: one above the highest present)")
    p.add_argument("--samples", type=int, default=16, help="randomized forward passes per input (default 16)")
    p.add_argument("--no-randomized", dest="randomized", action="store_false",
                   help="leave the predict_randomized signature out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version directory")
    p.add_argument("--image-bytes", dest="image_bytes", action="store_true",
                   help="also write serving_bytes, predict_folds_bytes and predict_randomized_bytes, which take "
                   "encoded images (JPEG, PNG, GIF, BMP; base64 over REST) as image_bytes")
    p.set_defaults(handler=_export_command)


def _export_command(args: argparse.Namespace) -> int:
    from tfcv.export import Randomized, export_saved_model

    randomized = Randomized(args.samples) if args.randomized else None
    path = export_saved_model(
        args.run_dir, args.base_path, version=args.version, randomized=randomized, overwrite=args.overwrite,
        image_bytes=args.image_bytes,
    )
    print(f"Exported TF Serving bundle to {path}")
    return 0


def _bundle_parser(subparsers, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand that reads one bundle version: its VERSION_DIR argument comes first."""
    p = subparsers.add_parser(name, **kwargs)
    p.add_argument("version_dir", metavar="VERSION_DIR", help="a version directory, e.g. serving/models/digits/1")
    return p


def _add_inspect_parser(subparsers) -> None:
    p = _bundle_parser(
        subparsers,
        "inspect",
        help="print a bundle's signatures and metadata",
        description="Prints the signatures (names, inputs, outputs, dtypes, shapes) and the tfcv metadata "
        "of a TF Serving version directory written by `tfcv export`.",
    )
    p.set_defaults(handler=_inspect_command)


def _inspect_command(args: argparse.Namespace) -> int:
    from tfcv.export import describe

    print(describe(args.version_dir))
    return 0


def _add_verify_parser(subparsers) -> None:
    p = _bundle_parser(
        subparsers,
        "verify",
        help="check a bundle as TF Serving would load it",
        description="Loads a TF Serving version directory written by `tfcv export`, checks every "
        "signature against its tfcv.json metadata and replays the warmup records through it. "
        "Prints OK and exits 0, or prints the defect and exits 1.",
    )
    p.add_argument("--json", action="store_true",
                   help='print one JSON line: {"ok": true, "signatures": [...], "replayed": n} or {"ok": false, "error": "..."}')
    p.set_defaults(handler=_verify_command)


def _verify_command(args: argparse.Namespace) -> int:
    from tfcv.export import verify

    try:
        # This process is itself fresh: nothing loaded here can help the bundle load.
        report = verify(args.version_dir, fresh_process=False)
    except (ValueError, OSError) as error:
        if args.json:
            print(json.dumps({"ok": False, "error": str(error)}))
        else:
            print(f"tfcv verify: error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"ok": True, **report}))
    else:
        print(f"OK: {args.version_dir}: signatures {', '.join(report['signatures'])}; "
              f"{report['replayed']} records replayed.")
    return 0


def _add_evaluate_parser(subparsers) -> None:
    p = _bundle_parser(
        subparsers,
        "evaluate",
        help="measure a bundle's uncertainty on held-out and shifted data",
        description="Calls the served signatures of a version directory (a single fold model, the fold "
        "ensemble, predict_randomized, and predict_set for the predictor it was built on) on held-out data and "
        "on shifted copies of it, and prints accuracy, NLL, Brier, ECE, AUROC of the entropy for errors, "
        "mean entropy and, with predict_set, coverage and set size. The held-out data is the test set a "
        "`tfcv run --test-size` kept in its run directory (--run-dir), or --data.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--run-dir", dest="run_dir", help="the run directory of a `tfcv run --test-size`: "
                        "evaluate on the test set it held out")
    source.add_argument("--data", help="evaluate on all of this data: an image folder (one subfolder per class, "
                        "resized to the bundle's input), FILE.npz (x, y) or FILE.csv (with --text-column and "
                        "--label-column)")
    p.add_argument("--image-size", dest="image_size", type=int, nargs=2, metavar=("H", "W"),
                   help="resize images of --data to H x W (default: the bundle's input size)")
    p.add_argument("--text-column", dest="text_column", help="CSV column holding the sentences")
    p.add_argument("--label-column", dest="label_column", help="CSV column holding the labels")
    p.add_argument("--shifts", nargs="+", metavar="NAME[:S,S]", default=None,
                   help="shifted copies to score besides the clean data, each NAME or NAME:SEVERITIES with "
                   "NAME one of rotate, shift, noise, blur, contrast and severities in 1..5 (default: every "
                   "shift at 1,3,5 for images, none for other inputs); `none` scores the clean data only")
    p.add_argument("--json", action="store_true", help="print the rows as one JSON list instead of a table")
    p.set_defaults(handler=_evaluate_command)


def _evaluate_command(args: argparse.Namespace) -> int:
    from tfcv import uncertainty

    shifts = None if args.shifts is None else uncertainty.parse_shifts([] if args.shifts == ["none"] else args.shifts)
    if not os.path.isdir(args.version_dir):
        raise CLIError(f"version directory {args.version_dir!r} does not exist")
    if args.run_dir is None and args.data is None:
        raise CLIError("no data to evaluate on: pass --run-dir RUN_DIR (a `tfcv run --test-size` run) or "
                       "--data DIR|FILE.npz|FILE.csv")
    from tfcv import bundle

    meta = bundle.read_metadata(args.version_dir)
    shape = meta["input_spec"]["shape"]
    images = len(shape) == 4
    if shifts and not images:
        raise CLIError(f"--shifts move pixels; {args.version_dir!r} takes inputs of shape {shape}, not images")
    if shifts is None:
        shifts = tuple(uncertainty.SHIFTS) if images else ()
    x, y = _evaluation_data(args, shape)
    evaluation = uncertainty.evaluate(args.version_dir, x, y, shifts=shifts,
                                      value_range=tuple(meta["input_spec"].get("range") or (0.0, 1.0)))
    if args.json:
        print(json.dumps(evaluation.to_records()))
    else:
        print(f"{args.version_dir}: {len(y)} held-out samples")
        print(evaluation.summary())
    return 0


def _evaluation_data(args: argparse.Namespace, input_shape):
    import numpy as np

    if args.run_dir is not None:
        from tfcv._run_dir import load_test_set

        if any(getattr(args, k) is not None for k in ("image_size", "text_column", "label_column")):
            raise CLIError("--image-size, --text-column and --label-column go with --data, not --run-dir")
        kept = load_test_set(args.run_dir)
        if kept is None:
            raise CLIError(f"run directory {args.run_dir!r} kept no held-out test set: run it with "
                           "`tfcv run --test-size F`, or pass --data")
        return kept
    if args.data.startswith("tfds:"):
        raise CLIError(f"--data {args.data!r}: evaluate reads an image folder, .npz or .csv, not a TFDS name")
    if not os.path.exists(args.data):
        raise CLIError(f"--data {args.data!r} does not exist: evaluate reads an image folder (one subfolder per "
                       "class), a .npz or a .csv file")
    from tfcv.sources import load_data, parse_data

    config = parse_data(args.data, image_size=args.image_size, text_column=args.text_column,
                        label_column=args.label_column)
    if "directory" in config and len(input_shape) == 4:
        # Decoded as the bundle takes them, unless told otherwise.
        config.setdefault("image_size", input_shape[1:3])
        config.setdefault("channels", input_shape[3])
    data = load_data(config)
    x = data.x
    if hasattr(x, "decode_files"):
        import tensorflow as tf

        x = np.concatenate([x.decode_files(tf.constant(x.paths[i:i + 256])).numpy()
                            for i in range(0, len(x), 256)])
    return np.asarray(x), np.asarray(data.y)


def _add_compare_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="is run B better than run A on the same folds?",
        description="Compares two run directories on the same folds: per-fold differences (B - A), their mean, "
        "the Nadeau-Bengio corrected resampled t-test (the folds' training sets overlap, so the naive paired "
        "t-test is overconfident), a confidence interval and whether the difference exceeds the folds' noise.",
    )
    p.add_argument("run_a", metavar="RUN_A", help="run directory of the baseline")
    p.add_argument("run_b", metavar="RUN_B", help="run directory of the candidate")
    p.add_argument("--metric", default="accuracy", help="score to compare (default accuracy)")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence level (default 0.95)")
    p.set_defaults(handler=_compare_command)


def _compare_command(args: argparse.Namespace) -> int:
    from tfcv.comparison import compare

    comparison = compare(args.run_a, args.run_b, metric=args.metric, confidence=args.confidence)
    print(f"{'fold':>4}  {'A':>8}  {'B':>8}  {'B - A':>8}")
    for k, (a, b, d) in enumerate(zip(comparison.scores_a, comparison.scores_b, comparison.differences)):
        print(f"{k + 1:>4}  {a:8.4f}  {b:8.4f}  {d:+8.4f}")
    print()
    print(comparison.summary())
    return 0


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    # The server package imports TensorFlow: start it first, quietly.
    start_tensorflow()
    from tfcv.serving.server import add_arguments

    add_arguments(parser)


def _add_serve_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve bundles over TF Serving's REST and gRPC APIs",
        description="A local TensorFlow-Serving-compatible model server. Flags mirror "
        "tensorflow_model_server; it binds 127.0.0.1 unless --host says otherwise.",
        add_arguments=_serve_arguments,
    )
    p.set_defaults(handler=_serve_command)


def _serve_command(args: argparse.Namespace) -> int:
    from tfcv.serving import serve_from_args

    try:
        return serve_from_args(args)
    except OSError as error:
        raise CLIError(str(error)) from error


class _Parser(argparse.ArgumentParser):
    """An `ArgumentParser` whose arguments may be added on first use.

    The flags of `tfcv serve` belong to the server package; adding them only
    when `serve` is parsed or its help printed keeps every other command from
    importing the server stack.
    """

    def __init__(self, *args, add_arguments=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._add_arguments = add_arguments

    def _complete(self) -> None:
        if self._add_arguments is not None:
            add, self._add_arguments = self._add_arguments, None
            add(self)

    def parse_known_args(self, args=None, namespace=None):
        self._complete()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._complete()
        return super().format_usage()

    def format_help(self) -> str:
        self._complete()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    from tfcv import __version__

    parser = _Parser(
        prog="tfcv",
        description="Honest k-fold cross-validation and TF Serving export for Keras 3.",
    )
    parser.add_argument("--version", action="version", version=f"tfcv {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_run_parser(subparsers)
    _add_export_parser(subparsers)
    _add_inspect_parser(subparsers)
    _add_verify_parser(subparsers)
    _add_evaluate_parser(subparsers)
    _add_compare_parser(subparsers)
    _add_serve_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `tfcv` console script."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    # Every command trains, loads or serves models.
    try:
        start_tensorflow()
    except KeyboardInterrupt:  # Ctrl-C while TensorFlow imports (seconds): one line, not its import traceback
        return _interrupted(args.command)
    with warnings.catch_warnings():
        # A warning for a person at a terminal is one line, not Python's two
        # (catch_warnings puts Python's own display back afterwards).
        warnings.showwarning = _show_warning
        return _handle(args)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"tfcv: {category.__name__}: {message}", file=file or sys.stderr)


def _handle(args: argparse.Namespace) -> int:
    try:
        return int(args.handler(args) or 0)
    except CLIError as error:
        print(f"tfcv {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, RuntimeError) as error:
        print(f"tfcv {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        # Permission denied, disk full, read-only file system: one line that
        # names the path, not a traceback.
        where = f": {error.filename}" if error.filename else ""
        print(f"tfcv {args.command}: error: {error.strerror or error}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return _interrupted(args.command)


def _interrupted(command: str) -> int:
    # Only a run has a run directory to resume from; an export removes its
    # unpublished version, and the other commands write nothing.
    hint = "; run the same command again to resume" if command == "run" else ""
    print(f"\ntfcv {command}: interrupted{hint}.", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
