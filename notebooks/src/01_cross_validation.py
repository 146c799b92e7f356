# %% [markdown]
# # 1. Cross-validation, done right
#
# How good is a model *really*? A single train/validation split gives one number, and that number
# depends on luck: which samples happened to land in validation, how the weights were initialized.
# In this notebook you will **see** that luck by repeating single splits, then replace it with
# k-fold cross-validation using `tfcv.CrossValidator`: plain and stratified k-fold on the digits,
# per-fold learning curves, the mean ± standard deviation of every metric, and a confusion matrix
# built from out-of-fold predictions (every sample predicted by a model that never trained on it).
# Finally you will make the classic leakage mistake on purpose (normalizing with statistics of all
# the data before splitting), compare it side by side with the correct per-fold version, and see
# the same mistake turn a random guess into a "good" model.

# %% [markdown]
# ## Parameters
#
# The defaults give meaningful results in a few minutes on a laptop CPU or on Colab. The test suite
# runs every notebook with the environment variable `TFCV_NOTEBOOK_FAST=1`, which shrinks the work
# to a few seconds per step: the code is exercised, but the numbers printed in fast mode are not
# worth interpreting.

# %% tags=["parameters"]
import os

FAST = os.environ.get("TFCV_NOTEBOOK_FAST") == "1"

N_SAMPLES = 400 if FAST else 1797   # digits used (the data set has 1,797)
FOLDS = 2 if FAST else 5            # k of k-fold
EPOCHS = 8 if FAST else 20          # epochs per fold
SINGLE_SPLITS = 3 if FAST else 20   # repeated single train/validation splits
BATCH_SIZE = 32
SEED = 0

# %%
# %matplotlib inline
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's C++ start-up messages

import logging

import keras
import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import KFold, ShuffleSplit, StratifiedKFold, train_test_split

import tfcv

# tfcv builds a fresh model per fold; TensorFlow warns about the retracing this causes.
logging.getLogger("tensorflow").setLevel(logging.ERROR)

print("tfcv", tfcv.__version__, "| keras", keras.__version__)

# %% [markdown]
# ## The data
#
# `tfcv.datasets.load_digits()` returns scikit-learn's 1,797 handwritten digits as 8×8 grey images
# scaled to [0, 1], with labels 0-9. It ships inside scikit-learn, so nothing is downloaded.

# %%
x, y = tfcv.datasets.load_digits()
if N_SAMPLES < len(x):
    # A stratified subset keeps the ten classes in the same proportions.
    x, _, y, _ = train_test_split(x, y, train_size=N_SAMPLES, stratify=y, random_state=SEED)
print("x", x.shape, x.dtype, "| y", y.shape, "| samples per class:", np.bincount(y))

fig, axes = plt.subplots(1, 10, figsize=(10, 1.4))
for digit, ax in enumerate(axes):
    ax.imshow(x[np.flatnonzero(y == digit)[0], ..., 0], cmap="gray_r")
    ax.set_title(str(digit))
    ax.axis("off")
plt.show()

# %% [markdown]
# ## The model
#
# `CrossValidator` takes a *function* that returns a fresh, compiled Keras model: it calls it
# once per fold, so no fold ever starts from weights another fold has trained. Any Keras model
# works; here is a small CNN. Its first layer, `keras.layers.Normalization`, has no statistics
# yet: `tfcv` adapts it on each fold's **training** split only. Remember that, it matters at the
# end of the notebook.

# %%
def build_model(normalize=True):
    inputs = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Normalization(name="normalization")(inputs) if normalize else inputs
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    h = keras.layers.Dropout(0.2)(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


build_model().summary()

# %% [markdown]
# ## 1. One split is one draw of luck
#
# The usual recipe holds out a validation set (say one sample in five), trains, and reports the
# validation accuracy. Let's do exactly that several times, each time with a different random
# split. `CrossValidator` accepts any scikit-learn splitter, so `ShuffleSplit` gives us
# `SINGLE_SPLITS` independent single splits in one call (each with its own weight initialization,
# as a fresh run would have).

# %%
single = tfcv.CrossValidator(
    build_model,
    folds=ShuffleSplit(n_splits=SINGLE_SPLITS, test_size=1 / FOLDS, random_state=SEED),
    seed=SEED,
).fit(x, y, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=0)

single_scores = np.array(single.scores["accuracy"])
print("validation accuracy of each single split:", np.round(single_scores, 3))
print(f"lowest {single_scores.min():.3f}, highest {single_scores.max():.3f}: "
      f"a range of {100 * np.ptp(single_scores):.1f} percentage points")

# %%
fig, ax = plt.subplots(figsize=(7, 1.8))
ax.scatter(single_scores, np.zeros_like(single_scores), s=80, alpha=0.6)
ax.axvline(single_scores.mean(), color="k", linestyle="--", label="mean of the splits")
ax.set_yticks([])
ax.set_xlabel("validation accuracy")
ax.set_title("The same model, the same data: one dot per train/validation split")
ax.legend(loc="upper left")
plt.show()

# %% [markdown]
# Each dot is a result someone could have published. Two sources of luck are mixed here, and both
# are real: *which* samples are in the validation set, and the random initialization and shuffling
# of that run. With a few hundred validation images a single split also measures accuracy in steps
# of a fraction of a percent, so "model B beats model A by 0.5 points" on one split tells you very
# little.

# %% [markdown]
# ## 2. k-fold and stratified k-fold
#
# k-fold cross-validation cuts the data into `k` disjoint parts and trains `k` models, each
# validated on one part and trained on the others. Every sample is validated exactly once, so
# nothing is wasted and the `k` scores show how much the result moves.
#
# Plain `KFold` cuts at random; with ten classes and a few hundred samples a fold can end up with
# noticeably more 3s than 8s. `StratifiedKFold` cuts every class separately so that each fold keeps
# the class proportions of the whole data. A `tfcv.FoldPlan` records which samples each fold trains
# and validates on (and can be saved to JSON and reused), so we can look before training anything.

# %%
kfold = tfcv.FoldPlan.from_splitter(KFold(FOLDS, shuffle=True, random_state=SEED), x, y)
stratified = tfcv.FoldPlan.from_splitter(StratifiedKFold(FOLDS, shuffle=True, random_state=SEED), x, y)
print(stratified)

overall = np.bincount(y, minlength=10) / len(y)
fig, axes = plt.subplots(1, 2, figsize=(11, 3), sharey=True)
for ax, (name, plan) in zip(axes, [("KFold", kfold), ("StratifiedKFold", stratified)]):
    for k, (_, val_idx) in enumerate(plan):
        share = np.bincount(y[val_idx], minlength=10) / len(val_idx)
        ax.plot(range(10), 100 * (share - overall), marker="o", label=f"fold {k + 1}")
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_xticks(range(10))
    ax.set_xlabel("class")
    ax.set_title(name)
axes[0].set_ylabel("share in validation fold\nminus share overall (points)")
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# Now train both. `fit` builds one fresh model per fold, adapts its `Normalization` layer on that
# fold's training split, trains, scores the held-out fold and keeps its predictions.
# (`folds=FOLDS`, an int, would give the stratified plan too: tfcv picks `StratifiedKFold` with
# shuffling for class labels.) `verbose=0` keeps the notebook short; leave it out to watch one
# progress line per epoch.

# %%
results = {}
for name, plan in [("KFold", kfold), ("StratifiedKFold", stratified)]:
    cv = tfcv.CrossValidator(build_model, folds=plan, seed=SEED)
    results[name] = cv.fit(x, y, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=0)

for name, res in results.items():
    print(f"{name:>16}: accuracy {res.mean('accuracy'):.4f} ± {res.std('accuracy'):.4f}")

result = results["StratifiedKFold"]
print()
print(result.summary())

# %% [markdown]
# `summary()` has one row per fold and a last row with the **mean ± standard deviation** over the
# folds: `accuracy` and macro `precision`, `recall` and `f1` come from scikit-learn on the held-out
# predictions, `loss` is the model's own compiled metric. The same numbers are in `result.scores`
# (a dict of lists), `result.mean(name)` and `result.std(name)`.
#
# How to read the standard deviation: it describes how much the score moves from fold to fold. It
# is not a confidence interval; the folds share most of their training data, so they are not
# independent experiments. Still, a difference between two models that is much smaller than this
# spread is not a difference you have shown.
#
# `tfcv.plots.fold_scores` draws each fold's score as a dot over a box plot, with the mean ± std
# written above each metric. (Every function of `tfcv.plots` returns a matplotlib `Figure`: leave
# it as the last value of a cell to see it, or save it with `fig.savefig(path)`.)

# %%
tfcv.plots.fold_scores(result)

# %% [markdown]
# ## 3. Per-fold learning curves
#
# `result.histories[k]` is fold `k`'s Keras `History.history`. Plotting the folds together shows
# whether they all behave alike: converged or still improving, over-fitting (validation loss going
# up while training loss goes down), one fold much harder than the others.
# `tfcv.plots.learning_curves` draws every fold as a thin line (training solid, validation
# dashed), their mean as a thick line and ±1 standard deviation as a band.

# %%
from IPython.display import display

display(tfcv.plots.learning_curves(result, "loss"))
display(tfcv.plots.learning_curves(result, "accuracy"))

# %% [markdown]
# ## 4. Out-of-fold predictions and the confusion matrix
#
# `result.oof_predictions` holds one row of class probabilities per input sample, in input order,
# each made by the fold model that did **not** train on that sample; `result.oof_targets` holds the
# matching labels. Together they are an honest prediction for the whole data set: a confusion
# matrix built from them shows which digits the model confuses, using every sample once.

# %%
oof_true = result.oof_targets.astype(int)
oof_predicted = result.oof_predictions.argmax(axis=1)
print(f"out-of-fold accuracy over all {len(oof_true)} samples: {np.mean(oof_true == oof_predicted):.4f}")
pairs, counts = np.unique(np.stack([oof_true, oof_predicted])[:, oof_true != oof_predicted], axis=1, return_counts=True)
for i in np.argsort(-counts)[:3]:
    print(f"{counts[i]} images of a {pairs[0, i]} predicted as {pairs[1, i]}")
tfcv.plots.confusion_matrix(result)

# %% [markdown]
# ## 5. The classic leakage mistake
#
# A very common pipeline normalizes the whole data set first ("subtract the mean, divide by the
# standard deviation") and only then splits it. The statistics then include the validation
# samples: a little information about the validation fold has leaked into the training pipeline,
# and the validation score is no longer a score on unseen data.
#
# The correct version computes the statistics on each fold's training split only. That is what
# `tfcv` did above: `build_model()` contains an un-adapted `Normalization` layer, and tfcv adapted
# it on every fold's training samples. Now the leaky version, with **the same folds** (the same
# `StratifiedKFold` on the same labels), on data normalized beforehand with statistics of all
# samples, and the same model without its `Normalization` layer.

# %%
mean, std = x.mean(), x.std()
x_leaky = (x - mean) / std  # statistics of ALL samples, validation folds included

leaky = tfcv.CrossValidator(
    lambda: build_model(normalize=False),
    folds=StratifiedKFold(FOLDS, shuffle=True, random_state=SEED),
    seed=SEED,
).fit(x_leaky, y, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=0)

print("statistics used to normalize:")
print(f"  leaky, all {len(x)} samples: mean {mean:.4f}, std {std:.4f}")
for k, model in enumerate(result.models):
    layer = model.get_layer("normalization")
    fold_mean = float(np.ravel(layer.mean)[0])
    fold_std = float(np.sqrt(np.ravel(layer.variance)[0]))
    print(f"  correct, fold {k + 1} training split: mean {fold_mean:.4f}, std {fold_std:.4f}")

# %%
print(f"{'':>28}{'accuracy':>20}{'f1':>20}")
for name, res in [("leaky (normalize, then split)", leaky), ("correct (per-fold statistics)", result)]:
    print(f"{name:>28}" + "".join(f"{res.mean(m):>12.4f} ± {res.std(m):.4f}" for m in ["accuracy", "f1"]))
gap = np.array(leaky.scores["accuracy"]) - np.array(result.scores["accuracy"])
print("\nleaky minus correct, fold by fold:", np.round(gap, 4))

# %% [markdown]
# On these digits the two rows are close, often equal to the last digit shown: the mean and spread
# of the pixels barely change from one fold to the next, so this particular leak is tiny here. That
# is exactly what makes it dangerous: the pipeline is wrong, and nothing in the scores says so. The same mistake becomes large when the
# data is small, when statistics are computed per feature, and above all when the preprocessing
# step looks at the **labels** (choosing features, target encoding, oversampling).
#
# To see it, take pure noise: 2,000 random "features" and random labels, so the best possible
# accuracy is 50%. The leaky pipeline picks the 20 features most correlated with the labels on
# **all** the data, then cross-validates a classifier on them. The correct pipeline makes the same
# choice inside each fold, from its training split only. scikit-learn's `Pipeline` does this for
# scikit-learn steps; for Keras models tfcv does it for the `Normalization` and `Discretization`
# layers inside the model. A few milliseconds of scikit-learn are enough to show the effect:

# %%
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline

rng = np.random.default_rng(SEED)
noise = rng.normal(size=(200, 2000))
coin_flips = rng.integers(0, 2, size=200)
splitter = StratifiedKFold(FOLDS, shuffle=True, random_state=SEED)

chosen_on_all_data = SelectKBest(f_classif, k=20).fit_transform(noise, coin_flips)
leaky_scores = cross_val_score(LogisticRegression(), chosen_on_all_data, coin_flips, cv=splitter)
correct_scores = cross_val_score(
    make_pipeline(SelectKBest(f_classif, k=20), LogisticRegression()), noise, coin_flips, cv=splitter)
print(f"pure noise, leaky selection:    accuracy {leaky_scores.mean():.3f} ± {leaky_scores.std():.3f}")
print(f"pure noise, per-fold selection: accuracy {correct_scores.mean():.3f} ± {correct_scores.std():.3f}")

# %% [markdown]
# The leaky pipeline "learns" coin flips. The rule to take away: **anything that is fitted on data
# (statistics, vocabularies, selected features, imputation values) must be fitted inside the fold,
# on its training split.** Put such steps inside the Keras model as layers, and tfcv adapts them
# per fold for you.
#
# ## Exercises
#
# 1. Set `N_SAMPLES = 200` and rerun. How do the range of the single splits and the fold standard
#    deviation change? Why?
# 2. Replace the `StratifiedKFold` plan with `RepeatedStratifiedKFold(n_splits=5, n_repeats=3)`
#    (from `sklearn.model_selection`). How many models are trained? What does
#    `result.oof_predictions` hold for a sample validated three times?
# 3. Pass `run_dir="runs/digits"` to `fit`, interrupt the kernel in the middle of a fold, and run
#    the cell again. Which folds are retrained?
# 4. Make the leak bigger: normalize **per pixel** (mean and standard deviation of each of the 64
#    pixels over all samples) before splitting, and compare with a per-pixel `Normalization` layer
#    (`keras.layers.Normalization(axis=(1, 2, 3))`) adapted per fold. What happens to pixels that
#    are almost always zero?
# 5. In the noise experiment, vary the number of selected features (`k=5`, `k=200`) and the number
#    of samples. When is the leaky score furthest from 50%?
