"""The `tfcv` command line, and the library calls it is made of.

`tfcv run` and `tfcv verify` end to end as subprocesses; `tfcv --help` and
`import tfcv` without TensorFlow; the held-out split and the reference model
`tfcv run` calls.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import tfcv
from tests.conftest import tfcv_in_process
from tfcv import cli
from tfcv._run_dir import load_test_set


def run_tfcv(*args, cwd=None, timeout=600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "tfcv.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.slow
def test_tfcv_run_end_to_end(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_tfcv("run", "--epochs", "1", "--folds", "2", "--run-dir", str(run_dir), "--verbose", "2", "--test-size", "0.2")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "fold 1/2 epoch 1/1" in out and "fold 2/2 epoch 1/1" in out
    assert "left" in out and "elapsed" in out
    assert "mean ± std" in out
    result = tfcv.CVResult.load(run_dir)
    assert result.n_folds == 2
    assert set(result.scores) >= {"accuracy", "precision", "recall", "f1", "loss"}
    # 20% of 1797 digits held out before the folds; the fold ensemble is scored on them.
    assert len(result.oof_predictions) == 1437
    # The held-out rows stay in the run directory for `tfcv evaluate --run-dir`.
    x_test, y_test = load_test_set(run_dir)
    assert x_test.shape == (360, 8, 8, 1) and y_test.shape == (360,)
    assert "held-out test (fold ensemble): accuracy" in out
    assert set(result.test_scores) == {"accuracy", "precision", "recall", "f1"}
    for name in ("confusion_matrix", "fold_scores", "learning_curves_loss", "learning_curves_accuracy"):
        assert (run_dir / "plots" / f"{name}.png").stat().st_size > 1000
    summary = json.loads((run_dir / "result.json").read_text())
    assert summary["n_folds"] == 2 and summary["info"]["epochs"] == 1


@pytest.mark.slow
def test_tfcv_run_yaml_config_and_flags_win(tmp_path):
    config = tmp_path / "experiment.yaml"
    config.write_text("folds: 3\nepochs: 4\nbatch-size: 64\nseed: 5\nname: yamlrun\nstrategy: stacked\n")
    proc = run_tfcv("run", str(config), "--folds", "2", "--verbose", "0", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 folds x 4 epochs, batch size 64, seed 5" in proc.stdout
    run_dirs = list((tmp_path / "runs").iterdir())
    assert len(run_dirs) == 1 and run_dirs[0].name.startswith("yamlrun-")
    manifest = json.loads((run_dirs[0] / "manifest.json").read_text())
    assert manifest["batch_size"] == 64 and manifest["seed"] == 5
    # Four epochs of the reference CNN learn the digits far above chance (0.1).
    result = tfcv.CVResult.load(run_dirs[0])
    assert result.mean("accuracy") > 0.8
    assert result.info["strategy"] == "stacked"


def test_bad_config_key_is_a_clear_error(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("epoch: 3\n")
    code, err = tfcv_in_process(capsys, "run", str(config))
    assert code == 2
    assert "unknown keys" in err and "'epoch'" in err and "epochs" in err
    config.write_text("folds: [3\nepochs: 2\n")
    code, err = tfcv_in_process(capsys, "run", str(config))
    assert code == 2 and "Traceback" not in err
    assert "bad.yaml" in err and "line 2" in err
    # Values of the wrong type are refused before training (a quoted "no" used to refit; an export
    # path of 5 failed once the run was over).
    for text, message in (('refit: "no"\n', "`refit` must be true or false, got refit='no'"),
                          ("export: 5\n", "`export` must be a path, got export=5")):
        config.write_text(text)
        code, err = tfcv_in_process(capsys, "run", str(config), "--run-dir", str(tmp_path / "run"))
        assert code == 2 and message in err and not (tmp_path / "run").exists()


def test_bad_flag_value_is_a_clear_error(tmp_path, capsys):
    code, err = tfcv_in_process(capsys, "run", "--folds", "1", "--run-dir", str(tmp_path / "r"))
    assert code == 2
    assert "folds=1" in err and "Expected an int >= 2" in err


def test_unknown_backend_is_a_clear_error(tmp_path, capsys):
    code, err = tfcv_in_process(capsys, "run", "--n-jobs", "2", "--backend", "spark", "--run-dir", str(tmp_path / "r"))
    assert code == 2
    assert "backend='spark'" in err and "'loky', 'ray'" in err


def test_unknown_strategy_is_a_clear_error(tmp_path, capsys):
    code, err = tfcv_in_process(capsys, "run", "--strategy", "fast", "--run-dir", str(tmp_path / "r"))
    assert code == 2
    assert "strategy='fast'" in err and "'sequential', 'stacked', 'auto'" in err
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------ start-up, lazily


_HEAVY = ("tensorflow", "keras", "grpc", "tfcv.serving", "tfcv.crossval")


def _modules_after(code):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(m for m in {_HEAVY!r} if m in sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["run", "--help"], ["verify", "--help"], []])
def test_help_imports_neither_tensorflow_nor_the_server(argv):
    code = (
        "import tfcv.cli\n"
        "try:\n"
        f"    tfcv.cli.main({argv!r})\n"
        "except SystemExit:\n"
        "    pass"
    )
    assert _modules_after(code) == []


def test_import_tfcv_is_lazy_and_keeps_the_public_names():
    assert _modules_after("import tfcv; tfcv.__version__; dir(tfcv)") == []
    public = {
        "CVResult", "CrossValidator", "FoldPlan", "ModelBuilder", "ModelSpec", "build_model", "callbacks",
        "data", "datasets", "export", "export_saved_model", "layers", "models", "plots",
    }
    assert set(tfcv.__all__) >= public
    assert set(dir(tfcv)) >= public | {"__version__"}
    for name in tfcv.__all__:
        assert getattr(tfcv, name) is not None
    assert tfcv.FoldPlan.__module__ == "tfcv.folds"
    with pytest.raises(AttributeError, match="no attribute 'CrossValidater'"):
        tfcv.CrossValidater  # noqa: B018


def test_every_tfcv_name_the_readme_and_notebooks_use_is_public():
    # `tfcv.sources.load_data(...)` in a fresh notebook kernel needs `sources` in the lazy table.
    root = Path(__file__).resolve().parents[1]
    texts = [root / "README.md", *sorted((root / "notebooks" / "src").glob("*.py"))]
    used = {
        name
        for path in texts
        for line in path.read_text().splitlines() if not line.lstrip().startswith(("from ", "import "))
        for name in re.findall(r"(?<![\w/.-])tfcv\.([A-Za-z]\w*)", line)
    }
    # The command line and the server are entry points, not API; tfcv.json is the bundle's metadata file.
    used -= {"cli", "serving", "json"}
    assert sorted(used - set(tfcv.__all__)) == []



def test_the_readme_command_line_lists_every_command_its_flags_and_the_config_keys():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## The command line"):text.index("## Project layout")]
    synopsis = section[section.index("```") + 3:section.index("```", section.index("```") + 3)]
    commands = re.split(r"^(?=tfcv )", synopsis, flags=re.M)
    subparsers = next(a for a in cli.build_parser()._actions if a.dest == "command")
    for name, parser in subparsers.choices.items():
        if name == "serve":  # its flags mirror tensorflow_model_server's; the synopsis ends them with "..."
            continue
        [usage] = [c for c in commands if c.startswith(f"tfcv {name} ")]
        flags = {o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
        assert sorted(f for f in flags if f not in usage) == [], name
    keys = section[section.index("takes the same keys as the flags"):]
    keys = set(re.findall(r"`(\w+)`", keys[:keys.index("flags win")]))
    assert sorted(set(cli.RUN_DEFAULTS) - keys) == []

def test_python_dash_m_tfcv_is_the_tfcv_command():
    proc = subprocess.run([sys.executable, "-m", "tfcv", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"tfcv {tfcv.__version__}"


def test_serve_flags_are_there_once_serve_is_asked_for(capsys):
    args = cli.build_parser().parse_args(["serve", "--model_name", "digits", "--model_base_path", "models/digits"])
    assert args.command == "serve" and args.model_name == "digits" and args.model_base_path == "models/digits"
    assert args.rest_api_port == 8501
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    assert "--rest_api_port" in capsys.readouterr().out


# ----------------------------------------------------------- tfcv verify


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from conftest import tiny_classifier

    keras.utils.set_random_seed(0)
    base = tmp_path_factory.mktemp("serving") / "digits"
    return tfcv.export_saved_model(tiny_classifier(), base, randomized=None)


def test_verify_prints_ok(bundle, capsys):
    assert cli.main(["verify", bundle]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK: {bundle}: signatures serving_default;") and "records replayed" in out


def test_verify_names_the_defect_and_exits_1(bundle, tmp_path, capsys):
    broken = tmp_path / "1"
    shutil.copytree(bundle, broken)
    os.remove(broken / "saved_model.pb")
    assert cli.main(["verify", str(broken)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("tfcv verify: error: ") and "no saved_model.pb" in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert cli.main(["verify", "--json", str(broken)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and "no saved_model.pb" in report["error"]


@pytest.mark.slow
def test_verify_json_in_a_fresh_process(bundle):
    proc = subprocess.run(
        [sys.executable, "-m", "tfcv", "verify", "--json", bundle],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"ok": True, "signatures": ["serving_default"], "replayed": report["replayed"]}
    assert report["replayed"] > 0


# ------------------------------------------- TensorFlow's startup lines

# What TensorFlow 2.21 prints while it loads, whatever TF_CPP_MIN_LOG_LEVEL says.
_STARTUP_NOISE = re.compile(r"^[IW]\d{4} |absl::InitializeLog|cudart_stub|oneDNN custom operations|cuInit", re.M)


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "out"), [(["inspect"], "serving_default"), (["serve", "--help"], "--model_base_path")])
def test_a_command_prints_none_of_tensorflows_startup_lines(bundle, argv, out):
    # `serve --help` imports TensorFlow while the arguments are parsed.
    argv = argv + [bundle] if argv == ["inspect"] else argv
    env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-m", "tfcv", *argv], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out in proc.stdout
    assert not _STARTUP_NOISE.search(proc.stderr), proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["loky", "ray"])
def test_tfcv_run_n_jobs_workers_print_none_of_tensorflows_startup_lines(tmp_path, backend):
    # Every joblib worker starts TensorFlow too, before its first fold; Ray
    # passes its workers' stderr on to the command's, prefixed by the actor.
    if backend == "ray":
        pytest.importorskip("ray", reason="install the ray extra: pip install 'tfcv[ray]'")
    env = {name: value for name, value in os.environ.items() if name != "TF_CPP_MIN_LOG_LEVEL"}
    argv = ["run", "--n-jobs", "2", "--backend", backend, "--folds", "2", "--epochs", "1", "--verbose", "0",
            "--run-dir", str(tmp_path / "r")]
    proc = subprocess.run([sys.executable, "-m", "tfcv", *argv], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "mean ± std" in proc.stdout
    output = proc.stdout + proc.stderr
    assert not _STARTUP_NOISE.search(output), output


def test_the_log_level_the_user_set_is_kept(bundle, monkeypatch, capsys):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    assert cli.main(["inspect", bundle]) == 0
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    assert cli.main(["inspect", bundle]) == 0
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    assert "serving_default" in capsys.readouterr().out


# -------------------------------------------- what `tfcv run` calls


def test_bad_test_size_is_a_clear_error(tmp_path, capsys):
    code, err = tfcv_in_process(capsys, "run", "--test-size", "1.5", "--run-dir", str(tmp_path / "r"))
    assert code == 2
    assert "test_size=1.5" in err and "between 0 and 1" in err


@pytest.mark.parametrize(("y", "message"), [
    (np.linspace(0, 1, 40), "are not class labels (dtype float64, shape (40,), 40 distinct values)"),
    (np.zeros(40, "int64"), "hold a single class (0); a classifier needs at least two"),
])
def test_npz_labels_the_reference_model_cannot_classify_are_a_clear_error(tmp_path, capsys, y, message):
    # They used to build a 40-class model for 40 regression targets, or fail on `num_classes=1`.
    np.savez(tmp_path / "d.npz", x=np.zeros((40, 8, 8, 1), "float32"), y=y)
    code, err = tfcv_in_process(capsys, "run", "--data", str(tmp_path / "d.npz"), "--run-dir", str(tmp_path / "run"))
    assert code == 2 and message in err and "d.npz" in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("shape", [(40, 64), (40, 8, 8)])
def test_npz_samples_the_reference_cnn_cannot_take_are_a_clear_error(tmp_path, capsys, shape):
    # They failed with "input_shape=(64,). Expected (height, width, channels)", a value the user never gave.
    np.savez(tmp_path / "d.npz", x=np.zeros(shape, "float32"), y=np.arange(40) % 2)
    code, err = tfcv_in_process(capsys, "run", "--data", str(tmp_path / "d.npz"), "--run-dir", str(tmp_path / "run"))
    assert code == 2 and not (tmp_path / "run").exists()
    assert f"40 samples of shape {shape[1:]} from" in err and "d.npz" in err, err
    assert "takes images of shape (height, width, channels)" in err and "x[..., None]" in err and "`model:`" in err


@pytest.mark.parametrize("command, hint", [("run", "; run the same command again to resume."), ("export", ".")])
def test_ctrl_c_says_resume_only_for_a_run(capsys, command, hint):
    def interrupted(args):
        raise KeyboardInterrupt

    import argparse

    assert cli._handle(argparse.Namespace(command=command, handler=interrupted)) == 130
    assert capsys.readouterr().err == f"\ntfcv {command}: interrupted{hint}\n"


def test_ctrl_c_while_tensorflow_starts_is_one_line(monkeypatch, capsys):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "start_tensorflow", interrupted)
    assert cli.main(["inspect", "nowhere"]) == 130
    assert capsys.readouterr().err == "\ntfcv inspect: interrupted.\n"

