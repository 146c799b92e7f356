"""Warmup text for models that take strings: random bytes mean nothing to a
vocabulary, so warmup sentences are made of the words the models learned
from their training splits (or are the samples the caller gave)."""

from __future__ import annotations

import keras
import numpy as np

from tfcv import _compat

__all__ = ["sentences"]

_WORDS_PER_SENTENCE = 8


def sentences(model: keras.Model, rng: np.random.Generator, shape: tuple, samples=None) -> np.ndarray:
    """An object array of `shape` holding sentences (`bytes`).

    Args:
        model: The model whose `TextVectorization` / `StringLookup`
            vocabulary supplies the words.
        rng: `np.random.Generator`.
        shape: Shape of the batch, `(batch_size, *sample_shape)`.
        samples: Array of sentences to draw from instead, or `None`.
    """
    if samples is not None and np.size(samples):
        pool = [s if isinstance(s, bytes) else str(s).encode("utf-8") for s in np.ravel(samples)]
        return np.asarray(rng.choice(np.asarray(pool, dtype=object), size=shape), dtype=object)
    words = _vocabulary(model)
    if not words:
        raise ValueError(
            f"Model {model.name!r} takes strings but holds no adapted vocabulary to draw warmup sentences "
            "from. Pass an array of sample sentences as `warmup`, or warmup=False."
        )
    flat = [
        " ".join(rng.choice(words, size=min(_WORDS_PER_SENTENCE, len(words)))).encode("utf-8")
        for _ in range(int(np.prod(shape)))
    ]
    return np.asarray(flat, dtype=object).reshape(shape)


def _vocabulary(model) -> list[str]:
    for layer in _compat.flatten_layers(model):
        if isinstance(layer, (keras.layers.TextVectorization, keras.layers.StringLookup)):
            # The first entries are padding and the out-of-vocabulary token.
            words = [w for w in layer.get_vocabulary() if isinstance(w, str) and w and w != "[UNK]"]
            if words:
                return words
    return []
