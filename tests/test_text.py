"""Text end to end: the reference text model, its vocabulary adapted per
fold, a `DT_STRING` bundle whose warmup sentences come from the training
words, and `tfcv run --data FILE.csv` -> `tfcv export` -> `tfcv serve`
answering `{"instances": ["a sentence", ...]}`."""

from __future__ import annotations

import csv
import json
import os
import random

import httpx
import numpy as np
import pytest
import tensorflow as tf
from test_data_sources import start_server

import tfcv
from tfcv import cli
from tfcv.bundle import read_warmup
from tfcv.export import describe, export_saved_model, verify
from tfcv.models import TextClassifier, text_classifier

TOPICS = {
    "sports": "goal match team score player coach league win ball".split(),
    "weather": "rain sun cloud storm wind snow forecast cold warm".split(),
    "food": "pizza bread cheese soup pasta salad cake taste recipe".split(),
}
FILLER = "the a today we saw very some and it was".split()


def sentences(n, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = list(TOPICS)[i % 3]
        words = rng.sample(TOPICS[topic], 3) + rng.sample(FILLER, 4)
        rng.shuffle(words)
        rows.append((" ".join(words), topic))
    return rows


def write_csv(path, n=150) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence", "topic"])
        writer.writerows(sentences(n))
    return str(path)


def test_text_classifier_takes_strings():
    model = text_classifier(3, max_tokens=50, sequence_length=6, kernel_size=9)
    assert model.inputs[0].dtype == "string" and tuple(model.inputs[0].shape) == (None,)
    model.layers[1].adapt(tf.constant([s for s, _ in sentences(30)]))
    out = model(tf.constant(["goal team win", ""]))
    assert out.shape == (2, 3)
    np.testing.assert_allclose(np.sum(out, axis=1), 1.0, atol=1e-5)
    assert repr(TextClassifier(3, max_tokens=50)) == "TextClassifier(num_classes=3, max_tokens=50)"


@pytest.fixture(scope="module")
def text_result():
    rows = sentences(60)
    x = np.asarray([s for s, _ in rows])
    y = np.asarray([t for _, t in rows])
    # Fold 0 trains on rows without "pizza": its vocabulary must not hold it.
    x[::2] = [s.replace("pizza", "pasta") for s in x[::2]]
    folds = tfcv.FoldPlan([(np.arange(0, 60, 2), np.arange(1, 60, 2)), (np.arange(1, 60, 2), np.arange(0, 60, 2))])
    cv = tfcv.CrossValidator(TextClassifier(3, max_tokens=100, sequence_length=8), folds=folds)
    return cv.fit(x, y, epochs=2, verbose=0), x


def test_vocabulary_is_adapted_per_fold(text_result):
    result, x = text_result
    vocabularies = [set(m.get_layer("vectorize").get_vocabulary()) for m in result.models]
    for k, (train, _) in enumerate(result.plan.folds):
        words = {w for s in x[train] for w in s.split()}
        assert vocabularies[k] - {"", "[UNK]"} == words
    assert "pizza" not in vocabularies[0] and "pizza" in vocabularies[1]
    assert result.info["class_names"] == ["food", "sports", "weather"]


def test_string_bundle_warms_up_with_training_words(text_result, tmp_path):
    result, x = text_result
    path = export_saved_model(result, tmp_path / "text")
    loaded = tf.saved_model.load(path)
    spec = loaded.signatures["serving_default"].structured_input_signature[1]["text"]
    assert spec.dtype == tf.string and spec.shape.as_list() == [None]
    words = {w for s in x for w in s.split()}
    records = list(read_warmup(path))
    assert len(records) == 9
    for record in records:
        for sentence in tf.make_ndarray(record.inputs["text"]).ravel():
            assert sentence and set(sentence.decode().split()) <= words
    metadata = json.load(open(os.path.join(path, "assets.extra", "tfcv.json")))
    assert metadata["input_spec"]["dtype"] == "string" and metadata["class_names"] == ["food", "sports", "weather"]
    assert verify(path, fresh_process=False)["replayed"] == 9
    described = describe(path)
    assert "text string (None) raw UTF-8 text, one sentence per example" in described and "range" not in described
    given = export_saved_model(result, tmp_path / "given", warmup=np.asarray(["only this sentence"]))
    assert {s for r in read_warmup(given) for s in tf.make_ndarray(r.inputs["text"]).ravel()} == {b"only this sentence"}


@pytest.mark.slow
def test_csv_to_rest_request_with_sentences(tmp_path, capsys):
    data = write_csv(tmp_path / "topics.csv")
    run_dir, base = tmp_path / "run", tmp_path / "models" / "topics"
    assert cli.main(["run", "--data", data, "--text-column", "sentence", "--label-column", "topic", "--folds", "2",
                     "--epochs", "8", "--batch-size", "16", "--run-dir", str(run_dir), "--verbose", "0",
                     "--export", str(base)]) == 0
    assert "150 sentences of 3 classes" in capsys.readouterr().out
    metadata = json.load(open(base / "1" / "assets.extra" / "tfcv.json"))
    assert metadata["class_names"] == ["food", "sports", "weather"]

    server = start_server(base, "topics", tmp_path)
    try:
        asked = ["the coach saw the team score a goal", "cold wind and snow today", "cheese pizza with salad"]
        response = httpx.post(f"{server.rest}/v1/models/topics:predict", json={"instances": asked}, timeout=60)
        assert response.status_code == 200, response.text
        predicted = [metadata["class_names"][int(np.argmax(p))] for p in response.json()["predictions"]]
        assert predicted == ["sports", "weather", "food"]
    finally:
        server.stop()


def test_text_task_in_the_spec_from_a_yaml_experiment(tmp_path, capsys):
    spec = tfcv.ModelSpec.from_dict({"input_shape": [], "num_classes": 3, "head": {"pooling": "max", "units": []},
                                     "text": {"max_tokens": 60, "sequence_length": 8, "filters": 0}})
    assert tfcv.ModelSpec.from_dict(spec.to_dict()) == spec
    model = tfcv.build_model(spec)
    assert [layer.name for layer in model.layers][:3] == ["text", "vectorize", "embedding"]
    with pytest.raises(tfcv.SpecError, match=r"`input_shape`.*Expected \[\] with `text`"):
        tfcv.ModelSpec.from_dict({**spec.to_dict(), "input_shape": [8, 8, 1]})
    with pytest.raises(tfcv.SpecError, match="`augmentation`"):
        tfcv.ModelSpec.from_dict({**spec.to_dict(), "augmentation": [{"flip": "horizontal"}]})

    data = write_csv(tmp_path / "topics.csv", n=60)
    config = tmp_path / "experiment.yaml"
    config.write_text(
        f"folds: 2\nepochs: 2\ndata: {{csv: {data}, text_column: sentence, label_column: topic}}\n"
        "model:\n  text: {max_tokens: 60, sequence_length: 8, embedding_dim: 8}\n  head: {units: []}\n"
    )
    assert cli.main(["run", str(config), "--run-dir", str(tmp_path / "run"), "--verbose", "0"]) == 0
    result = tfcv.CVResult.load(tmp_path / "run")
    assert result.info["class_names"] == ["food", "sports", "weather"]
    vocabularies = [m.get_layer("vectorize").get_vocabulary() for m in result.models]
    assert vocabularies[0] != vocabularies[1] and all(len(v) > 10 for v in vocabularies)
    assert "60 sentences of 3 classes" in capsys.readouterr().out
