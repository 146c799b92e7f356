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


def test_a_missing_yaml_file_and_broken_yaml_get_errors_that_name_them(tmp_path):
    missing = tmp_path / "missing.yaml"
    for given in (missing, str(missing), "spec.yml"):
        with pytest.raises(FileNotFoundError, match=r"No YAML file at .*(missing\.yaml|spec\.yml)"):
            read_yaml(given)
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\nb: 3\n")
    with pytest.raises(ValueError, match=r"(?s)YAML file .*broken\.yaml.*line 2"):
        read_yaml(broken)
    with pytest.raises(ValueError, match="YAML text"):
        read_yaml("a: {")
    # A one-word string that is no path stays YAML text.
    assert read_yaml("digits") == "digits"


def test_a_yaml_file_that_is_not_utf8_is_named_with_its_line(tmp_path):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"input_shape: [8, 8, 1]\nname: caf\xe9\n")
    with pytest.raises(ValueError, match=r"YAML file .*latin1\.yaml' is not UTF-8 text: byte 0xe9 on line 2"):
        read_yaml(latin1)


def test_a_key_written_twice_is_refused_with_both_lines(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("name: digits\nepochs: 5\ntraining:\n  optimizer: adam\n  optimizer: sgd\n")
    with pytest.raises(ValueError, match=r"(?s)YAML file .*twice\.yaml.*'optimizer' a second time \(first on line 4\).*line 5"):
        read_yaml(path)
    with pytest.raises(ValueError, match=r"(?s)'epochs' a second time \(first on line 2\).*line 6"):
        read_yaml("a: 1\nepochs: 5\nb: [1, 2]\nc: {x: 1}\nd: 2\nepochs: 50\n")
    # Equal keys in different mappings, and merge keys, are fine.
    assert read_yaml("a: {k: 1}\nb: {k: 2}\nbase: &b {k: 3}\nc:\n  <<: *b\n  j: 4\n") == {
        "a": {"k": 1}, "b": {"k": 2}, "base": {"k": 3}, "c": {"k": 3, "j": 4}}
