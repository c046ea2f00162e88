"""A real image in, a report out, through the CLI: dcgan (inversion), vae (encoder), classifier (the image itself);
`egbas layers`; one-line errors before any work."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import egbas_fast as eg
from egbas_fast import cli, models
from egbas_fast.checkpoint import save_checkpoint
from egbas_fast.inversion import load_image
from egbas_fast.interface import list_layers

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHAPE = (1, 16, 16)


def _checkpoint(tmp_path_factory, kind, **options):
    torch.manual_seed(0)
    bundle = models.build(kind, SHAPE, width=4, **options)
    bundle.apply(models.init_weights)
    return save_checkpoint(tmp_path_factory.mktemp(kind), bundle)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return {"dcgan": _checkpoint(tmp_path_factory, "dcgan", latent_dim=4, extra_layers=0),
            "vae": _checkpoint(tmp_path_factory, "vae", latent_dim=3, extra_layers=0),
            "classifier": _checkpoint(tmp_path_factory, "classifier")}


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    """A 16x16 grey digit-like picture (a bright ring on black) as a PNG file, and 4 such images as an npz."""
    yy, xx = np.mgrid[:16, :16]
    ring = (np.abs(np.hypot(yy - 7.5, xx - 7.5) - 4.5) < 1.5).astype(np.uint8) * 230
    folder = tmp_path_factory.mktemp("pictures")
    Image.fromarray(ring).save(folder / "ring.png")
    np.savez(folder / "rings.npz", images=np.stack([np.roll(ring, k, axis=1) for k in range(4)]),
             labels=np.arange(4))
    return folder


def _run(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


LAYERS = {"dcgan": "main.2", "vae": "decoder.main.2", "classifier": "main.1"}


def _explore(ckpt, out, *query):
    layer = next(layer for kind, layer in LAYERS.items() if kind in ckpt.name)
    return ["explore", "--checkpoint", str(ckpt), "--layer", layer, "--keep", "0.25", "--n", "24", "--seed", "2",
            "--out", str(out), "--quiet", *query]


def test_dcgan_inverts_an_image_file(checkpoints, picture, tmp_path, capsys):
    out = tmp_path / "r"
    printed = _run(_explore(checkpoints["dcgan"], out, "--image", str(picture / "ring.png")), capsys)
    assert "PSNR" in printed
    summary = json.loads((out / "summary.json").read_text())
    q = summary["query"]
    assert q["source"] == "image" and q["description"] == "ring.png" and q["reconstruction"] == "inversion"
    assert q["layer"] == "main.2" and q["keep"] == 0.25 and q["seed"] == 2
    assert q["units"] == summary["region"]["units_selected"] and q["fidelity"] == summary["selection"]["fidelity"]
    # the query is what eg.invert gives for that file with the run's seed, and the PSNR is its reconstruction's
    inv = eg.invert(eg.load(checkpoints["dcgan"]), picture / "ring.png", seed=2, progress=False)
    latents = np.load(out / "latents.npz")["latents"]
    np.testing.assert_array_equal(latents[0], inv.latent.ravel())
    assert q["psnr_db"] == pytest.approx(inv.psnr)
    assert (out / "real.png").stat().st_size > 0
    page = (out / "report.html").read_text()
    assert "Run settings" in page and f"PSNR {inv.psnr:.1f} dB" in page and 'alt="real.png"' in page
    with Image.open(out / "real.png") as im:  # real image and reconstruction side by side
        assert im.size[0] > im.size[1]


def test_vae_encodes_an_image_of_a_data_set(checkpoints, picture, tmp_path, capsys):
    out = tmp_path / "r"
    _run(_explore(checkpoints["vae"], out, "--data", f"npz:{picture / 'rings.npz'}", "--index", "2"), capsys)
    q = json.loads((out / "summary.json").read_text())["query"]
    assert q["source"] == "data" and q["description"].endswith("rings.npz #2") and q["reconstruction"] == "encoder"
    image = np.load(picture / "rings.npz")["images"][2]
    expected = eg.encode(eg.load(checkpoints["vae"], part="all"), torch.from_numpy(image / 127.5 - 1.0).float()[None])
    np.testing.assert_allclose(np.load(out / "latents.npz")["latents"][0], expected, rtol=1e-5, atol=1e-6)


def test_classifier_explores_the_image_itself(checkpoints, picture, tmp_path, capsys):
    out = tmp_path / "r"
    _run(_explore(checkpoints["classifier"], out, "--image", str(picture / "ring.png")), capsys)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["query"]["source"] == "image" and "reconstruction" not in summary["query"]
    latents = np.load(out / "latents.npz")["latents"]
    np.testing.assert_array_equal(latents[0], load_image(picture / "ring.png", SHAPE, (-1.0, 1.0)).numpy().ravel())
    assert summary["region"]["dim"] == 16 * 16
    # every sample is a valid image: tree and ε baselines stay in the pixel box [-1, 1]
    npz = np.load(out / "latents.npz")
    for key in ("latents", "eps_l2_latents", "eps_linf_latents"):
        assert npz[key].min() >= -1.0 and npz[key].max() <= 1.0, key
    # the share keeping the query's class, recomputed with the classifier itself
    classifier = eg.load(checkpoints["classifier"])
    with torch.no_grad():
        query_class = int(classifier(torch.from_numpy(latents[:1]).view(1, *SHAPE)).argmax())
        for key, method in (("latents", "egbas"), ("eps_l2_latents", "eps_l2")):
            classes = classifier(torch.from_numpy(npz[key]).view(-1, *SHAPE)).argmax(1).numpy()
            assert summary["methods"][method]["keeps_query_class"] == pytest.approx(np.mean(classes == query_class))
    assert summary["classifier"]["query_class"] == query_class
    assert f"keeps class {query_class}" in (out / "report.html").read_text()


def test_layers_lists_units_in_forward_order(checkpoints, capsys):
    printed = _run(["layers", "--checkpoint", str(checkpoints["dcgan"])], capsys)
    generator = eg.load(checkpoints["dcgan"])
    names = [line.split()[0] for line in printed.strip().splitlines()[1:]]
    assert names[:3] == ["main", "main.0", "main.1"]
    for line in printed.strip().splitlines()[1:]:
        name, _, shape, units = line.split()[:4]
        if name.startswith("main."):
            module = dict(generator.named_modules())[name]
            got = []
            h = module.register_forward_hook(lambda m, i, o: got.append(o[0].numel()))
            with torch.no_grad():
                generator(torch.zeros(1, 4))
            h.remove()
            assert int(units) == got[0]
    infos = {i.name: i for i in list_layers(generator, torch.zeros(1, 4))}
    assert infos["main.2"].kind == "ReLU" and infos["main.2"].explorable


@pytest.mark.parametrize("extra, message", [
    (["--data", "mnist5k"], "--index"),
    (["--index", "3"], "--index goes with --data"),
    (["--image", "/no/such.png"], "no image file"),
    (["--image", "x.png", "--query-seed", "1"], "not allowed with argument"),
])
def test_bad_query_arguments_are_one_line_before_work(checkpoints, tmp_path, capsys, extra, message):
    argv = _explore(checkpoints["dcgan"], tmp_path / "out", *extra)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("egbas") and "error:" in err and message in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_a_classifier_needs_an_image(checkpoints, tmp_path, capsys):
    assert cli.main(_explore(checkpoints["classifier"], tmp_path / "out")) == 2
    assert "--image FILE or --data NAME --index I" in capsys.readouterr().err
