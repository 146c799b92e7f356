"""Matplotlib figures.

Every function returns a `matplotlib.figure.Figure` made without pyplot, so
it works in notebooks, scripts and servers alike: show it in a notebook by
leaving it as the cell's value, or write it with `fig.savefig(path)`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "augmentation_grid",
    "compare",
    "confusion_matrix",
    "fold_scores",
    "learning_curves",
    "predicted_vs_true",
    "reliability_diagram",
    "save_run_plots",
    "shift_curves",
]


def augmentation_grid(layer: Any, images: Any, n: int = 8, *, max_images: int = 8):
    """A grid of images and `n` randomly augmented variants of each.

    Row `i` shows image `i` in the first column ("original") and `n`
    independent draws of the augmentation in the next ones. Pixels are shown
    on the layer's `value_range` (or the images' own range), grayscale for
    one channel.

    Args:
        layer: A `tfcv.layers.Augmentation` (called with `randomized=True`),
            or any Keras layer or callable that augments when called with
            `training=True`.
        images: Array of images, `(batch, height, width, channels)`.
        n: `int`. Augmented variants per image. Defaults to `8`.
        max_images: `int`. Rows shown at most (the first images). Defaults
            to `8`.

    Returns:
        A `matplotlib.figure.Figure`.

    Example:

    >>> augment = tfcv.layers.Augmentation([{"rotate": 0.1}, {"zoom": 0.1}])
    >>> fig = tfcv.plots.augmentation_grid(augment, x[:4], n=6)
    >>> fig.savefig("augmentation.png")
    """
    from matplotlib.figure import Figure

    from tfcv.layers.augmentation import Augmentation

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"Invalid value for argument `n`. Received: n={n!r}. Expected an int >= 1.")
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[np.newaxis]
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(
            f"Invalid value for argument `images`. Received an array of shape {images.shape}. "
            "Expected a non-empty batch of images (batch, height, width, channels)."
        )
    images = images[:max_images]
    # All variants in one batch: one call, each image augmented independently.
    batch = np.repeat(images, n, axis=0)
    if isinstance(layer, Augmentation):
        augmented = layer(batch, randomized=True)
    else:
        augmented = layer(batch, training=True)
    augmented = np.asarray(augmented).reshape((len(images), n) + images.shape[1:])

    value_range = getattr(layer, "value_range", None)
    low, high = (float(value_range[0]), float(value_range[1])) if value_range is not None else (
        float(images.min()), float(images.max()))
    if high <= low:
        high = low + 1.0

    rows, cols = len(images), n + 1
    fig = Figure(figsize=(1.3 * cols, 1.3 * rows + 0.3), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i in range(rows):
        for j in range(cols):
            image = images[i] if j == 0 else augmented[i, j - 1]
            ax = axes[i, j]
            _show(ax, image, low, high)
            if i == 0:
                ax.set_title("original" if j == 0 else f"augmented {j}", fontsize=8)
    return fig


def _show(ax, image, low, high) -> None:
    image = (np.clip(image.astype("float64"), low, high) - low) / (high - low)
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(image[..., :3])
    ax.set_xticks([])
    ax.set_yticks([])


# ------------------------------------------------------- cross-validation


def _figure(width=6.4, height=4.2):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def learning_curves(result: Any, metric: str = "loss"):
    """Every fold's learning curve of `metric`, with the mean and a ±1 std band.

    Training curves are drawn solid, validation curves (`val_<metric>`)
    dashed; thin lines are the folds, the thick line is the mean over the
    folds that reached that epoch, the band is ±1 standard deviation.

    Args:
        result: A `CVResult`.
        metric: `str`. A name in the histories without the `val_` prefix
            (`"loss"`, `"accuracy"`, ...). Defaults to `"loss"`.

    Returns:
        A `matplotlib.figure.Figure`.

    Example:

    >>> fig = tfcv.plots.learning_curves(result, "accuracy")
    """
    names = sorted({n for h in result.histories for n in h})
    if metric not in names and f"val_{metric}" not in names:
        plain = sorted({n.removeprefix("val_") for n in names})
        raise ValueError(f"Invalid value for argument `metric`. Received: metric={metric!r}. Expected one of {plain}.")
    fig = _figure()
    ax = fig.add_subplot()
    for name, style, color in ((metric, "-", "C0"), (f"val_{metric}", "--", "C1")):
        curves = [np.asarray(h[name], dtype="float64") for h in result.histories if name in h]
        if not curves:
            continue
        length = max(len(c) for c in curves)
        padded = np.full((len(curves), length), np.nan)
        for i, curve in enumerate(curves):
            padded[i, : len(curve)] = curve
            ax.plot(np.arange(1, len(curve) + 1), curve, style, color=color, alpha=0.3, linewidth=1)
        epochs = np.arange(1, length + 1)
        mean = np.nanmean(padded, axis=0)
        std = np.nanstd(padded, axis=0)
        label = "validation" if name.startswith("val_") else "training"
        ax.plot(epochs, mean, style, color=color, linewidth=2.5, label=f"{label} mean ({len(curves)} folds)")
        ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.15, label=f"{label} ±1 std")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"Learning curves: {metric}")
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def fold_scores(result: Any, metrics: list[str] | None = None):
    """Per-fold scores as a strip plot over a box plot, one column per metric.

    Args:
        result: A `CVResult`.
        metrics: Names of the metrics to show. Defaults to `None`: accuracy,
            precision, recall and f1 for classification; r2 for regression.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    if metrics is None:
        wanted = ("accuracy", "precision", "recall", "f1") if result.task == "classification" else ("r2",)
        metrics = [m for m in wanted if m in result.scores] or list(result.scores)
    unknown = [m for m in metrics if m not in result.scores]
    if unknown:
        raise ValueError(f"Invalid value for argument `metrics`. Received unknown metrics {unknown}. Expected names from {sorted(result.scores)}.")
    fig = _figure(max(3.0, 1.6 * len(metrics) + 1.5), 4.0)
    ax = fig.add_subplot()
    data = [np.asarray(result.scores[m], dtype="float64") for m in metrics]
    ax.boxplot(data, widths=0.5, showmeans=True)
    ax.set_xticks(np.arange(1, len(metrics) + 1), metrics)
    jitter = np.linspace(-0.12, 0.12, max(len(d) for d in data))
    for i, values in enumerate(data, start=1):
        ax.scatter(i + jitter[: len(values)], values, zorder=3, s=22, color="C3")
        ax.annotate(f"{values.mean():.3f} ± {values.std():.3f}", (i, values.max()), textcoords="offset points",
                    xytext=(0, 8), ha="center", fontsize="small")
    ax.margins(y=0.2)
    ax.set_title(f"Per-fold scores ({result.n_folds} folds)")
    ax.grid(alpha=0.3, axis="y")
    return fig


def compare(comparison: Any, result_b: Any = None, *, metric: str = "accuracy"):
    """Paired per-fold differences (b − a) of two runs, with their mean and
    the corrected confidence interval of `tfcv.compare`.

    Args:
        comparison: A `tfcv.comparison.Comparison`, or run A (a `CVResult` or
            run directory) with `result_b`.
        result_b: Run B when `comparison` is run A. Defaults to `None`.
        metric: `str`. The score compared when two runs are given.
            Defaults to `"accuracy"`.

    Returns:
        A `matplotlib.figure.Figure`: one bar per fold, the mean difference
        as a line, the interval as a band, zero as the reference.

    Example:

    >>> fig = tfcv.plots.compare(tfcv.compare(baseline, augmented))
    """
    if result_b is not None:
        from tfcv.comparison import compare as compare_runs

        comparison = compare_runs(comparison, result_b, metric=metric)
    d = np.asarray(comparison.differences, dtype="float64")
    a_name, b_name = getattr(comparison, "names", ("A", "B"))
    fig = _figure(max(4.0, 0.5 * len(d) + 3.0), 4.0)
    ax = fig.add_subplot()
    folds = np.arange(1, len(d) + 1)
    ax.bar(folds, d, color=np.where(d >= 0, "C2", "C3"), alpha=0.8, width=0.6)
    low, high = comparison.ci
    ax.axhspan(low, high, color="C0", alpha=0.15, label=f"{comparison.confidence:.0%} CI (corrected)")
    ax.axhline(comparison.mean_difference, color="C0", linewidth=2, label=f"mean {comparison.mean_difference:+.4f}")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(folds)
    ax.set_xlabel("fold")
    ax.set_ylabel(f"{comparison.metric}: {b_name} − {a_name}")
    ax.set_title(f"Paired differences, p = {comparison.p_value:.3g} (Nadeau–Bengio)")
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3, axis="y")
    return fig


def _oof_pairs(result):
    if result.oof_targets is None:
        raise ValueError("This CVResult has no out-of-fold targets (it was saved by an older tfcv); re-run fit.")
    keep = ~np.isnan(result.oof_targets.reshape(len(result.oof_targets), -1)).any(axis=1)
    return result.oof_targets[keep], result.oof_predictions[keep]


def confusion_matrix(result: Any, *, normalize: str | None = None, class_names: list[str] | None = None):
    """The out-of-fold confusion matrix of a classification result.

    Every sample is counted once, with the prediction of the fold model that
    never saw it in training. Drawn with scikit-learn's
    `ConfusionMatrixDisplay`.

    Args:
        result: A classification `CVResult`.
        normalize: `None` (counts), `"true"`, `"pred"` or `"all"`, as in
            `sklearn.metrics.confusion_matrix`. Defaults to `None`.
        class_names: Labels for the axes. Defaults to the class indices.

    Returns:
        A `matplotlib.figure.Figure`.
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    from tfcv.metrics import predicted_classes

    if result.task != "classification":
        raise ValueError("confusion_matrix needs a classification result; use predicted_vs_true for regression.")
    targets, predictions = _oof_pairs(result)
    y_true = targets.argmax(axis=1) if targets.ndim == 2 and targets.shape[1] > 1 else targets.reshape(-1).astype("int64")
    y_pred = predicted_classes(predictions)
    n = max(int(y_true.max()), int(y_pred.max())) + 1
    if predictions.ndim == 2 and predictions.shape[1] > 1:
        n = max(n, predictions.shape[1])
    fig = _figure(5.6, 5.0)
    ax = fig.add_subplot()
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=list(range(n)), display_labels=class_names, normalize=normalize,
        ax=ax, colorbar=False, values_format=".2f" if normalize else "d",
    )
    accuracy = float((y_true == y_pred).mean())
    ax.set_title(f"Out-of-fold confusion matrix (accuracy {accuracy:.4f})")
    return fig


def predicted_vs_true(result: Any):
    """Out-of-fold predictions against the true values (regression).

    Returns:
        A `matplotlib.figure.Figure` with the identity line for reference.
    """
    targets, predictions = _oof_pairs(result)
    y_true = targets.reshape(len(targets), -1)[:, 0]
    y_pred = predictions.reshape(len(predictions), -1)[:, 0]
    fig = _figure(5.0, 5.0)
    ax = fig.add_subplot()
    ax.scatter(y_true, y_pred, s=10, alpha=0.6)
    low, high = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([low, high], [low, high], "k--", linewidth=1, label="perfect")
    ax.set_xlabel("true")
    ax.set_ylabel("out-of-fold prediction")
    ax.set_title("Out-of-fold predictions")
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    return fig


def save_run_plots(result: Any, run_dir: str) -> list[str]:
    """Writes the run's figures as PNG files into `run_dir/plots/`.

    `learning_curves_<metric>.png` for the loss and every metric in the
    histories, `fold_scores.png`, and `confusion_matrix.png`
    (classification) or `predicted_vs_true.png` (regression). Each file is
    written atomically.

    Returns:
        The paths written.
    """
    import io

    from tfcv import _atomic
    from tfcv._run_dir import plot_path

    names = sorted({n.removeprefix("val_") for h in result.histories for n in h})
    figures = {f"learning_curves_{n}": learning_curves(result, n) for n in names}
    figures["fold_scores"] = fold_scores(result)
    if result.oof_targets is not None:
        if result.task == "classification":
            figures["confusion_matrix"] = confusion_matrix(result)
        else:
            figures["predicted_vs_true"] = predicted_vs_true(result)
    written = []
    for name, fig in figures.items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        path = plot_path(run_dir, f"{name}.png")
        _atomic.write_bytes(path, buffer.getvalue())
        written.append(path)
    return written


def reliability_diagram(y: Any, probabilities: Any, *, n_bins: int = 15, labels: list[str] | None = None):
    """Accuracy against confidence, per equal-width confidence bin.

    Args:
        y: Integer labels, `(n,)`.
        probabilities: Class probabilities `(n, classes)`, or a list of
            them (for example before and after a temperature) drawn as one
            line each.
        n_bins: `int`. Equal-width bins. Defaults to `15`.
        labels: One legend entry per array. Defaults to `"0"`, `"1"`, ...

    Returns:
        A `matplotlib.figure.Figure`; the legend gives each line's ECE.

    Example:

    >>> fig = tfcv.plots.reliability_diagram(y_test, [p, p_calibrated], labels=["raw", "T"])
    """
    from tfcv._calibration import expected_calibration_error, two_columns

    arrays = probabilities if isinstance(probabilities, (list, tuple)) else [probabilities]
    labels = labels or [str(i) for i in range(len(arrays))]
    y = np.asarray(y).astype("int64").reshape(-1)
    fig = _figure(5.2, 5.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", linewidth=1, label="perfect calibration")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for label, p in zip(labels, arrays):
        p = two_columns(p)
        confidence, correct = p.max(axis=1), (p.argmax(axis=1) == y)
        index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
        used = [b for b in range(n_bins) if np.any(index == b)]
        ax.plot([confidence[index == b].mean() for b in used], [correct[index == b].mean() for b in used],
                marker="o", label=f"{label} (ECE {expected_calibration_error(y, p, n_bins=n_bins):.3f})")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax.set_title("Reliability diagram")
    return fig


def shift_curves(evaluation: Any, metric: str = "accuracy", *, calibrated: bool | None = None):
    """A metric against shift severity, one panel per shift and one line per
    contender (clean data at severity 0), from `tfcv.uncertainty.evaluate`.

    Args:
        evaluation: A `tfcv.uncertainty.Evaluation` (or its `to_frame()`).
        metric: `str`. A column of the evaluation. Defaults to `"accuracy"`.
        calibrated: Keep only calibrated (`True`) or uncalibrated (`False`)
            rows. Defaults to `None` (both, labelled).

    Returns:
        A `matplotlib.figure.Figure`.
    """
    rows = evaluation.rows if hasattr(evaluation, "rows") else evaluation.to_dict("records")
    if not rows or metric not in rows[0]:
        raise ValueError(
            f"Invalid value for argument `metric`. Received: metric={metric!r}. "
            f"Expected one of {sorted(k for k in (rows[0] if rows else {}) if k not in ('contender', 'shift'))}."
        )
    if calibrated is not None:
        rows = [r for r in rows if bool(r["calibrated"]) == calibrated]
    shifts = sorted({r["shift"] for r in rows} - {"clean"})
    fig = _figure(3.2 * max(1, len(shifts)), 3.4)
    axes = fig.subplots(1, max(1, len(shifts)), sharey=True, squeeze=False)[0]
    names = sorted({(r["contender"], bool(r["calibrated"])) for r in rows})
    for ax, name in zip(axes, shifts or ["clean"]):
        for contender, cal in names:
            own = [r for r in rows if r["contender"] == contender and bool(r["calibrated"]) == cal]
            points = sorted((r["severity"], r[metric]) for r in own if r["shift"] in (name, "clean"))
            label = contender + (" (T)" if cal and calibrated is None else "")
            ax.plot([s for s, _ in points], [v for _, v in points], marker="o", label=label)
        ax.set_title(name)
        ax.set_xlabel("severity")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric)
    axes[-1].legend(fontsize="small")
    return fig
