"""Where a query comes from (a prior draw, an image file, an image of a data set) and what the report shows of it:
the real image beside its reconstruction with the PSNR, and every setting of the run.

`image_query(model, ...)` turns a real image into the query of the explored part of a checkpoint:
    gan / dcgan  -> `invert` (optimisation)         classifier -> the image itself (the region lives in pixels)
    vae / ae     -> `encode` (the bundle's encoder)
"""
import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._checks import positive_int, seed as check_seed


@dataclass
class QuerySource:
    """The query of a run and where it came from; `settings` are the run's settings, shown on the report page.

    kind: "prior" (a draw of the latent prior), "image" (a file) or "data" (an image of a data set);
    description: for people ("seed 3", "digit.png", "mnist #17"); inversion: the `Inversion` for a real image
    through a generator (None for a prior draw or a classifier's own image); image: the real image (C, H, W) in
    the model's range (None for a prior draw).
    """

    kind: str
    description: str
    query: np.ndarray
    inversion: object = None
    image: object = None
    settings: dict = field(default_factory=dict)

    def summary(self):
        """JSON-able record for summary.json["query"]."""
        record = {"source": self.kind, "description": self.description, **self.settings}
        if self.inversion is not None:
            inv = self.inversion
            record.update({"reconstruction": inv.method, "psnr_db": float(inv.psnr),
                           "reconstruction_seconds": float(inv.seconds),
                           **{f"{inv.method}_{k}": v for k, v in inv.settings.items()}})
        return record

    def pngs(self):
        """{"real.png": real image | reconstruction} for a real image through a generator, else {}."""
        if self.inversion is None:
            return {}
        from .report import grid_png, to_images

        inv = self.inversion
        lo, hi = inv.value_range
        pair = np.stack([inv.target.numpy(), inv.output.numpy()])  # (2, C, H, W) in [lo, hi]
        scaled = np.clip((pair - lo) / (hi - lo) * 2 - 1, -1, 1)  # to_images reads [-1, 1] as tanh images
        return {"real.png": grid_png(to_images(scaled), cols=2, cell=160)}

    def html(self, pngs):
        """The page's "query" card: the run's settings, and the real image beside its reconstruction."""
        import base64

        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_short(v))}</td></tr>"
                       for k, v in self.summary().items())
        picture = ""
        if "real.png" in pngs:
            data = base64.b64encode(pngs["real.png"]).decode("ascii")
            inv = self.inversion
            picture = (f'<div class="card"><h2>Real image &rarr; query</h2><img alt="real.png" '
                       f'src="data:image/png;base64,{data}"><p class="note">Left: the real image. Right: the '
                       f'generator at the query latent ({html.escape(inv.method)}), PSNR {inv.psnr:.1f} dB.</p>'
                       f'</div>')
        return (f'<div class="row">{picture}<div class="card"><h2>Run settings</h2><table>{rows}</table></div>'
                f'</div>')


def _short(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def read_image(image=None, data=None, index=None, shape=None):
    """The real image of --image FILE or --data NAME --index I: (float tensor (C, H, W) in [-1, 1], description).

    shape: the model's (C, H, W); a data set image of another size is resized, one of another channel count
    refused (a file is converted by `inversion.load_image`)."""
    from . import data as datasets
    from .inversion import load_image

    if image is not None:
        path = Path(image).expanduser()
        return load_image(path, shape, (-1.0, 1.0)), path.name
    if index is None:
        raise ValueError("--data needs --index I (which image of the data set)")
    if isinstance(index, bool) or int(index) != index or index < 0:
        raise ValueError(f"index must be an integer >= 0, got {index}")
    images = datasets.load(data, image_size=shape[1] if shape is not None else None).images
    if index >= len(images):
        raise ValueError(f"index {index} is out of range: {data} has {len(images)} images (0..{len(images) - 1})")
    if shape is not None and images.shape[1] != shape[0]:
        raise ValueError(f"{data} has {images.shape[1]}-channel images; the model takes {shape[0]} channels")
    return datasets.as_float(images[index:index + 1])[0], f"{data} #{index}"


def image_query(path, config, image=None, data=None, index=None, seed=0, progress=True):
    """A real image as the query of the explored part of the checkpoint at `path` (config: its config):
    a `QuerySource`. Invert (gan, dcgan), encode (vae, ae) or the image itself (classifier)."""
    from . import checkpoint
    from .inversion import encode_image, invert

    seed = check_seed(seed)
    kind = config.get("model")
    real, description = read_image(image, data, index, tuple(config["image_shape"]))
    source = "image" if image is not None else "data"
    if kind == "classifier":
        return QuerySource(source, description, real.numpy(), image=real)
    if kind in ("vae", "ae"):
        inv = encode_image(checkpoint.load(path, part="all"), real)
    elif kind in ("gan", "dcgan"):
        inv = invert(checkpoint.load(path), real, seed=seed, progress=progress)
    else:
        raise ValueError(f"cannot start from an image for a {kind!r} checkpoint")
    return QuerySource(source, description, inv.latent, inversion=inv, image=real)


def prior_query(model, query_seed):
    """Latent number `query_seed` of the prior N(0, I) as a `QuerySource`."""
    from .demo import query_latent

    return QuerySource("prior", f"prior draw, seed {query_seed}", query_latent(model, query_seed),
                       settings={"query_seed": int(query_seed)})


def check_query_args(image=None, data=None, index=None, query_seed=None):
    """One query source at most; `index` only with `data`. Raises ValueError naming the flags."""
    given = [flag for flag, value in (("--image", image), ("--data", data), ("--query-seed", query_seed))
             if value is not None]
    if len(given) > 1:
        raise ValueError(f"choose one query source, got {' and '.join(given)}")
    if index is not None and data is None:
        raise ValueError("--index goes with --data NAME")
    if data is not None and index is None:
        raise ValueError("--data needs --index I (which image of the data set)")
    if index is not None:
        positive_int(index + 1, "index")
