"""RED-Net: a residual encoder-decoder for image restoration (Mao, Shen, Yang, "Image Restoration Using Very Deep
Convolutional Encoder-Decoder Networks with Symmetric Skip Connections", NIPS 2016).

    x (bicubic-upscaled image) --conv1-relu--conv2-relu-- ... --conv_n-relu--+
      |                          |                                           |
      |                          +------------------+  (every second conv)   |
      |                                             v                        v
      +---------------------------> (+) <-- deconv_n ... relu((+) <-- deconv_{n-2}) ... <-- deconv_1 <--+
      output = x + deconv_n(...)

Encoder: n conv layers (3x3, stride 1, padding 1) each followed by ReLU. Decoder: n transposed conv layers
(3x3, stride 1, padding 1); the first n-1 are followed by ReLU, the last one maps to the image channels. Skips: the
(rectified) output of conv layer k, for every even k < n, is added to the output of its mirror deconv layer n - k
before that layer's ReLU (the paper: "passed every two layers from convolutional feature maps to their mirrored
deconvolutional feature maps ... summed element-wise, and passed to the next layer after rectification"). The
input itself is the k = 0 skip: it is added to the last deconv layer's output, so the network learns the residual
(restored - bicubic) -- RED-Net's own input-to-output skip; it is also what makes a shallow net train in minutes.

RED30 (the paper's main model) is depth=15, width=64. Sizes here are per side: depth=15 means 15 convs and 15
deconvs. Stride 1 everywhere, so any image size works and the output has the input's size.
"""
import torch
from torch import nn

# The CPU-sized default: 5 + 5 layers of 32 3x3 filters (RED10-like: 2 skips + the input skip, receptive field
# 21 x 21 pixels, 75 k parameters, ~75 k multiply-adds per pixel, 1/35 of RED30's 2.6 M). Measured on one core
# (batch 16 of 48 x 48 patches, idle machine): RED30 3.9 s per Adam step, 5 x 64 1.3 s, 5 x 48 0.75 s, 5 x 32
# 0.31 s. The x2 gain over bicubic was already +1.0 dB on the held-out photos after 500 steps of 5 x 32, so 1,500
# steps (~8 CPU minutes) fit the 30-minute budget with room; RED30 would get ~460 steps there (the paper trains it
# for days on a GPU).
DEFAULT_DEPTH = 5
DEFAULT_WIDTH = 32


def skip_pairs(depth):
    """[(k, j)]: the output of conv layer k (1-based; 0 = the input image) is added to the output of deconv layer j
    (1-based) before j's ReLU (or, for k = 0, to the network's output). k runs over 0 and the even k < depth;
    j = depth - k is k's mirror (the deconv layer whose output has the same role and size)."""
    return [(k, depth - k) for k in range(0, depth, 2)]


class DeconvLayer(nn.Module):
    """One decoder layer: relu(deconv(x) + skip). Its output is the rectified sum, so exploring it (its name, or
    its `relu`) sees the signs the next layer receives; `deconv` alone is the value before the skip."""

    def __init__(self, width):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(width, width, 3, 1, 1)
        self.relu = nn.ReLU()

    def forward(self, x, skip=None):
        x = self.deconv(x)
        return self.relu(x if skip is None else x + skip)


class REDNet(nn.Module):
    """Image (B, C, H, W) float in [0, 1], the bicubic-upscaled low-resolution image -> restored image, same shape.

    Layers (dotted names for `egbas explore --layer`): encoder.{0..n-1} (Sequential(conv, relu); encoder.i.1 is the
    ReLU), decoder.{0..n-2} (DeconvLayer: the sum with the skip, rectified), out (the last deconv, no ReLU).
    The output is NOT clamped (training needs the gradient); clamp to [0, 1] before saving (sr.restore does).
    """

    def __init__(self, channels=1, depth=DEFAULT_DEPTH, width=DEFAULT_WIDTH):
        super().__init__()
        if depth < 1 or width < 1 or channels < 1:
            raise ValueError(f"RED-Net needs depth, width, channels >= 1, got {depth}, {width}, {channels}")
        self.depth, self.width, self.channels = depth, width, channels
        self.encoder = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels if i == 0 else width, width, 3, 1, 1), nn.ReLU()) for i in range(depth))
        self.decoder = nn.ModuleList(DeconvLayer(width) for _ in range(depth - 1))
        self.out = nn.ConvTranspose2d(width, channels, 3, 1, 1)
        # conv k's output -> deconv j: {j: k}, both 1-based, k = 0 the input
        self.skips = {j: k for k, j in skip_pairs(depth)}

    def forward(self, x):
        features = [x]  # features[k] = output of conv layer k (rectified), features[0] = the input
        h = x
        for layer in self.encoder:  # (B, width, H, W) all along: stride 1, padding 1
            h = layer(h)
            features.append(h)
        for j, layer in enumerate(self.decoder, start=1):
            k = self.skips.get(j)
            h = layer(h, None if k is None else features[k])
        return self.out(h) + features[self.skips[self.depth]]  # j = depth mirrors k = 0: residual learning


class Restorer(nn.Module):
    """The trained bundle of `egbas train --model rednet`: one part, `rednet` (what E-GBAS explores)."""
    explorable = "rednet"

    def __init__(self, channels=1, depth=DEFAULT_DEPTH, width=DEFAULT_WIDTH):
        super().__init__()
        self.rednet = REDNet(channels, depth, width)

    def forward(self, x):
        return self.rednet(x)


def build_restorer(channels=1, depth=None, width=None, scale=2):
    """An untrained Restorer with `egbas_config` (on the bundle and on its rednet). The last layer starts at zero,
    so the untrained network returns its input: training starts from bicubic upscaling, not from noise."""
    depth = DEFAULT_DEPTH if depth is None else int(depth)
    width = DEFAULT_WIDTH if width is None else int(width)
    bundle = Restorer(int(channels), depth, width)
    nn.init.zeros_(bundle.rednet.out.weight)
    nn.init.zeros_(bundle.rednet.out.bias)
    config = {"model": "rednet", "channels": int(channels), "depth": depth, "width": width, "scale": int(scale),
              "input": "bicubic-upscaled luminance Y (BT.601 studio range / 255) in [0, 1], (B, C, H, W)",
              "output": "restored Y, same shape (residual: input + last layer)",
              # any H, W works; this is the size `egbas layers` and `egbas explore --image` use (sr.EXPLORE_CROP)
              "input_shape": [int(channels), 48, 48], "output_shape": [int(channels), 48, 48]}
    for module in (bundle, bundle.rednet):
        module.egbas_config = config
    return bundle
