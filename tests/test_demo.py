"""egbas demo / egbas explore: the whole pipeline on tiny models and the shipped one, and one-line errors."""
import json
import os

import numpy as np
import pytest
import torch

from egbas_fast import cli, demo, models, report
from egbas_fast.checkpoint import save_checkpoint


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    bundle = models.build("dcgan", (1, 16, 16), latent_dim=8, width=4)
    bundle.apply(models.init_weights)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt"), bundle)


def test_run_explore_writes_the_report(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "report"
    path = demo.run_explore(tiny_checkpoint, "main.2", keep=0.25, n=40, query_seed=3, seed=1, out=out)
    assert path == out.absolute() and sorted(os.listdir(out)) == sorted(report.REPORT_FILES)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exploration"]["nodes"] == 40 and summary["methods"]["egbas"]["in_region_rate"] == 1.0
    n_units = summary["region"]["n_units"]
    assert summary["region"]["units_selected"] == int(np.ceil(0.25 * n_units)) and "selection" in summary
    latents = np.load(out / "latents.npz")["latents"]
    from egbas_fast import core
    assert np.array_equal(latents[0], core.random_normal(1, 8, 3)[0])  # the query is prior sample `query_seed`
    assert "report.html" in capsys.readouterr().out


@pytest.mark.parametrize("change,error,message", [
    ({"checkpoint": "/nonexistent/ckpt"}, FileNotFoundError, "no checkpoint"),
    ({"layer": "main.99"}, ValueError, "unknown layer"),
    ({"keep": 0.0}, ValueError, "keep"), ({"keep": 1.5}, ValueError, "keep"),
    ({"n": 0}, ValueError, "n must"), ({"seed": -1}, ValueError, "seed"),
    ({"keep": True}, TypeError, "keep"), ({"n": 2.5}, TypeError, "n must"), ({"query_seed": -2}, ValueError, "seed"),
])
def test_run_explore_bad_input_writes_nothing(tiny_checkpoint, tmp_path, change, error, message):
    args = {"checkpoint": tiny_checkpoint, "layer": "main.2", "keep": 0.25, "n": 20, "out": tmp_path / "out"}
    with pytest.raises(error, match=message):
        demo.run_explore(**{**args, **change})
    assert not (tmp_path / "out").exists()


def test_unwritable_out_fails_before_loading(tiny_checkpoint, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr("egbas_fast.checkpoint.load", lambda *a, **k: pytest.fail("loaded before checking --out"))
    with pytest.raises(report.OutputDirectoryError):
        demo.run_explore(tiny_checkpoint, "main.2", out=tmp_path / "file" / "out")
    monkeypatch.setattr(demo, "mnist_dcgan", lambda *a, **k: pytest.fail("loaded before checking --out"))
    with pytest.raises(report.OutputDirectoryError):
        demo.run_demo(tmp_path / "file" / "out", "mnist")


def test_cli_errors_are_one_line(tiny_checkpoint, tmp_path, capsys):
    code = cli.main(["explore", "--checkpoint", str(tmp_path / "missing"), "--layer", "main.2",
                     "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("egbas: error:") and err.count("\n") == 1 and "no checkpoint" in err
    code = cli.main(["explore", "--checkpoint", str(tiny_checkpoint), "--layer", "nope", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "unknown layer" in err and "main.2" in err
    (tmp_path / "file").write_text("x")
    code = cli.main(["demo", "--out", str(tmp_path / "file" / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not a directory" in err
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_demo_explores_the_shipped_generator_without_training(tmp_path, monkeypatch):
    """run_demo hands the shipped generator and its middle ReLU to explore_model (the whole pipeline on a real
    checkpoint is test_run_explore_writes_the_report; the shipped weights are tests/test_shipped_weights.py)."""
    monkeypatch.setattr("egbas_fast.train.train", lambda *a, **k: pytest.fail("the demo trained a model"))
    calls = []
    monkeypatch.setattr(demo, "explore_model", lambda model, layer, out, **k: calls.append((model, layer, out)) or out)
    assert demo.run_demo(tmp_path / "one", "mnist") == (tmp_path / "one").absolute()
    (model, layer, out), = calls
    # ReLUs main.2, 5, 8 at 7x7 and main.11, 14, 17 at 14x14 (two extra blocks after each strided one); the demo
    # explores the middle one
    assert layer == "main.11" and not model.training
    shipped = demo.mnist_dcgan()
    assert model.egbas_config == shipped.egbas_config
    assert all(torch.equal(v, shipped.state_dict()[k]) for k, v in model.state_dict().items())


def test_middle_layer_and_query():
    gen = models.build("dcgan", (3, 64, 64), latent_dim=100, width=4, extra_layers=0).generator
    assert demo.relu_layers(gen) == ["main.2", "main.5", "main.8", "main.11"]
    assert demo.middle_layer(gen) == "main.8"
    q = demo.query_latent(gen, 5)
    assert q.shape == (100,) and q.dtype == np.float32
    with pytest.raises(ValueError, match="ReLU"):
        demo.middle_layer(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="demo model"):
        demo.run_demo("x", "cats")
