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
    "confusion_matrix",
    "fold_scores",
    "learning_curves",
    "predicted_vs_true",
    "save_run_plots",
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
    import os

    from tfcv import _atomic

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
        path = os.path.join(run_dir, "plots", f"{name}.png")
        _atomic.write_bytes(path, buffer.getvalue())
        written.append(path)
    return written
