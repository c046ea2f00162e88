"""Natural photographs that install from package registries (nothing is downloaded at run time): the `photos`
data of the RED-Net super-resolution model (`egbas train --model rednet --data photos`).

Splits (fixed; the names are the files'):
    train      19 photos of Debian `opencv-doc` (/usr/share/doc/opencv-doc/examples/data): what rednet learns from
    held-out   6 other photos of the same package, never trained on
    sporco     the 5 photos of PyPI `sporco` (barbara, kodim23, monarch, sail, tulips): another registry, never
               trained on (barbara and monarch are also in Set14, the paper's test set)
    skimage    9 photos bundled with PyPI `scikit-image`, never trained on
Only real photographs are used: the opencv-doc examples also hold drawings, logos, text, a painting, synthetic
renderings, blurred images and stereo/calibration twins (aloeR, left01..., graf3, ...), all left out, and of a
stereo or ELA pair only one image is taken. Licences are in README ("Data and weights").

Each photo is a `Photo(name, pixels)`: pixels uint8 (H, W, 3) RGB or (H, W) greyscale (a few opencv-doc photos
are greyscale). Files are read from the installed packages' file lists; the Python packages are never imported.
"""
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ._files import installed_file

OPENCV_DIR = Path("/usr/share/doc/opencv-doc/examples/data")
OPENCV_INSTALL = "apt-get install -y opencv-doc"
SPORCO_INSTALL = "pip install --no-deps sporco"
SKIMAGE_INSTALL = "pip install scikit-image"

OPENCV_HELD_OUT = ("baboon.jpg", "butterfly.jpg", "fruits.jpg", "home.jpg", "leuvenA.jpg", "box.png")
OPENCV_TRAIN = ("aero1.jpg", "aero3.jpg", "aloeL.jpg", "apple.jpg", "basketball1.png", "board.jpg",
                "box_in_scene.png", "building.jpg", "chicky_512.png", "ela_original.jpg", "graf1.png", "left.jpg",
                "messi5.jpg", "orange.jpg", "rubberwhale1.png", "smarties.png", "squirrel_cls.jpg", "stuff.jpg",
                "sudoku.png")
SPORCO = ("barbara.png", "kodim23.png", "monarch.png", "sail.png", "tulips.png")
SKIMAGE = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
           "gravel.png", "rocket.jpg")
SPLITS = ("train", "held-out", "sporco", "skimage")


class Photo(NamedTuple):
    name: str
    pixels: np.ndarray  # uint8 (H, W, 3) RGB or (H, W) greyscale


def read_image(path):
    """A picture file -> uint8 (H, W) greyscale or (H, W, 3) RGB; with alpha also returns the alpha plane.

    Returns (pixels, alpha or None). Palette images are expanded, 16-bit greyscale is scaled to 8 bits. A file that
    is missing, truncated or not an image raises ValueError / FileNotFoundError naming the file."""
    from PIL import Image, UnidentifiedImageError
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {str(path)!r}")
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                im = Image.fromarray((np.asarray(im, np.float64) / 257).round().clip(0, 255).astype(np.uint8))
            alpha = np.asarray(im.getchannel("A")) if im.mode in ("LA", "RGBA", "PA") else None
            grey = im.mode in ("1", "L", "LA")
            pixels = np.asarray(im.convert("L" if grey else "RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as e:  # PIL raises SyntaxError for some broken headers
        raise ValueError(f"cannot read image {str(path)!r}: {e}") from None
    return np.ascontiguousarray(pixels), alpha


def _opencv_file(name):
    for path in (OPENCV_DIR / name, OPENCV_DIR / (name + ".gz")):
        if path.is_file():
            if path.suffix == ".gz":  # some Debian versions compress the examples
                import gzip
                import io
                from PIL import Image
                with gzip.open(path) as f, Image.open(io.BytesIO(f.read())) as im:
                    return np.asarray(im.convert("L" if im.mode in ("1", "L", "LA") else "RGB"))
            return read_image(path)[0]
    raise ImportError(f"the photos data needs the Debian package opencv-doc ({OPENCV_DIR}/{name} is missing): "
                      f"run `{OPENCV_INSTALL}`")


def load(split):
    """The photos of `split` (SPLITS) as a list of Photo, in a fixed order."""
    if split == "train":
        return [Photo(n.rsplit(".", 1)[0], _opencv_file(n)) for n in OPENCV_TRAIN]
    if split == "held-out":
        return [Photo(n.rsplit(".", 1)[0], _opencv_file(n)) for n in OPENCV_HELD_OUT]
    if split == "sporco":
        return [Photo(n.rsplit(".", 1)[0], read_image(installed_file("sporco", n, SPORCO_INSTALL,
                                                                     "the sporco photos"))[0]) for n in SPORCO]
    if split == "skimage":
        return [Photo(n.rsplit(".", 1)[0], read_image(installed_file("scikit-image", n, SKIMAGE_INSTALL,
                                                                     "the scikit-image photos"))[0])
                for n in SKIMAGE]
    raise KeyError(f"unknown photos split {split!r}; choose one of {', '.join(SPLITS)}")
