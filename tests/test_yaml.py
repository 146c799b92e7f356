"""tfcv._yaml: the safe YAML reader of model specs and run configurations."""

from __future__ import annotations

import pytest

from tfcv._yaml import read_yaml


def test_read_yaml_reads_files_and_text_and_refuses_other_types(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("a: 1e-3\n")
    assert read_yaml(path) == read_yaml(str(path)) == read_yaml("a: 1e-3\n") == {"a": 0.001}
    with pytest.raises(TypeError, match="path_or_text"):
        read_yaml(3)
