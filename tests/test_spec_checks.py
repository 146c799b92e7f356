"""tfcv._spec_checks: SpecError, and how a rejected spec value is worded under its key path."""

from __future__ import annotations

import pickle

import pytest
from test_spec import MINIMAL

from tfcv.spec import ModelSpec, SpecError, SpecTypeError, SpecValueError


def test_spec_errors_are_public_value_and_type_errors_that_carry_the_key_path():
    with pytest.raises(SpecValueError) as caught:
        ModelSpec.from_dict({**MINIMAL, "backbone": {"blocks": [{}, {"pooling": "maxx"}]}})
    error = caught.value
    assert isinstance(error, SpecError) and isinstance(error, ValueError)
    assert (error.path, error.lead) == ("backbone.blocks[1].pooling", "Invalid value for")
    assert str(error) == ("Invalid value for `backbone.blocks[1].pooling` in the model spec. "
                          "Received: 'maxx'. Expected one of 'max', 'avg', null.")
    # Errors cross process boundaries (joblib workers build specs too).
    revived = pickle.loads(pickle.dumps(error))
    assert type(revived) is SpecValueError and (revived.path, str(revived)) == (error.path, str(error))

    with pytest.raises(SpecTypeError) as caught:
        ModelSpec.from_dict({**MINIMAL, "head": {"dropout": "half"}})
    assert isinstance(caught.value, TypeError) and caught.value.path == "head.dropout"
    with pytest.raises(SpecValueError, match="Unknown key `head.size`") as caught:
        ModelSpec.from_dict({**MINIMAL, "head": {"size": 3}})
    assert caught.value.lead == "Unknown key"


@pytest.mark.parametrize("changes, error, match", [
    ({"backbone": {"blocks": [{"residual": "yes"}]}}, SpecTypeError, r"Received: 'yes'\. Expected true or false\."),
    ({"backbone": {"application": "MobileNetV3Small", "fine_tune_layers": "all"}}, SpecTypeError,
     r"Expected an int or null\."),
    ({"backbone": {"blocks": [{"dropout": 1.0}]}}, SpecValueError, r"Expected a number >= 0\.0 and < 1\.0\."),
    ({"training": {"schedule": {"name": "cosine", "decay_steps": 10, "alpha": 2}}}, SpecValueError,
     r"`training\.schedule\.alpha`.*Expected a number >= 0\.0 and <= 1\.0\."),
    ({"training": {"schedule": {"name": "linear"}}}, SpecValueError,
     r"`training\.schedule\.name`.*Expected one of 'constant', 'cosine', 'exponential'\."),
])
def test_spec_messages_use_yaml_words(changes, error, match):
    with pytest.raises(error, match=match):
        ModelSpec.from_dict({**MINIMAL, **changes})
