# %% [markdown]
# # 4. Export a cross-validated ensemble and serve it
#
# A model is only useful once something can call it. In this notebook you will export the fold
# ensemble of a cross-validation run as a **TensorFlow Serving bundle** with
# `tfcv.export.export_saved_model`: a deterministic `serving_default` signature (the mean of the
# fold models), `predict_folds` (every fold's output) and a **randomized** signature,
# `predict_randomized`, that runs test-time augmentation and MC dropout inside the server and
# returns a prediction together with how sure the model is. You will inspect the bundle, start a
# model server on it (the real `tensorflow_model_server` when it is installed, as it is on Colab
# after the setup cell below; tfcv's own TF-Serving-compatible `tfcv serve` otherwise), query it
# over **REST** with plain JSON and over **gRPC** with TensorFlow Serving's official client
# stubs, send it **image files** (PNG bytes, as a camera or a browser would) through the
# `image_bytes` signatures with the repository's image client, and look at the predictions and
# their uncertainty for a few images.

# %% tags=["setup"]
if "google.colab" in sys.modules:
    # Google's apt repository for tensorflow_model_server, as in serving/README.md. If this fails,
    # the notebook serves with `tfcv serve` instead.
    subprocess.run(["bash", "-c", """
        echo "deb http://storage.googleapis.com/tensorflow-serving-apt stable tensorflow-model-server tensorflow-model-server-universal" \
          > /etc/apt/sources.list.d/tensorflow-serving.list &&
        curl -fsSL https://storage.googleapis.com/tensorflow-serving-apt/tensorflow-serving.release.pub.gpg | apt-key add - &&
        apt-get update -qq && apt-get install -y -qq tensorflow-model-server
    """], check=False)
    # The example client of serving/clients, which the package does not ship.
    subprocess.run(["curl", "-fsSL", "-o", "rest_image_client.py",
                    "https://raw.githubusercontent.com/{REPO}/{BRANCH}/serving/clients/rest_image_client.py"],
                   check=False)

# %% [markdown]
# ## Parameters
#
# The defaults give meaningful results in a few minutes on a CPU. The test suite sets
# `TFCV_NOTEBOOK_FAST=1`, which shrinks the training so that the notebook runs in well under a
# minute; the numbers printed in fast mode are not worth interpreting.

# %% tags=["parameters"]
import os

FAST = os.environ.get("TFCV_NOTEBOOK_FAST") == "1"

N_SAMPLES = 400 if FAST else 1797   # digits used (the data set has 1,797)
FOLDS = 2 if FAST else 5
EPOCHS = 8 if FAST else 20
SAMPLES = 8 if FAST else 32         # randomized passes per input in predict_randomized
BATCH_SIZE = 32
SEED = 0
MODEL_NAME = "digits"
BASE_PATH = os.path.abspath(os.path.join("models", MODEL_NAME))  # model servers want absolute paths
START_TIMEOUT = 300                 # seconds to wait for the server to load the model

# %%
# %matplotlib inline
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's C++ start-up messages

import json
import logging

import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
from sklearn.model_selection import train_test_split

import tfcv

# tfcv builds a fresh model per fold; TensorFlow warns about the retracing this causes.
logging.getLogger("tensorflow").setLevel(logging.ERROR)

x, y = tfcv.datasets.load_digits()
if N_SAMPLES < len(x):
    x, _, y, _ = train_test_split(x, y, train_size=N_SAMPLES, stratify=y, random_state=SEED)
# A few digits the models never see, to send to the server later.
x, x_new, y, y_new = train_test_split(x, y, test_size=4, random_state=SEED)
print(f"training on {len(x)} digits; {len(x_new)} kept aside for the server")

# %% [markdown]
# ## 1. Cross-validate
#
# The same kind of model as in notebook 3: augmentation and dropout give `predict_randomized`
# something to randomize.

# %%
spec = tfcv.ModelSpec.from_dict({
    "input_shape": [8, 8, 1],
    "num_classes": 10,
    "preprocessing": {"normalization": True},
    "augmentation": [{"translate": {"height_factor": 0.125, "width_factor": 0.125,  # whole-pixel shifts
                                    "interpolation": "nearest", "fill_mode": "constant"}}],
    "backbone": {"blocks": [16, {"filters": 32, "dropout": 0.1}]},
    "head": {"units": [64], "dropout": 0.3},
    "training": {"learning_rate": 3e-3},
})
result = tfcv.CrossValidator(tfcv.ModelBuilder(spec), folds=FOLDS, seed=SEED).fit(
    x, y, epochs=EPOCHS, batch_size=BATCH_SIZE, verbose=0)
print(result.summary())

# %% [markdown]
# ## 2. Export a bundle with randomized signatures
#
# `export_saved_model` writes version `1` (then `2`, `3`, ... on later exports) under the base
# path, in the layout TensorFlow Serving polls. The bundle is written to a hidden temporary
# directory, checked (every signature; `serving_default` against the in-memory ensemble; every
# warmup request replayed) and only then renamed into place, so a server watching the base path
# never sees half a model. `Randomized(samples=...)` configures `predict_randomized`; its `seed`
# makes a freshly loaded bundle replay the same random sequence. `image_bytes=True` adds a twin of
# every signature (`serving_bytes`, `predict_folds_bytes`, `predict_randomized_bytes`) whose input
# is a batch of encoded image files (JPEG, PNG, GIF, BMP), decoded, resized and scaled to `[0, 1]`
# inside the graph, so a client can send a file as it is.

# %%
version_dir = tfcv.export.export_saved_model(
    result,
    BASE_PATH,
    randomized=tfcv.export.Randomized(samples=SAMPLES, augmentation=True, mc_dropout=True, seed=SEED),
    image_bytes=True,
    metadata={"dataset": "scikit-learn digits, 8x8 grey, values in [0, 1]"},
)
print("published", os.path.relpath(version_dir))
for root, _, files in sorted(os.walk(version_dir)):
    for name in sorted(files):
        path = os.path.join(root, name)
        print(f"  {os.path.relpath(path, BASE_PATH):<58} {os.path.getsize(path):>10,} bytes")

# %% [markdown]
# ## 3. Inspect it
#
# `tfcv.export.describe` (the `tfcv inspect` command) reads the signatures and the metadata that
# tfcv stores in `assets.extra/tfcv.json`, including the cross-validation scores the bundle came
# from, without loading the model.

# %%
print(tfcv.export.describe(version_dir))

# %% [markdown]
# The bundle is a plain SavedModel: TensorFlow loads it without tfcv, and the signatures can be
# called in-process, which is handy for testing. The input is named `image`, after the model's
# input layer.

# %%
loaded = tf.saved_model.load(version_dir)
print(sorted(loaded.signatures))
randomized = loaded.signatures["predict_randomized"](image=tf.constant(x_new[:2]))
print({name: value.numpy().round(3).tolist() for name, value in randomized.items() if value.shape.rank == 1})

# %% [markdown]
# ## 4. Serve it
#
# Both servers take the same flags: a gRPC port, a REST port, the model name and its base path. We
# pick two free local ports, start the server as a background process and wait until the model's
# version status says `AVAILABLE` (the server loads the bundle and replays its warmup requests
# first). The server is stopped at the end of the notebook, and also when the kernel exits, so a
# failing cell never leaves it running.
#
# `tfcv serve` binds `127.0.0.1` only; `tensorflow_model_server` listens on all interfaces, which
# is what you want in a container and worth knowing on a shared machine.

# %%
import atexit
import shutil
import socket
import subprocess
import time

import requests


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


GRPC_PORT, REST_PORT = free_port(), free_port()
REST_URL = f"http://127.0.0.1:{REST_PORT}/v1/models/{MODEL_NAME}"
FLAGS = [f"--port={GRPC_PORT}", f"--rest_api_port={REST_PORT}",
         f"--model_name={MODEL_NAME}", f"--model_base_path={BASE_PATH}"]
SERVERS = {
    "tensorflow_model_server": [shutil.which("tensorflow_model_server"), *FLAGS],
    # Same as typing `tfcv serve --port=... --rest_api_port=...` in a terminal.
    "tfcv serve": [sys.executable, "-m", "tfcv", "serve", *FLAGS],
}
server = None


def stop_server():
    if server is not None and server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


atexit.register(stop_server)


def start_server(name):
    """Starts one of SERVERS and waits until the model is AVAILABLE."""
    global server
    log = open(f"{name.replace(' ', '_')}.log", "w")
    server = subprocess.Popen(SERVERS[name], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"{name} exited with status {server.returncode}:\n{open(log.name).read()[-3000:]}")
        try:
            states = [v["state"] for v in requests.get(REST_URL, timeout=5).json()["model_version_status"]]
            if "AVAILABLE" in states:
                return
        except (requests.RequestException, KeyError, ValueError):
            pass  # not listening yet, or still loading
        time.sleep(0.5)
    stop_server()
    raise TimeoutError(f"{name} did not load the model in {START_TIMEOUT} s:\n{open(log.name).read()[-3000:]}")


started = time.monotonic()
if shutil.which("tensorflow_model_server"):
    try:
        start_server("tensorflow_model_server")
    except (RuntimeError, TimeoutError) as error:
        print(f"tensorflow_model_server failed, falling back to tfcv serve:\n{error}")
        stop_server()
        start_server("tfcv serve")
else:
    start_server("tfcv serve")
SERVER_NAME = "tensorflow_model_server" if server.args[0] != sys.executable else "tfcv serve"
print(f"{SERVER_NAME} is serving {MODEL_NAME!r}: REST on port {REST_PORT}, gRPC on port {GRPC_PORT} "
      f"(ready after {time.monotonic() - started:.0f} s)")

# %% [markdown]
# ## 5. Query it over REST
#
# TF Serving's REST API is plain JSON over HTTP. `GET /v1/models/digits` is the version status,
# `GET .../metadata` the signatures, and `POST ...:predict` runs a signature. The body comes in two
# formats: **row** format, `{"instances": [...]}` with one entry per input, answered with
# `{"predictions": [...]}`; and **columnar** format, `{"inputs": {...}}`, answered with
# `{"outputs": {...}}`. `"signature_name"` picks a signature other than `serving_default`.

# %%
print(json.dumps(requests.get(REST_URL, timeout=30).json(), indent=1))
metadata = requests.get(f"{REST_URL}/metadata", timeout=30).json()
signatures = metadata["metadata"]["signature_def"]["signature_def"]
for name, signature in sorted(signatures.items()):
    if not name.startswith("__"):
        print(f"{name}: inputs {sorted(signature['inputs'])} -> outputs {sorted(signature['outputs'])}")

# %% [markdown]
# We send the four digits kept aside plus two inputs that are not digits at all: uniform noise and
# a blank image.

# %%
rng = np.random.default_rng(SEED)
images = np.concatenate([x_new, rng.random((1, 8, 8, 1)), np.zeros((1, 8, 8, 1))]).astype("float32")
titles = [f"digit {label}" for label in y_new] + ["noise", "blank"]

body = {"instances": images.tolist()}
print("request:", json.dumps(body)[:120], "...")
rest_default = np.array(requests.post(f"{REST_URL}:predict", json=body, timeout=60).json()["predictions"])
print("serving_default, class probabilities:\n", rest_default.round(3))

body = {"signature_name": "predict_randomized", "inputs": {"image": images.tolist()}}
rest_randomized = requests.post(f"{REST_URL}:predict", json=body, timeout=60).json()["outputs"]
print("predict_randomized outputs:", sorted(rest_randomized))

# %% [markdown]
# ### Image files
#
# Real clients hold image files, not float arrays. We write the four digits kept aside as 8x8
# grey PNG files and post them to `serving_bytes`: over REST, binary data travels as base64 in
# `{"b64": "..."}` (TF Serving's convention), and the model decodes the PNG itself. For the same
# pixels the answer is the float signature's, up to the 8-bit rounding of the PNG.

# %%
import base64

png_files = []
for i, (image, label) in enumerate(zip(x_new, y_new)):
    path = f"digit_{i}_{label}.png"
    pixels = np.round(image * 255).astype("uint8")
    tf.io.write_file(path, tf.io.encode_png(pixels))
    png_files.append(path)

body = {"signature_name": "serving_bytes",
        "instances": [{"b64": base64.b64encode(open(path, "rb").read()).decode("ascii")} for path in png_files]}
print("request:", json.dumps(body)[:120], "...")
rest_bytes = np.array(requests.post(f"{REST_URL}:predict", json=body, timeout=60).json()["predictions"])
print("serving_bytes predicts", rest_bytes.argmax(1).tolist(), "for the digits", y_new.tolist())
print(f"largest difference to serving_default on the float pixels: {np.abs(rest_bytes - rest_default[:4]).max():.1e}")

# %% [markdown]
# The same request from the command line: `serving/clients/rest_image_client.py` (standard library
# only) posts any image files and prints the class of each, by name when given the bundle, whose
# metadata holds the class names; `--randomized` asks `predict_randomized_bytes` for the mean and
# its spread.

# %%
CLIENT = os.path.join(os.path.dirname(os.path.dirname(tfcv.__file__)), "serving", "clients",
                      "rest_image_client.py")
if not os.path.exists(CLIENT):  # tfcv installed from a package (Colab): the copy the setup cell fetched
    CLIENT = "rest_image_client.py"
client = subprocess.run(
    [sys.executable, CLIENT, *png_files, "--url", f"http://127.0.0.1:{REST_PORT}", "--model", MODEL_NAME,
     "--bundle", version_dir, "--randomized"],
    capture_output=True, text=True, timeout=120,
)
print(client.stdout or client.stderr)

# %% [markdown]
# ## 6. Query it over gRPC
#
# gRPC sends tensors as protocol buffers instead of JSON text: smaller and faster for large inputs.
# The stubs come from the `tensorflow-serving-api` package (a dependency of tfcv);
# `tf.make_tensor_proto` and `tf.make_ndarray` convert between NumPy arrays and `TensorProto`s.

# %%
import grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


def grpc_predict(stub, signature_name, inputs):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    request.model_spec.signature_name = signature_name
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(inputs))
    response = stub.Predict(request, timeout=60)
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}, response.model_spec


with grpc.insecure_channel(f"127.0.0.1:{GRPC_PORT}") as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    grpc_default, answered_by = grpc_predict(stub, "serving_default", images)
    grpc_randomized, _ = grpc_predict(stub, "predict_randomized", images)
    grpc_folds, _ = grpc_predict(stub, "predict_folds", images)

print(f"answered by model {answered_by.name!r} version {answered_by.version.value}")
print("serving_default outputs:", {k: v.shape for k, v in grpc_default.items()})
print("predict_folds outputs:  ", {k: v.shape for k, v in grpc_folds.items()}, "(images, folds, classes)")
(grpc_probabilities,) = grpc_default.values()
in_process = result.predict(images)
print(f"largest difference, REST vs in-process ensemble: {np.abs(rest_default - in_process).max():.2e}")
print(f"largest difference, gRPC vs in-process ensemble: {np.abs(grpc_probabilities - in_process).max():.2e}")

# %% [markdown]
# The deterministic signature agrees with the in-memory ensemble to float precision, over both
# protocols. `predict_randomized` answers differ slightly between calls: each call draws new random
# augmentations and dropout masks, which is the point.
#
# ## 7. Prediction and uncertainty
#
# For each image: the mean probability of each class over the randomized passes, with its
# standard deviation as an error bar, the predictive entropy (0 = certain, 2.30 = uniform over ten
# classes) and the agreement (the fraction of passes that vote for the winning class).

# %%
mean, std = np.array(rest_randomized["mean"]), np.array(rest_randomized["std"])
entropy = np.array(rest_randomized["predictive_entropy"])
agreement = np.array(rest_randomized["agreement"])

fig, axes = plt.subplots(2, len(images), figsize=(2.1 * len(images), 4.4),
                         gridspec_kw={"height_ratios": [1, 1.1]})
for i, title in enumerate(titles):
    axes[0, i].imshow(images[i, ..., 0], cmap="gray_r", vmin=0, vmax=1)
    axes[0, i].set_title(title, fontsize=9)
    axes[0, i].axis("off")
    ax = axes[1, i]
    ax.bar(range(10), mean[i], yerr=std[i], color="C0", capsize=2)
    ax.set_ylim(0, 1.05)
    ax.set_xticks(range(10))
    ax.tick_params(labelsize=7)
    ax.set_title(f"pred {mean[i].argmax()}  H={entropy[i]:.2f}\nagreement {agreement[i]:.2f}", fontsize=8)
    if i:
        ax.set_yticklabels([])
fig.suptitle(f"predict_randomized over REST ({SERVER_NAME}), {SAMPLES} passes per image")
plt.tight_layout()
plt.show()

# %% [markdown]
# The same numbers come back over gRPC:

# %%
for i, title in enumerate(titles):
    top = grpc_randomized["mean"][i].argmax()
    print(f"{title:>8}: predicted {top}, p = {grpc_randomized['mean'][i, top]:.3f} ± "
          f"{grpc_randomized['std'][i, top]:.3f}, entropy {grpc_randomized['predictive_entropy'][i]:.3f} nats, "
          f"agreement {grpc_randomized['agreement'][i]:.2f}")

# %% [markdown]
# ## 8. Stop the server

# %%
stop_server()
print(f"{SERVER_NAME} stopped with status {server.returncode}")

# %% [markdown]
# ## Exercises
#
# 1. Export a second version while the server runs (restart it first), for example with more
#    epochs, and poll `GET /v1/models/digits` until version 2 is `AVAILABLE`. Did any request fail
#    during the switch?
# 2. Export with `randomized=tfcv.export.Randomized(32, mc_dropout=False)` (test-time augmentation
#    only) and compare the entropies of the digits, the noise and the blank image.
# 3. Send a request with the wrong shape (`np.zeros((1, 64))`) over REST and over gRPC. What does
#    the error say?
# 4. Run `serving/clients/rest_client.py` and `serving/clients/grpc_client.py` from the repository
#    against the running server, with `--url http://127.0.0.1:<REST_PORT>` and
#    `--target 127.0.0.1:<GRPC_PORT>`.
# 5. Serve two models at once: write a config with `tfcv.export.write_model_config` and start the
#    server with `--model_config_file=...` instead of `--model_name` and `--model_base_path`.
# 6. Write one digit as a 64x64 PNG (`tf.image.resize` before `encode_png`) and as a JPEG
#    (`tf.io.encode_jpeg`, which needs 1 or 3 channels) and post them to `serving_bytes`. The model
#    resizes every file back to 8x8: how far do the predictions move?
