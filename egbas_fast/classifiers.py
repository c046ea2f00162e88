"""What a report shows for a classifier: its 'latents' are images, so the pictures are the samples themselves,
each captioned with the predicted class and its confidence, and each method is scored by the share of its samples
that keep the query's class."""
import numpy as np


class ClassifierView:
    """Pictures and class statistics of samples of a classifier's region (query shape (C, H, W), logits out)."""

    def __init__(self, region, query_class):
        self.region, self.query_class = region, int(query_class)

    @classmethod
    def of(cls, region, query_output):
        """A view when `region` explains a classifier (image query, one logit vector per sample), else None."""
        shape = tuple(getattr(region, "query_shape", ()))
        out = query_output.reshape(len(query_output), -1)
        if len(shape) != 3 or shape[0] not in (1, 3) or tuple(query_output.shape) != tuple(out.shape) \
                or out.shape[1] < 2:
            return None
        return cls(region, int(out[0].argmax()))

    @staticmethod
    def predictions(logits):
        """(n, K) logits -> (classes (n,) int64, confidences (n,) float64): argmax and its softmax probability."""
        import torch

        p = torch.softmax(torch.as_tensor(logits, dtype=torch.float64), dim=1)
        conf, cls = p.max(1)
        return cls.numpy(), conf.numpy()

    def keeps_class(self, latents):
        """Share of `latents` the classifier puts in the query's class."""
        classes, _ = self.predictions(self.region.generate(latents))
        return float(np.mean(classes == self.query_class)) if len(classes) else 0.0

    def png(self, latents, logits, outside=None, cols=8, cell=64):
        """The samples as images, captioned "class (confidence)"; a red caption where the class changed."""
        from .report import grid_png, to_images

        images = np.asarray(latents, np.float32).reshape(len(latents), *self.region.query_shape)
        lo, hi = self.region.bounds if self.region.bounds is not None else (-1.0, 1.0)
        classes, conf = self.predictions(logits)
        captions = [f"{c} ({p:.0%})" for c, p in zip(classes, conf)]
        return grid_png(to_images(np.clip((images - lo) / (hi - lo) * 2 - 1, -1, 1)), outside=outside, cols=cols,
                        cell=cell, captions=captions, flagged=classes != self.query_class)
