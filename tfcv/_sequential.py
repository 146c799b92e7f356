"""The sequential strategy: one fold after the other, one traced model for all.

Every fold still builds its own model under its own seed; when the folds
share an architecture, the first fold's model (and the train, test and
predict functions Keras traced for it) trains every fold, with each fold's
freshly built state swapped in (`TracedModelReuse`).
"""

from __future__ import annotations

import keras

from tfcv import _compat
from tfcv._fold import FoldSettings, fit_and_score, publish_fold, state_variables
from tfcv._run_dir import model_fingerprint
from tfcv.callbacks import restore_state
from tfcv.preprocessing import holds_adapted_state
from tfcv.result import _FoldOutcome


def fit_fold(settings: FoldSettings, k: int, seed: int, source, *, fold_cbs, plain_cbs, snapshots, store,
             model=None, reuse=None) -> _FoldOutcome:
    """Trains fold `k` in this process (plain callbacks reset to their
    pre-run state first), writes it to the run directory and sends
    `on_fold_end`."""
    for cb, snapshot in zip(plain_cbs, snapshots):
        restore_state(cb, snapshot)
    outcome = fit_and_score(
        settings, k, seed, source, callbacks=fold_cbs + plain_cbs,
        backup_dir=None if store is None else store.backup_dir(k), model=model, reuse=reuse,
    )
    publish_fold(k, outcome, store, fold_cbs)
    return outcome


class TracedModelReuse:
    """Trains every fold of the same architecture (and, when an epoch runs in
    one call, as many batches per epoch) on one model, so Keras traces its
    train, test and predict functions once.

    Each fold still builds its model with `build_fn` under the fold's seed;
    that model's initial state (weights, random-seed state, optimizer
    variables) is swapped into the traced model, which trains the fold. The
    next fold's swap moves the trained state back out into a model of its
    own, so every fold ends with an independent `keras.Model`.
    """

    def __init__(self):
        self.runner = None
        self.signature = None
        self.holder = None

    def adopt(self, fresh: keras.Model) -> keras.Model:
        signature = _reuse_signature(fresh)
        if signature is None or self.runner is None or signature != self.signature:
            self.runner, self.signature, self.holder = fresh, signature, None
            return fresh
        _swap_state(fresh, self.runner)
        _compat.reset_initial_epoch(self.runner)
        if self.holder is not None:
            self.holder.model = fresh
            self.holder = None
        return self.runner

    def trained(self, outcome: _FoldOutcome) -> None:
        if outcome.model is self.runner:
            self.holder = outcome


def _reuse_signature(model):
    # Adapted layers keep their statistics or lookup tables as traced
    # constants, not variables: those models are rebuilt and retraced per fold.
    if holds_adapted_state(model):
        return None
    if model.optimizer is None or not model.optimizer.built:
        return None
    return (
        model_fingerprint(model),
        type(model.optimizer).__name__,
        tuple((tuple(v.shape), str(v.dtype)) for v in state_variables(model)),
        # The traced train function runs this many steps per call: a fold
        # of another length would train across its epochs' ends.
        getattr(model, "steps_per_execution", 1),
    )


def _swap_state(a: keras.Model, b: keras.Model) -> None:
    for x, y in zip(state_variables(a), state_variables(b)):
        value = x.numpy()
        x.assign(y.numpy())
        y.assign(value)
