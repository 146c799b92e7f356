"""Calibration, conformal sets and robustness under shift, as served.

On the digits with a held-out quarter (stratified, seed 0), two models are
cross-validated on the other three quarters (5 folds): the reference CNN of
`tfcv run` (dropout before its classifier) and the same CNN behind a
`tfcv.layers.Augmentation` (translate 0.1, rotate 0.05, contrast 0.2).
`tfcv.uncertainty.evaluate` exports each result with and without
temperatures fitted on the folds, with conformal sets at alpha = 0.1 (LAC,
APS and RAPS; on the ensemble, and on each randomized mean with
`Conformal(on="randomized")`), and scores every served
predictor on the clean test quarter and on every shift at severities 1, 3
and 5: a single fold model, the ensemble (`serving_default`),
`predict_randomized` (augmentation and MC dropout), TTA only, MC dropout
only.

Usage:

    python bench/uncertainty.py [--epochs 20] [--folds 5] [--samples 16] [--methods lac,aps,raps]
                                [--csv out.csv] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfcv  # noqa: E402
import tfcv.uncertainty as uncertainty  # noqa: E402
from tfcv.export import Randomized  # noqa: E402
from tfcv.folds import holdout_split  # noqa: E402

COLUMNS = ["accuracy", "nll", "ece", "auroc_error", "coverage", "set_size"]


def reference_cnn():
    return tfcv.models.reference_cnn((8, 8, 1), 10)


def augmented_cnn():
    cnn = tfcv.models.reference_cnn((8, 8, 1), 10)
    inputs = keras.Input((8, 8, 1), name="image")
    augmented = tfcv.layers.Augmentation([{"translate": 0.1}, {"rotate": 0.05}, {"contrast": 0.2}])(inputs)
    model = keras.Model(inputs, cnn(augmented), name="augmented_cnn")
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def markdown(frame) -> str:
    header = [*frame.index.names, *frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in frame.iterrows():
        cells = [*index, *(f"{v:.3f}" if v == v else "" for v in row)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--models", default="reference,augmented")
    parser.add_argument("--methods", default="lac,aps,raps",
                        help="conformal scores; the first gives coverage/set_size, the others coverage_<m>/set_size_<m>")
    parser.add_argument("--csv")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)

    x, y = tfcv.datasets.load_digits()
    x_train, x_test, y_train, y_test = holdout_split(x, y, test_size=0.25, seed=0)
    builders = {"reference": reference_cnn, "augmented": augmented_cnn}
    frames = []
    for name in args.models.split(","):
        keras.utils.set_random_seed(0)
        result = tfcv.CrossValidator(builders[name], folds=args.folds, seed=0).fit(
            x_train, y_train, epochs=args.epochs, batch_size=32, verbose=0)
        print(f"{name}: {result!r}", file=sys.stderr, flush=True)
        frame = None
        for method in args.methods.split(","):
            scored = uncertainty.evaluate(
                result, x_test, y_test, calibration_data=(x_train, y_train), randomized=Randomized(args.samples),
                method=method,
            ).to_frame()
            if frame is None:
                frame = scored
            else:
                # Only the sets differ between methods: their columns join the first method's rows.
                keys = ["contender", "calibrated", "shift", "severity"]
                sets = scored[keys + ["coverage", "set_size"]].rename(
                    columns={"coverage": f"coverage_{method}", "set_size": f"set_size_{method}"})
                frame = frame.merge(sets, on=keys, how="left")
        frame.insert(0, "model", name)
        frames.append(frame)
    import pandas as pd

    table = pd.concat(frames, ignore_index=True)
    if args.csv:
        table.to_csv(args.csv, index=False)
    table["T"] = np.where(table["calibrated"], "yes", "no")
    columns = COLUMNS + [c for m in args.methods.split(",")[1:] for c in (f"coverage_{m}", f"set_size_{m}")]
    for (shift, severity), part in table.groupby(["shift", "severity"], sort=False):
        shown = part.set_index(["model", "contender", "T"])[columns].round(3)
        print(f"\n### {shift}" + (f" (severity {severity})" if severity else ""))
        print(markdown(shown) if args.markdown else shown.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
