# %% [markdown]
# # 6. Your own text: cross-validate a text classifier, export it, ask it about sentences
#
# tfcv is not only for images. In this notebook you will take a CSV file of movie reviews and
# their sentiment, the way your own text data usually arrives, and read it with
# `tfcv.sources.load_data`. You will cross-validate `tfcv.models.TextClassifier`, whose
# `TextVectorization` layer learns its vocabulary **on each fold's training split only** (a word
# seen only in the validation reviews is unknown to that fold's model, as it would be in
# production), look at the reviews the folds get wrong, export the fold ensemble as a TF Serving
# bundle that takes **raw sentences** (`DT_STRING`, the vectorization is inside the model), and
# query it with new sentences, in-process from the SavedModel and over REST from `tfcv serve`.
# On Colab the reviews are IMDB's (TFDS `imdb_reviews`); in the test suite's fast mode the
# notebook writes a small CSV of made-up reviews itself, so it runs offline in seconds.

# %% [markdown]
# ## Parameters
#
# The defaults cross-validate 10,000 IMDB reviews in a few minutes on a CPU (Colab downloads the
# dataset, 80 MB, once). `TFCV_NOTEBOOK_FAST=1`, which the test suite sets, uses a generated CSV
# of a few hundred short reviews instead and shrinks the model and the training; the numbers it
# prints are not worth interpreting.

# %% tags=["parameters"]
import os

FAST = os.environ.get("TFCV_NOTEBOOK_FAST") == "1"

N_REVIEWS = 300 if FAST else 10_000   # reviews cross-validated (IMDB's train split has 25,000)
FOLDS = 2 if FAST else 5
EPOCHS = 5 if FAST else 4
MAX_TOKENS = 200 if FAST else 20_000  # vocabulary size, per fold
SEQUENCE_LENGTH = 16 if FAST else 256  # tokens kept per review
LEARNING_RATE = 1e-2 if FAST else 1e-3
BATCH_SIZE = 32
SEED = 0
CSV_PATH = "reviews.csv"
MODEL_NAME = "reviews"
BASE_PATH = os.path.abspath(os.path.join("models", MODEL_NAME))  # model servers want absolute paths
START_TIMEOUT = 300                   # seconds to wait for the server to load the model

# %%
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's C++ start-up messages

import csv
import logging

import numpy as np
import tensorflow as tf

import tfcv

# tfcv builds a fresh model per fold; TensorFlow warns about the retracing this causes.
logging.getLogger("tensorflow").setLevel(logging.ERROR)

# %% [markdown]
# ## 1. A CSV file of reviews
#
# Your data would be a CSV with a header row, one text column and one label column. Here we
# write one: IMDB reviews from TensorFlow Datasets (the `<br />` tags of the raw HTML removed),
# or, in fast mode, short reviews made of a few positive or negative words among neutral ones.

# %%
rng = np.random.default_rng(SEED)

if FAST:
    positive = "wonderful brilliant moving superb delightful gripping charming funny beautiful touching".split()
    negative = "dull boring awful tedious clumsy predictable bland painful weak forgettable".split()
    neutral = "the film movie plot acting story cast director scenes ending music was and a with its".split()
    rows = []
    for i in range(N_REVIEWS):
        sentiment = ("negative", "positive")[i % 2]
        words = [*rng.choice(positive if sentiment == "positive" else negative, 2), *rng.choice(neutral, 8)]
        rng.shuffle(words)
        rows.append((" ".join(words), sentiment))
else:
    import tensorflow_datasets as tfds

    texts, labels = tfds.as_numpy(tfds.load("imdb_reviews", split="train", as_supervised=True, batch_size=-1))
    keep = rng.choice(len(texts), size=N_REVIEWS, replace=False)
    rows = [(texts[i].decode("utf-8").replace("<br />", " "), ("negative", "positive")[labels[i]]) for i in keep]

with open(CSV_PATH, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["review", "sentiment"])
    writer.writerows(rows)
print(open(CSV_PATH, encoding="utf-8").read()[:400], "...")

# %% [markdown]
# `tfcv.sources.load_data` reads it (the same as `tfcv run --data reviews.csv --text-column review
# --label-column sentiment` on the command line). The class names are the label values, sorted;
# they travel into the result and into the exported bundle.

# %%
data = tfcv.sources.load_data({"csv": CSV_PATH, "text_column": "review", "label_column": "sentiment"})
print(data.description)
print("class names:", data.class_names, "| kind:", data.kind, "| x:", data.x.dtype, data.x.shape)

# %% [markdown]
# ## 2. Cross-validate a text classifier
#
# `TextClassifier` builds `TextVectorization` (lower-case, strip punctuation, split on spaces,
# map words to integers, pad or cut to `sequence_length`) -> `Embedding` -> a `Conv1D` over
# windows of words -> max pooling over the review -> dropout -> softmax. The vectorization layer
# has a vocabulary to learn from data, like a `Normalization` layer has a mean: the
# cross-validator adapts it on each fold's training split before the fold trains.

# %%
build = tfcv.models.TextClassifier(data.num_classes, max_tokens=MAX_TOKENS, sequence_length=SEQUENCE_LENGTH,
                                   embedding_dim=32 if FAST else 64, learning_rate=LEARNING_RATE)
result = tfcv.CrossValidator(build, folds=FOLDS, seed=SEED).fit(
    data.x, data.y, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=0)
print(result.summary())

# %% [markdown]
# Each fold model has its own vocabulary, learned without the reviews it is scored on:

# %%
vocabularies = [[str(word) for word in model.get_layer("vectorize").get_vocabulary()] for model in result.models]
for k, vocabulary in enumerate(vocabularies):
    # Entries 0 and 1 are padding and the out-of-vocabulary token [UNK].
    print(f"fold {k}: {len(vocabulary)} tokens, the most frequent: {', '.join(vocabulary[2:12])}")
only_first = sorted(set(vocabularies[0]) - set(vocabularies[1]))
print(f"{len(only_first)} words are in fold 0's vocabulary and not in fold 1's, such as {', '.join(only_first[:8])}")

# %% [markdown]
# ## 3. What the folds get wrong
#
# The out-of-fold predictions give every review a prediction from the fold model that never saw
# it. The reviews it is most confidently wrong about are worth reading: mislabelled data,
# sarcasm, or a review that really is mixed.

# %%
names = np.asarray(result.info["class_names"])
oof = result.oof_predictions
predicted = names[oof.argmax(1)]
wrong = np.flatnonzero(predicted != data.y)
print(f"out-of-fold accuracy {np.mean(predicted == data.y):.3f}; {len(wrong)} of {len(data.y)} reviews wrong")
for i in wrong[np.argsort(-oof[wrong].max(1))][:3]:
    print(f"\n[{data.y[i]}, predicted {predicted[i]} with p = {oof[i].max():.2f}] {data.x[i][:300]}")

# %% [markdown]
# ## 4. Export: a bundle that takes sentences
#
# The exported signatures take a batch of strings. The warmup requests the server replays
# before it answers are made of words from the models' vocabularies (random bytes would not
# exercise a vocabulary lookup), and `tfcv inspect` (`tfcv.export.describe`) says what the input
# is. MC dropout gives `predict_randomized` something to randomize; a text model has no
# augmentation.

# %%
version_dir = tfcv.export.export_saved_model(
    result, BASE_PATH, randomized=tfcv.export.Randomized(samples=8, augmentation=False, seed=SEED))
print(tfcv.export.describe(version_dir))

# %% [markdown]
# The SavedModel loads without tfcv and answers sentences in-process:

# %%
sentences = [
    "a wonderful film, moving and beautiful from the first scene to the ending",
    "dull, predictable and far too long; the acting was painful",
    "the music was brilliant but the plot was boring",
]
loaded = tf.saved_model.load(version_dir)
(probabilities,) = loaded.signatures["serving_default"](text=tf.constant(sentences)).values()
for sentence, p in zip(sentences, probabilities.numpy()):
    print(f"{names[p.argmax()]:>8} (p = {p.max():.2f})  {sentence}")

# %% [markdown]
# ## 5. Serve it and ask over REST
#
# `tfcv serve` (or `tensorflow_model_server`, with the same flags, see notebook 4) serves the
# bundle; a REST request carries the sentences as JSON strings, `{"instances": ["...", ...]}`.

# %%
import atexit
import socket
import subprocess
import sys
import time

import requests


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


GRPC_PORT, REST_PORT = free_port(), free_port()
REST_URL = f"http://127.0.0.1:{REST_PORT}/v1/models/{MODEL_NAME}"
log = open("tfcv_serve.log", "w")
server = subprocess.Popen([sys.executable, "-m", "tfcv", "serve", f"--port={GRPC_PORT}", f"--rest_api_port={REST_PORT}",
                           f"--model_name={MODEL_NAME}", f"--model_base_path={BASE_PATH}"],
                          stdout=log, stderr=subprocess.STDOUT)
atexit.register(server.terminate)
deadline = time.monotonic() + START_TIMEOUT
while True:
    try:
        if requests.get(REST_URL, timeout=5).json()["model_version_status"][0]["state"] == "AVAILABLE":
            break
    except (requests.RequestException, KeyError, IndexError, ValueError):
        pass  # not listening yet, or still loading
    if server.poll() is not None or time.monotonic() > deadline:
        raise RuntimeError(f"tfcv serve did not start:\n{open(log.name).read()[-3000:]}")
    time.sleep(0.5)

response = requests.post(f"{REST_URL}:predict", json={"instances": sentences}, timeout=60).json()
for sentence, p in zip(sentences, np.asarray(response["predictions"])):
    print(f"{names[p.argmax()]:>8} (p = {p.max():.2f})  {sentence}")

body = {"signature_name": "predict_randomized", "inputs": {"text": sentences}}
randomized = requests.post(f"{REST_URL}:predict", json=body, timeout=60).json()["outputs"]
print("\npredict_randomized: entropy", np.round(randomized["predictive_entropy"], 3).tolist(),
      "agreement", np.round(randomized["agreement"], 2).tolist())

# %%
server.terminate()
server.wait(timeout=30)
print("tfcv serve stopped with status", server.returncode)

# %% [markdown]
# ## Exercises
#
# 1. Set `SEQUENCE_LENGTH` to 32 and then to 512 on the IMDB reviews. How do accuracy and training
#    time change, and why does a long review need more than a few dozen tokens?
# 2. Build the same model from a spec: `tfcv.ModelSpec.from_dict({"input_shape": [], "num_classes": 2,
#    "text": {"max_tokens": 20000, "sequence_length": 256, "filters": 0}, "head": {"pooling": "avg"}})`
#    is a pooled bag of embeddings without a convolution. Compare it with `tfcv.compare`.
# 3. Send the server a sentence made only of words none of the folds has seen. What does the model
#    answer, and what do `predict_randomized`'s entropy and agreement say?
# 4. Cross-validate from the command line: `tfcv run --data reviews.csv --text-column review
#    --label-column sentiment --folds 5 --epochs 4 --export models/reviews`.
