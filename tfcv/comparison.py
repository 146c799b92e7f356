"""`compare`: is run B really better than run A on the same folds?

Two cross-validation runs on one `FoldPlan` give paired per-fold scores.
Their differences are not independent (every two training sets share most
of their rows), so the naive paired t-test underestimates their variance and
calls noise a difference. The Nadeau–Bengio corrected resampled t-test
(Nadeau & Bengio, "Inference for the Generalization Error", Machine Learning
52, 2003; for repeated k-fold, Bouckaert & Frank, PAKDD 2004) inflates the
variance by the test/train size ratio:

    t = mean(d) / sqrt((1 / J + n_test / n_train) * var(d, ddof=1)),  J - 1 degrees of freedom

with `d` the J per-fold differences (every repetition of a repeated
splitter counts).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tfcv.result import CVResult

__all__ = ["Comparison", "compare"]


class Comparison:
    """Paired comparison of two runs on the same folds (b − a).

    Attributes:
        metric: `str`. The compared score.
        scores_a, scores_b: Per-fold scores of each run.
        differences: Per-fold `b − a`.
        mean_difference: Their mean.
        t: The Nadeau–Bengio corrected t statistic.
        df: Degrees of freedom (`folds − 1`).
        p_value: Two-sided p-value of "no difference".
        ci: `(low, high)`, the confidence interval of the mean difference.
        confidence: The interval's level.
        test_train_ratio: The mean `n_test / n_train` of the folds.
        naive_t, naive_p_value: The uncorrected paired t-test, for contrast.
    """

    def __init__(self, metric, scores_a, scores_b, *, test_train_ratio, confidence, names=("A", "B")):
        from scipy import stats

        self.metric = metric
        self.names = tuple(names)
        self.scores_a = np.asarray(scores_a, dtype="float64")
        self.scores_b = np.asarray(scores_b, dtype="float64")
        self.differences = self.scores_b - self.scores_a
        self.confidence = float(confidence)
        self.test_train_ratio = float(test_train_ratio)
        n = len(self.differences)
        self.df = n - 1
        self.mean_difference = float(self.differences.mean())
        variance = float(self.differences.var(ddof=1))
        se = math.sqrt((1 / n + self.test_train_ratio) * variance)
        naive_se = math.sqrt(variance / n)
        self.t, self.p_value = _t_test(self.mean_difference, se, self.df)
        self.naive_t, self.naive_p_value = _t_test(self.mean_difference, naive_se, self.df)
        half = float(stats.t.ppf(0.5 + self.confidence / 2, self.df)) * se
        self.ci = (self.mean_difference - half, self.mean_difference + half)

    @property
    def significant(self) -> bool:
        """Whether the difference is larger than the folds' noise at the
        interval's level (the interval excludes 0)."""
        return self.p_value < 1 - self.confidence

    def summary(self) -> str:
        """One sentence for people: the difference, its interval, and
        whether it is larger than the folds' noise."""
        a, b = self.names
        level = f"{self.confidence:.0%}"
        numbers = (
            f"mean {self.metric} difference {b} − {a} = {self.mean_difference:+.4f} over {len(self.differences)} folds "
            f"({level} CI [{self.ci[0]:+.4f}, {self.ci[1]:+.4f}], corrected t = {self.t:.2f}, p = {self.p_value:.3g})"
        )
        if self.significant:
            direction = "higher" if self.mean_difference > 0 else "lower"
            return f"{b}'s {self.metric} is {direction} than {a}'s, by more than the folds' noise: {numbers}."
        return f"The difference is within the folds' noise; these folds cannot tell {a} and {b} apart: {numbers}."

    __str__ = summary

    def __repr__(self) -> str:
        return (
            f"Comparison(metric={self.metric!r}, mean_difference={self.mean_difference:.4f}, t={self.t:.3f}, "
            f"p_value={self.p_value:.4g}, ci=({self.ci[0]:.4f}, {self.ci[1]:.4f}))"
        )


def _t_test(mean, se, df):
    from scipy import stats

    if se == 0:
        # Every fold moved by the same amount: no noise to compare against.
        return (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    t = mean / se
    return float(t), float(2 * stats.t.sf(abs(t), df))


def compare(
    result_a: CVResult | Any,
    result_b: CVResult | Any,
    metric: str = "accuracy",
    *,
    confidence: float = 0.95,
    test_train_ratio: float | None = None,
    names: tuple[str, str] = ("A", "B"),
) -> Comparison:
    """Compares two cross-validation runs fold by fold (b − a).

    Both runs must share one `FoldPlan` (same data, same folds), so that
    every difference is between two models validated on the same rows.
    The test is the Nadeau–Bengio corrected resampled t-test, which accounts
    for the overlap of the folds' training sets; repeated splitters
    contribute every repetition.

    Args:
        result_a: A `CVResult` or the path of a run directory.
        result_b: A `CVResult` or the path of a run directory.
        metric: `str`. A score both results hold. Defaults to `"accuracy"`.
        confidence: `float` in (0, 1). Level of the interval; the
            difference is called larger than the noise when the two-sided
            p-value is below `1 - confidence`. Defaults to `0.95`.
        test_train_ratio: `float`. `n_test / n_train` of the folds. Defaults
            to the mean over the plan's folds (required for folds from a
            callable, whose sizes the plan does not hold).
        names: `(name_a, name_b)` used in the summary. Defaults to
            `("A", "B")`.

    Returns:
        A `Comparison`.

    Raises:
        ValueError: When the runs do not share a fold plan (saying how they
            differ) or lack `metric`.

    Example:

    >>> comparison = tfcv.compare(baseline, augmented, metric="accuracy")
    >>> print(comparison.summary())
    """
    result_a, result_b = (_as_result(r, where) for r, where in ((result_a, "result_a"), (result_b, "result_b")))
    if not 0 < confidence < 1:
        raise ValueError(f"Invalid value for argument `confidence`. Received: confidence={confidence!r}. "
                         "Expected a float in (0, 1).")
    problem = plan_difference(result_a.plan, result_b.plan)
    if problem is not None:
        raise ValueError(
            f"The two runs cannot be compared fold by fold: {problem}. Run both with the same data, folds and seed "
            "(or pass the same FoldPlan as `folds`)."
        )
    for result, where in ((result_a, "result_a"), (result_b, "result_b")):
        if metric not in result.scores:
            raise ValueError(f"Invalid value for argument `metric`. Received: metric={metric!r}, which {where} does "
                             f"not hold. Available: {sorted(result.scores)}.")
    if len(result_a.plan) < 2:
        raise ValueError("A comparison needs at least 2 folds.")
    if test_train_ratio is None:
        test_train_ratio = _test_train_ratio(result_a.plan)
    return Comparison(metric, result_a.scores[metric], result_b.scores[metric], test_train_ratio=test_train_ratio,
                      confidence=confidence, names=names)


def plan_difference(a, b) -> str | None:
    """How two fold plans differ, in words, or `None` when they are equal."""
    if len(a) != len(b):
        return f"result_a has {len(a)} folds, result_b has {len(b)}"
    if a.fingerprint != b.fingerprint:
        fa, fb = a.fingerprint or {}, b.fingerprint or {}
        if fa.get("n_samples") != fb.get("n_samples"):
            return f"result_a ran on {fa.get('n_samples')} samples, result_b on {fb.get('n_samples')}"
        return "they ran on different data (the data fingerprints differ)"
    if a != b:
        for k, ((ta, va), (tb, vb)) in enumerate(zip(a.folds, b.folds)):
            if not (_same_part(ta, tb) and _same_part(va, vb)):
                return (
                    f"fold {k} validates different rows (splitters {a.splitter!r} and {b.splitter!r}; "
                    "a different seed or splitter makes different folds)"
                )
        return "the fold plans differ"
    return None


def _same_part(x, y) -> bool:
    if isinstance(x, str) or isinstance(y, str):
        return x == y
    return np.array_equal(np.asarray(x), np.asarray(y))


def _test_train_ratio(plan) -> float:
    if plan.uses_indices:
        sizes = [(len(val), len(train)) for train, val in plan.folds]
    elif (plan.source or {}).get("kind") == "tfds":
        from tfcv import data as tfcv_data

        sizes = []
        for k in range(len(plan)):
            train, val = tfcv_data.fold_indices(plan, k)
            sizes.append((len(val), len(train)))
    else:
        raise ValueError(
            "The fold plan does not hold the folds' sizes (folds from a callable): pass "
            "test_train_ratio=n_test / n_train."
        )
    return float(np.mean([n_test / n_train for n_test, n_train in sizes]))


def _as_result(value, where) -> CVResult:
    if isinstance(value, CVResult):
        return value
    if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
        return CVResult.load(value)
    raise TypeError(f"Invalid value for argument `{where}`. Received: {where}={value!r} of type "
                    f"{type(value).__name__}. Expected a CVResult or a run directory.")
