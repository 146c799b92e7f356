# %% [markdown]
# # 5. Cross-validating data on disk: TensorFlow Datasets and scale
#
# The earlier notebooks held the whole data set in memory as NumPy arrays. Real image data sets
# usually live on disk, and k-fold cross-validation reads each example `k - 1` times for training
# and once for validation. In this notebook you will cross-validate a **TensorFlow Datasets**
# (TFDS) dataset without ever loading it whole: you will see how TFDS **split slicing**
# (`"train[20%:40%]"`) expresses folds, how `tfcv.data.tfds_folds` builds a fold plan from slices
# (or stratified folds from the labels alone), and how `CrossValidator.fit(x=None, ...)` streams
# each fold from disk through a `tfcv.data.Pipeline`. For folds that a plan cannot describe, you
# will pass a function `fold -> (train_ds, val_ds)`. Along the way you will time tfcv against the
# loop you would write by hand, against itself running folds in parallel processes (`n_jobs`), and
# against training every fold's model side by side in one graph (`strategy="stacked"`), and check
# that the faster ways of running give the same answer.

# %% [markdown]
# ## Parameters
#
# The defaults give meaningful results in a few minutes on a CPU. The test suite sets
# `TFCV_NOTEBOOK_FAST=1`, which shrinks everything so that the notebook runs in seconds; the
# numbers printed in fast mode, timings included, are not worth interpreting.

# %% tags=["parameters"]
import os

FAST = os.environ.get("TFCV_NOTEBOOK_FAST") == "1"

FOLDS = 2 if FAST else 5
EPOCHS = 3 if FAST else 15
SUBSET_PERCENT = 30 if FAST else 50   # share of the split cross-validated in section 5
BATCH_SIZE = 64
SEED = 0
DATA_DIR = os.path.abspath("tensorflow_datasets")  # where TFDS keeps prepared datasets

# %%
# %matplotlib inline
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's C++ start-up messages

import logging
import time

import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import tfcv

# tfcv builds a fresh model per fold; TensorFlow warns about the retracing this causes.
logging.getLogger("tensorflow").setLevel(logging.ERROR)
tfds.disable_progress_bar()

# %% [markdown]
# ## 1. A TFDS dataset, prepared offline
#
# TFDS datasets are prepared once (downloaded and written as sharded files under a data
# directory) and then read lazily. To keep this notebook offline, tfcv ships a real TFDS builder
# for scikit-learn's digits, registered as `"tfcv_digits"`: 1,797 images stored as `uint8`
# intensities 0-16, in scikit-learn's order. Everything below works the same with a catalogue
# dataset such as `"mnist"` or `"cifar10"` (which TFDS downloads on first use).

# %%
data_dir = tfcv.data.prepare_digits(DATA_DIR)
builder = tfds.builder("tfcv_digits", data_dir=data_dir)
print(builder.info.features)
print("splits:", {name: split.num_examples for name, split in builder.info.splits.items()})

# %% [markdown]
# ## 2. Folds as split slices
#
# TFDS reads any part of a split given as a string: `"train[:10%]"`, `"train[250:500]"`, and unions
# with `+`. A k-fold plan is just `k` pairs of such strings, and nothing needs to be read to make
# it:

# %%
ds = tfds.load("tfcv_digits", split="train[:10%]", data_dir=data_dir, as_supervised=True)
print("train[:10%] holds", ds.cardinality().numpy(), "examples")

plan = tfcv.data.tfds_folds("tfcv_digits", k=FOLDS, data_dir=data_dir)
print(plan)
for k, (train_split, val_split) in enumerate(plan):
    print(f"fold {k + 1}: train on {train_split!r:>36}, validate on {val_split!r}")

# %% [markdown]
# `tfcv.data.fold_indices(plan, k)` resolves the strings exactly as TFDS does (to the example
# positions), and `tfcv.data.labels_of(plan, k)` reads the labels of a fold's validation data
# without decoding a single image. Together they check the two properties every k-fold plan needs,
# and show how the classes are spread over the folds:

# %%
validation = [tfcv.data.fold_indices(plan, k)[1] for k in range(len(plan))]
everything = np.concatenate(validation)
n_examples = builder.info.splits["train"].num_examples
print("validation folds are disjoint:", len(everything) == len(np.unique(everything)))
print("and cover the split:          ", np.array_equal(np.sort(everything), np.arange(n_examples)))

stratified = tfcv.data.tfds_folds("tfcv_digits", k=FOLDS, stratify=True, seed=SEED, data_dir=data_dir)
fig, axes = plt.subplots(1, 2, figsize=(11, 3), sharey=True)
for ax, (name, fold_plan) in zip(axes, [("slices", plan), ("stratify=True", stratified)]):
    for k in range(len(fold_plan)):
        counts = np.bincount(tfcv.data.labels_of(fold_plan, k), minlength=10)
        ax.plot(range(10), counts / counts.sum(), marker="o", label=f"fold {k + 1}")
    ax.set_xticks(range(10))
    ax.set_xlabel("class")
    ax.set_title(f"class shares per validation fold: {name}")
axes[0].set_ylabel("share")
axes[1].legend(fontsize=8)
plt.show()

# %% [markdown]
# Slices are contiguous runs of examples, so they are only as random as the order the examples are
# stored in. TFDS shuffles most datasets when it prepares them, which makes slices random samples;
# `tfcv_digits` keeps scikit-learn's order, which happens to cycle through the classes, so its
# slices are roughly balanced too. For a dataset stored in a meaningful order (sorted by class or
# by date), use `stratify=True`: tfcv reads the labels once, makes `StratifiedKFold` folds of
# example positions, and `fold_datasets` picks each fold's examples while streaming the split.
#
# ## 3. Cross-validation by hand
#
# First, the loop you would write without tfcv, so that we know what we are comparing with: for
# every fold, load the two slices, rescale the images to [0, 1], cache, shuffle, batch, build a
# fresh model, adapt its normalization on the training split (not on all the data, see notebook 1),
# train, and evaluate.

# %%
SPEC = {
    "input_shape": [8, 8, 1],
    "num_classes": 10,
    "preprocessing": {"normalization": True},
    "backbone": {"blocks": [16, 32]},
    "head": {"units": [32]},
    "training": {"learning_rate": 3e-3},
}
build = tfcv.ModelBuilder(SPEC)


def load(split):
    ds = tfds.load("tfcv_digits", split=split, data_dir=data_dir, as_supervised=True)
    return ds.map(lambda image, label: (tf.cast(image, "float32") / 16.0, label)).cache()


def cross_validate_by_hand():
    # tfcv turns on TensorFlow's op determinism so that runs repeat exactly; do the same here, so
    # that the timings below compare like with like.
    tf.config.experimental.enable_op_determinism()
    accuracies = []
    for k, (train_split, val_split) in enumerate(plan):
        keras.utils.set_random_seed(SEED + k)
        train = load(train_split).shuffle(1024, seed=SEED + k).batch(BATCH_SIZE).prefetch(tf.data.AUTOTUNE)
        val = load(val_split).batch(BATCH_SIZE).prefetch(tf.data.AUTOTUNE)
        model = build()
        model.get_layer("normalization").adapt(train.map(lambda image, label: image))
        model.fit(train, validation_data=val, epochs=EPOCHS, verbose=0)
        accuracies.append(model.evaluate(val, verbose=0, return_dict=True)["accuracy"])
    return accuracies


start = time.perf_counter()
by_hand = cross_validate_by_hand()
seconds_by_hand = time.perf_counter() - start
print("accuracy per fold:", np.round(by_hand, 4))
print(f"mean ± std {np.mean(by_hand):.4f} ± {np.std(by_hand):.4f}, in {seconds_by_hand:.1f} s")

# %% [markdown]
# ## 4. The same with tfcv: `fit(x=None)` streams each fold
#
# Given a plan made by `tfds_folds`, `CrossValidator.fit` needs no `x` and no `y`: each fold's
# training and validation data are streamed from disk by `tfcv.data.fold_datasets`, through the
# `Pipeline` you pass (here: rescale by 1/16 and cache the decoded fold in memory, which suits a
# small dataset; `cache=None` streams every epoch from disk, `cache="some/dir"` caches to files).
# tfcv adapts the normalization on each streamed training split, and also returns what the loop
# above did not compute: scikit-learn's metrics per fold, the histories, and out-of-fold
# predictions in the split's order. Here the folds train one after the other, as in the loop
# (`strategy="sequential"`); section 6 shows tfcv's default, which trains them side by side.

# %%
pipeline = tfcv.data.Pipeline(rescale=1 / 16, cache="memory")
cv = tfcv.CrossValidator(build, folds=plan, seed=SEED, strategy="sequential")
start = time.perf_counter()
result = cv.fit(epochs=EPOCHS, batch_size=BATCH_SIZE, pipeline=pipeline, verbose=0)
seconds_tfcv = time.perf_counter() - start
print(result.summary())

labels = tfcv.data.labels_of(plan)
oof_accuracy = np.mean(result.oof_predictions.argmax(axis=1) == labels)
print(f"\nout-of-fold accuracy over all {len(labels)} examples: {oof_accuracy:.4f}")

# %% [markdown]
# How long did each take? The numbers below are measured on this machine in this run; they vary
# between runs and machines. For small models a large part of the time is overhead rather than
# arithmetic: per fold, building the model and tracing its training, evaluation and prediction
# functions; per batch, one call from Python into the traced function. tfcv trims some of it: it
# runs a whole epoch as one traced call when no callback needs per-batch hooks, and when the
# folds' models have the same architecture it traces one model and swaps each fold's freshly built
# weights and optimizer state into it. (Not here: this model adapts a `Normalization` layer, whose
# statistics Keras bakes into the traced functions as constants, so every fold is traced anew in
# sequential training.)
# It also does work the loop above skips: it predicts every validation fold to compute the
# out-of-fold predictions and scikit-learn's metrics.

# %%
fit_seconds = sum(info["seconds"] for info in result.fold_info)
print(f"{'hand-written loop:':<32}{seconds_by_hand:6.1f} s   accuracy {np.mean(by_hand):.4f} ± {np.std(by_hand):.4f}")
print(f"{'tfcv, one fold after another:':<32}{seconds_tfcv:6.1f} s   accuracy {result.mean('accuracy'):.4f} ± "
      f"{result.std('accuracy'):.4f}")
print(f"{'  of which inside model.fit:':<32}{fit_seconds:6.1f} s")

# %% [markdown]
# ## 5. Folds in parallel: `n_jobs`
#
# Folds are independent: nothing in fold 2 depends on fold 1. `fit(..., n_jobs=N)` trains up to
# `N` folds at the same time in worker processes through joblib, as scikit-learn's
# `cross_validate(n_jobs=...)` does; `-1` uses every core. Each worker limits TensorFlow to its
# share of the cores. The fold plan and the per-fold seeds are those of the sequential run, so the
# scores match it up to floating-point noise. Inside `joblib.parallel_backend("ray")` (or Dask,
# Spark) the same call spreads the folds over a cluster.

# %%
start = time.perf_counter()
parallel = cv.fit(epochs=EPOCHS, batch_size=BATCH_SIZE, pipeline=pipeline, verbose=0, n_jobs=-1)
seconds_parallel = time.perf_counter() - start
print("accuracy per fold, one after another:", np.round(result.scores["accuracy"], 4))
print("accuracy per fold, n_jobs=-1:        ", np.round(parallel.scores["accuracy"], 4))
print(f"{os.cpu_count()} cores; {seconds_tfcv:.1f} s one after another, {seconds_parallel:.1f} s in parallel")

# %% [markdown]
# Parallel folds are not free: every worker is a fresh Python process that imports TensorFlow,
# loads its data and traces its own functions before training. When folds are short (fast mode,
# tiny models) that start-up can cost more than it saves; when each fold trains for minutes, and
# with more cores than folds need, the folds finish in roughly the time of the slowest one. Run the
# notebook with the full parameters and compare. The workers are kept alive for a while, so a
# second parallel run in the same session starts faster.

# %% [markdown]
# ## 6. Folds side by side in one graph: `strategy="stacked"`
#
# Parallel workers use more cores; stacking uses the cores of this one process better. With
# `CrossValidator(..., strategy="stacked")` tfcv builds the `k` fold models once and trains them
# side by side as one Keras model, with a single `fit`. At every training step each fold's copy
# gets one batch drawn from *its own* fold's training split and runs its own training step on it.
# It is cheaper for small models because it removes overhead, not arithmetic:
#
# - **Less overhead per fold.** One `fit` instead of `k`, one graph, and a whole epoch of every
#   fold runs as one call from Python (`steps_per_execution`): one call per epoch for all `k`
#   folds, where the hand-written loop makes one per batch and fold, and the sequential strategy
#   one per epoch and fold. The copies also share one trace of the step: it is traced once, for
#   the first fold, then called with each copy's variables and constants (such as each copy's own
#   `Normalization` statistics).
# - **Idle cores put to work.** One fold's step on 64 images of 8x8 pixels is a handful of small
#   kernels that cannot keep even two cores busy. The copies' steps are independent operations of
#   one graph, so TensorFlow runs them concurrently.
#
# What it keeps is what makes cross-validation valid: the folds stay independent. Each copy has
# its own weights, optimizer state, metrics and callbacks (early stopping stops one fold, not the
# others), adapts its normalization on its own training split, and never sees its fold's
# validation split except to be validated on it. Here, with a TFDS plan, each copy streams its
# own fold's slices through the same `pipeline`. The result is the same `CVResult` as before, with
# `k` independent `keras.Model`s. `strategy="auto"`, the default, stacks whenever the model
# allows it and the `k` copies fit in memory, and falls back to one fold after another when they
# do not (stateful layers, a model that overrides `fit()`, too little memory);
# `result.info["strategy"]` and `result.info["strategy_reason"]` record which one ran and why.
# Stacking runs in this process, so `n_jobs` or `distribute` make `auto` train sequentially.

# %%
stacked_cv = tfcv.CrossValidator(build, folds=plan, seed=SEED, strategy="stacked")
start = time.perf_counter()
stacked = stacked_cv.fit(epochs=EPOCHS, batch_size=BATCH_SIZE, pipeline=pipeline, verbose=0)
seconds_stacked = time.perf_counter() - start
# One fit trained every fold, so every fold records the same time inside it.
stacked_fit_seconds = stacked.fold_info[0]["seconds"]
print("strategy that ran:", stacked.info["strategy"])
print(f"{len(stacked.models)} fold models, sharing no weights:",
      all(a is not b for a, b in zip(stacked.models[0].weights, stacked.models[1].weights)))
print(stacked.summary())

# %% [markdown]
# Do the two ways of running agree? Not digit for digit: the stacked run draws each fold's batches
# differently from one `fit` per fold, so the weights take a different path to a similar place.
# They should agree within the uncertainty that cross-validation itself reports, the spread of the
# scores over the folds:

# %%
sequential_accuracy = np.asarray(result.scores["accuracy"])
stacked_accuracy = np.asarray(stacked.scores["accuracy"])
print(f"{'fold':>4} | {'sequential':>10} | {'stacked':>8}")
for k, (a, b) in enumerate(zip(sequential_accuracy, stacked_accuracy)):
    print(f"{k + 1:>4} | {a:>10.4f} | {b:>8.4f}")
print(f"mean ± std: sequential {sequential_accuracy.mean():.4f} ± {sequential_accuracy.std():.4f}, "
      f"stacked {stacked_accuracy.mean():.4f} ± {stacked_accuracy.std():.4f}")
difference = abs(stacked_accuracy.mean() - sequential_accuracy.mean())
fold_std = sequential_accuracy.std()
print(f"difference of the means {difference:.4f}: "
      f"{'within' if difference <= fold_std else 'more than'} one fold std of the sequential run ({fold_std:.4f})")

# %% [markdown]
# Look at the last line first. With the full parameters, expect the difference of the means to
# fall inside the spread over the folds: whichever way you ran it, you would draw the same
# conclusion about the model. Individual folds can move by more than that, in either direction,
# because each fold is a single noisy training run. In fast mode the models are stopped far from
# convergence and the std of two folds is a crude estimate, so the check can go either way there;
# run with the full parameters before reading anything into it.
#
# Now the timings of all four runs, side by side (the lighter bars: the time inside `fit`):

# %%
runs = [
    ("by hand", seconds_by_hand, None),
    ("tfcv", seconds_tfcv, fit_seconds),
    ("tfcv, n_jobs=-1", seconds_parallel, None),
    ('tfcv, strategy="stacked"', seconds_stacked, stacked_fit_seconds),
]
for name, seconds, inside_fit in runs:
    inside = "" if inside_fit is None else f"   ({inside_fit:.1f} s inside fit)"
    print(f"{name:<26}{seconds:6.1f} s{inside}")
print(f"\nstacked / one fold after another: {seconds_stacked / seconds_tfcv:.2f}x on {os.cpu_count()} cores")

fig, ax = plt.subplots(figsize=(7, 2.6))
names = [name for name, _, _ in runs]
ax.barh(names, [seconds for _, seconds, _ in runs], color=["C7", "C0", "C1", "C2"])
ax.barh([name for name, _, inside in runs if inside is not None],
        [inside for _, _, inside in runs if inside is not None], color="C9", label="inside fit")
ax.invert_yaxis()
ax.set_xlabel("seconds (this run, this machine)")
ax.legend(fontsize=8, loc="lower right")
plt.show()

# %% [markdown]
# Read these bars with care. Each is a single run, on a machine that may be busy with other work,
# and in fast mode every run is mostly start-up and tracing: run the cells again and the bars
# move, sometimes enough to swap places. Nor are the runs on an equal footing: the first one in
# the session pays one-off costs, and the stacked run comes last. What to expect on a machine with
# two CPU cores is a modest gain from stacking, not a multiple. Stacking removes overhead and lets
# the copies' small kernels run side by side on otherwise idle cores; it cannot make the
# arithmetic cheaper, since the same two cores still do the same multiply-adds. So the ratio
# depends on how much of a run is overhead rather than arithmetic: small models, small batches,
# many folds and idle cores favour stacking; large models and large images, which already keep
# the cores busy, bring the strategies together. The part of a bar outside its lighter
# "inside fit" part is the rest of the work: building the models, adapting the normalization,
# and the final evaluation and prediction of every fold. To measure the ratio on your own machine,
# with repetitions and without the noise of a notebook, run `python bench/cv_speed.py` from the
# repository, which times the hand-written loop against tfcv's strategies on the digits.

# %% [markdown]
# ## 7. Folds a plan cannot describe: a function `fold -> (train_ds, val_ds)`
#
# Sometimes the folds are not slices of one split: you want to cross-validate only part of a
# split for a quick experiment, combine several splits, or build the datasets with your own
# `tf.data` code. Pass a function that returns fold `k`'s batched `(train_ds, val_ds)`, and
# `folds=` the number of folds. Here we cross-validate the first `SUBSET_PERCENT` % of the split:
# fold `k` validates on the `k`-th slice of that part and trains on the rest of it. The slice
# boundaries are written once and shared by neighbouring folds, so the validation slices stay
# disjoint.

# %%
def subset_splits(k):
    """The (train, validation) split strings of fold k over the first SUBSET_PERCENT % of "train"."""
    bounds = [f"{SUBSET_PERCENT * i / FOLDS:g}%" for i in range(FOLDS + 1)]
    train_parts = []
    if k > 0:
        train_parts.append(f"train[:{bounds[k]}]")
    if k < FOLDS - 1:
        train_parts.append(f"train[{bounds[k + 1]}:{bounds[-1]}]")
    return "+".join(train_parts), f"train[{bounds[k]}:{bounds[k + 1]}]"


def subset_fold(k):
    """Fold k as batched (train_ds, val_ds), through the same pipeline as above."""
    train_split, val_split = subset_splits(k)
    train = tfds.load("tfcv_digits", split=train_split, data_dir=data_dir, as_supervised=True)
    val = tfds.load("tfcv_digits", split=val_split, data_dir=data_dir, as_supervised=True)
    return (pipeline(train, batch_size=BATCH_SIZE, training=True, seed=SEED + k),
            pipeline(val, batch_size=BATCH_SIZE))


for k in range(FOLDS):
    train_split, val_split = subset_splits(k)
    sizes = [tfds.load("tfcv_digits", split=s, data_dir=data_dir).cardinality().numpy() for s in (train_split, val_split)]
    print(f"fold {k + 1}: train on {train_split!r} ({sizes[0]} examples), validate on {val_split!r} ({sizes[1]})")

subset = tfcv.CrossValidator(build, folds=FOLDS, seed=SEED).fit(
    subset_fold, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=0)
print()
print(subset.summary())

# %% [markdown]
# With a callable, tfcv knows nothing about positions in a split, so `subset.oof_predictions` are
# the folds' validation predictions stacked in fold order (the order `val_ds` yields them).
#
# ## Exercises
#
# 1. Set `cache=None` in the `Pipeline`, so that every epoch reads from disk. How much slower is it
#    here, and when would you still choose it?
# 2. Cross-validate with the `stratified` plan instead of `plan`. Does the fold spread change?
# 3. Write a `subset_fold` that cross-validates `train[:50%]` and keeps `train[50%:]` as a test set;
#    evaluate the fold ensemble on it with `subset.ensemble()` and a dataset built with `pipeline`.
# 4. With network access, replace `"tfcv_digits"` by `"mnist"` (and the spec's `input_shape` by
#    `[28, 28, 1]`, the pipeline's `rescale` by `1 / 255`). Which parts of the code change?
# 5. Time `cross_validate_by_hand`, `cv.fit`, `cv.fit(..., n_jobs=-1)` and `stacked_cv.fit` with 1,
#    5 and 20 epochs. How do the differences change as training, rather than fixed costs, dominates?
# 6. Pass `callbacks=[keras.callbacks.EarlyStopping(patience=2, restore_best_weights=True)]` to
#    `stacked_cv.fit` with `epochs=40`, and print `[len(h["loss"]) for h in result.histories]` for
#    the result. Do the folds stop at the same epoch? A stopped fold's copy is skipped while the
#    others keep training: how much time does early stopping save here, compared with `cv.fit`?
