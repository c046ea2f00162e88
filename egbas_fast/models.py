"""The networks E-GBAS explains: GAN, DCGAN, VAE, autoencoder, classifier.

Every generator maps a latent batch (B, d) -- (B, d, 1, 1) is accepted too -- to images (B, C, H, W) in [-1, 1].
`build(...)` returns a *bundle*: an nn.Module whose children are the trained parts (e.g. `generator` and
`discriminator`), with `bundle.explorable` naming the part E-GBAS explores and `bundle.egbas_config` a JSON-able
dict that rebuilds it (`from_config(config)`). Every part carries the same `egbas_config`, so a generator handed to
the explorer knows its latent dim (`latent_dim`), input shape (`input_shape`) and output shape (`output_shape`).

The DCGAN generator follows the pytorch/examples layout exactly (`main = Sequential(ConvTranspose2d, BatchNorm2d,
ReLU(inplace=True), ...)`), so the pretrained face weights (`zoo.face_dcgan`) load into it key for key.
"""
import torch
from torch import nn
from torch.nn import functional as F

KINDS = ("gan", "dcgan", "vae", "ae", "classifier")  # and "rednet" (image restoration: rednet.py, from_config)

# Defaults per kind: latent dim (None = not a generator) and feature width (ngf/ndf, or the MLP hidden size).
# Small latents train faster on small data: on mnist5k, dcgan with d = 32 gave more confidently classified digits
# than d = 100 (56% vs 50%, same steps); vae (1 extra layer) d = 6: 63%, d = 8: 60%, d = 10: 53%, d = 4: 64% but
# with a lopsided class histogram (31 fives in 1,000) and 79% of reconstructions recognised instead of 90%.
# The face DCGAN (zoo) has d = 100.
_DEFAULT_LATENT = {"gan": 64, "dcgan": 32, "vae": 6, "ae": 16, "classifier": None}
_DEFAULT_WIDTH = {"gan": 256, "dcgan": 64, "vae": 64, "ae": 32, "classifier": 32}
# vae width 64 (decoder ngf 128): 53% confidently classified prior samples instead of 50% with 32 (both with
# train.prior_batchnorm_stats, no extra layers); wider still (96, 1 extra layer) gave 58% in twice the time.
# The dcgan discriminator has no BatchNorm: with the small training batches (8) it normalised the real and the fake
# batch each by its own 8-sample statistics; without it, 5-epoch mnist5k runs gave 59% / 52% confidently
# classified samples for seeds 0 / 1 instead of 56% / 48%. (Checkpoints whose config lacks the key have it.)
_DISCRIMINATOR_BATCHNORM = False
# Same-size 3x3 blocks after each strided block, in both networks (dcgan: G and D; vae: decoder and encoder).
# Depth, not width, is what the 28x28 nets lacked. dcgan on mnist5k, 5 epochs, share of 1,000 samples the judge
# (egbas_fast.quality) labels with confidence > 0.9, seeds 0 / 1: extra_layers 0 -> 59% / 52%, 1 -> 62% / 63%,
# 2 -> 72% / 73% (3x the training time: ~2.5 min on one core); width 96 with 1 extra block gave 65% in 4 min.
# vae (d = 6, decoding z ~ N(0, I) directly): 0 -> 53% / 50% (d = 8), 1 -> 63% / 63%, 2 -> 62% / 65%. It stayed
# near 62% whatever else was tried (10 epochs, lr 5e-4, batch 4/16, a Gaussian likelihood with a learned scale,
# no encoder BatchNorm) while its decodings of the encoder's own codes were recognised 87% of the time: the gap
# was the prior, which the second stage (VAEGenerator.latent_map) closes: 79%.
_DEFAULT_EXTRA_LAYERS = {"dcgan": 2, "vae": 1}


def conv_plan(size):
    """(start, doublings) with start * 2**doublings == size, start in {4, 7}: the spatial sizes a DCGAN stack
    reaches from a 1x1 latent (4 -> 8 -> ... -> 64 for faces, 7 -> 14 -> 28 for MNIST)."""
    for start in (4, 7):
        doublings = 0
        while start << doublings < size:
            doublings += 1
        if doublings >= 1 and start << doublings == size:
            return start, doublings
    raise ValueError(
        f"convolutional models need square images of side 4*2^k or 7*2^k (8, 14, 16, 28, 32, 56, 64, ...); "
        f"got side {size}: pass image_size= (--image-size) to resize the data")


def _image_side(image_shape):
    c, h, w = image_shape
    if h != w:
        raise ValueError(f"convolutional models need square images, got {h}x{w}: pass image_size= to resize")
    return h


class DCGANGenerator(nn.Module):
    """z (B, nz) or (B, nz, 1, 1) -> image (B, nc, S, S) in [-1, 1]. pytorch/examples DCGAN generator: the
    first transposed conv expands the 1x1 latent to start x start, each further one doubles the side.
    extra_layers > 0 adds that many 3x3 stride-1 (ConvTranspose2d, BatchNorm2d, ReLU) blocks after each hidden
    block (the "extra layers" of the original DCGAN code); 0 is the pytorch/examples network exactly."""

    def __init__(self, latent_dim, image_shape, width=64, extra_layers=0):
        super().__init__()
        nc, side = image_shape[0], _image_side(image_shape)
        start, doublings = conv_plan(side)
        self.latent_dim = latent_dim
        widths = [width * 2 ** (doublings - 1 - i) for i in range(doublings)]  # 64x64: 8ngf, 4ngf, 2ngf, ngf

        def block(cin, cout, *conv):  # ConvTranspose2d, BatchNorm2d, ReLU, then the extra same-size blocks
            layers = [nn.ConvTranspose2d(cin, cout, *conv, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
            for _ in range(extra_layers):
                layers += [nn.ConvTranspose2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]
            return layers

        layers = block(latent_dim, widths[0], start, 1, 0)  # (B, widths[0], start, start)
        for cin, cout in zip(widths, widths[1:]):
            layers += block(cin, cout, 4, 2, 1)  # side doubles
        layers += [nn.ConvTranspose2d(widths[-1], nc, 4, 2, 1, bias=False), nn.Tanh()]  # (B, nc, side, side)
        self.main = nn.Sequential(*layers)

    def forward(self, z):
        return self.main(z.reshape(z.shape[0], self.latent_dim, 1, 1))


class ConvEncoder(nn.Module):
    """image (B, nc, S, S) -> (B, out_dim): the DCGAN discriminator stack (strided convs, BatchNorm, LeakyReLU),
    its last conv collapsing start x start to 1x1. The discriminator (out_dim=1, logits), the VAE/AE encoder
    and the classifier are all this network. batchnorm=False leaves out the BatchNorm layers; extra_layers > 0
    adds that many 3x3 stride-1 (Conv2d, LeakyReLU) blocks after each strided block."""

    def __init__(self, image_shape, out_dim, width=64, batchnorm=True, extra_layers=0):
        super().__init__()
        nc, side = image_shape[0], _image_side(image_shape)
        start, doublings = conv_plan(side)
        widths = [width * 2 ** i for i in range(doublings)]  # 64x64: ndf, 2ndf, 4ndf, 8ndf
        layers = [nn.Conv2d(nc, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        for cin, cout in zip(widths, widths[1:]):
            layers += self._extra(cin, extra_layers)
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False)]
            layers += [nn.BatchNorm2d(cout)] if batchnorm else []
            layers += [nn.LeakyReLU(0.2, inplace=True)]
        layers += self._extra(widths[-1], extra_layers)
        layers += [nn.Conv2d(widths[-1], out_dim, start, 1, 0)]  # (B, out_dim, 1, 1)
        self.main = nn.Sequential(*layers)

    @staticmethod
    def _extra(channels, n):
        """n same-size blocks (3x3 stride-1 Conv2d, LeakyReLU) after a strided one."""
        return [m for _ in range(n)
                for m in (nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True))]

    def forward(self, x):
        return self.main(x).flatten(1)


class MLPGenerator(nn.Module):
    """z (B, d) -> image (B, C, H, W) in [-1, 1]; the basic GAN generator (fully connected, LeakyReLU)."""

    def __init__(self, latent_dim, image_shape, width=256):
        super().__init__()
        self.latent_dim, self.image_shape = latent_dim, tuple(image_shape)
        n_pixels = image_shape[0] * image_shape[1] * image_shape[2]
        self.main = nn.Sequential(
            nn.Linear(latent_dim, width), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(width, 2 * width), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(2 * width, 4 * width), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(4 * width, n_pixels), nn.Tanh())

    def forward(self, z):
        return self.main(z.reshape(z.shape[0], self.latent_dim)).view(z.shape[0], *self.image_shape)


class MLPDiscriminator(nn.Module):
    """image (B, C, H, W) -> logits (B, 1)."""

    def __init__(self, image_shape, width=256):
        super().__init__()
        n_pixels = image_shape[0] * image_shape[1] * image_shape[2]
        self.main = nn.Sequential(
            nn.Linear(n_pixels, 2 * width), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(2 * width, width), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(width, 1))

    def forward(self, x):
        return self.main(x.flatten(1))


class GAN(nn.Module):
    """Generator + discriminator (`gan`: MLPs, `dcgan`: convolutional). E-GBAS explores the generator."""
    explorable = "generator"

    def __init__(self, generator, discriminator):
        super().__init__()
        self.generator, self.discriminator = generator, discriminator


def _mlp(d_in, hidden, d_out):
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(True), nn.Linear(hidden, hidden), nn.ReLU(True),
                         nn.Linear(hidden, d_out))


def reparameterise(mu, logvar):
    """A draw z = mu + sigma * eps of N(mu, diag(exp(logvar))), differentiable in mu and logvar."""
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


def kl_to_standard_normal(mu, logvar):
    """KL(N(mu, diag(exp(logvar))) || N(0, I)), summed over the batch."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


_LATENT_HIDDEN = 256  # width of the second-stage MLPs (the codes have only d = 6 dimensions)


class VAEGenerator(nn.Module):
    """The VAE's generator: u (B, d) ~ N(0, I) -> latent_map -> z (B, d) -> decoder -> image (B, C, H, W).
    latent_map is the decoder of the second stage of a two-stage VAE (Dai & Wipf, "Diagnosing and enhancing VAE
    models", ICLR 2019): an MLP VAE fitted to the first stage's codes, so that latent_map(u) is distributed like
    the codes the encoder gives real images, q(z) = E_x q(z|x), rather than like N(0, I). Decoding z ~ N(0, I)
    directly lands between the encoder's class clusters: on mnist5k 63% of such decodings were confidently
    recognised digits against 87% of decodings of z ~ q(z); through latent_map, 79%."""

    def __init__(self, latent_dim, decoder):
        super().__init__()
        self.latent_dim = latent_dim
        self.latent_map = _mlp(latent_dim, _LATENT_HIDDEN, latent_dim)
        self.decoder = decoder

    def forward(self, u):
        return self.decoder(self.latent_map(u.reshape(u.shape[0], self.latent_dim)))


class VAE(nn.Module):
    """Encoder -> (mu, log sigma^2) -> reparameterised z -> decoder (the first stage, trained on the negative ELBO),
    plus a second-stage VAE on the codes z (latent_encoder, generator.latent_map, latent_log_gamma; `latent_loss`).
    E-GBAS explores `generator` = decoder(latent_map(u)), u ~ N(0, I)."""
    explorable = "generator"

    def __init__(self, latent_dim, image_shape, width=32, extra_layers=0):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = ConvEncoder(image_shape, 2 * latent_dim, width, extra_layers=extra_layers)
        self.generator = VAEGenerator(latent_dim, DCGANGenerator(latent_dim, image_shape, 2 * width, extra_layers))
        self.latent_encoder = _mlp(latent_dim, _LATENT_HIDDEN, 2 * latent_dim)
        self.latent_log_gamma = nn.Parameter(torch.zeros(()))  # log of the second stage's learned noise scale

    @property
    def decoder(self):
        """The first-stage decoder z (B, d) -> image (B, C, H, W)."""
        return self.generator.decoder

    def first_stage_parameters(self):
        return [*self.encoder.parameters(), *self.decoder.parameters()]

    def second_stage_parameters(self):
        return [*self.latent_encoder.parameters(), *self.generator.latent_map.parameters(), self.latent_log_gamma]

    def forward(self, x):
        """x (B, C, H, W) in [-1, 1] -> (pre-Tanh decoder output (B, C, H, W), mu (B, d), logvar (B, d))."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = reparameterise(mu, logvar)
        return self.decoder.main[:-1](z.view(*z.shape, 1, 1)), mu, logvar

    def loss(self, x):
        """Negative ELBO per image: Bernoulli reconstruction of the [0, 1] intensities + KL(q(z|x) || N(0, I)).
        The decoder ends in Tanh; (tanh(a) + 1) / 2 == sigmoid(2a), so its pre-Tanh value a gives the logits."""
        pre_tanh, mu, logvar = self(x)
        recon = F.binary_cross_entropy_with_logits(2 * pre_tanh, (x + 1) / 2, reduction="sum")
        return (recon + kl_to_standard_normal(mu, logvar)) / x.shape[0]

    def latent_loss(self, z):
        """Second stage: negative ELBO per code z (B, d), Gaussian likelihood N(latent_map(u), gamma^2 I) with a
        learned gamma (up to the constant d/2 log 2 pi) + KL(q(u|z) || N(0, I))."""
        mu, logvar = self.latent_encoder(z).chunk(2, dim=1)
        residual = (z - self.generator.latent_map(reparameterise(mu, logvar))) / self.latent_log_gamma.exp()
        recon = (0.5 * residual ** 2 + self.latent_log_gamma).sum()
        return (recon + kl_to_standard_normal(mu, logvar)) / z.shape[0]


class AutoEncoder(nn.Module):
    """Deterministic conv autoencoder; E-GBAS explores its decoder (code (B, d) -> image)."""
    explorable = "decoder"

    def __init__(self, latent_dim, image_shape, width=32):
        super().__init__()
        self.encoder = ConvEncoder(image_shape, latent_dim, width)
        self.decoder = DCGANGenerator(latent_dim, image_shape, 2 * width)

    def forward(self, x):
        return self.decoder(self.encoder(x))


class Classifier(nn.Module):
    """Small CNN, image (B, C, H, W) in [-1, 1] -> class logits (B, n_classes). E-GBAS explores it with the image
    itself as the 'latent' (query shape (C, H, W))."""
    explorable = "classifier"

    def __init__(self, image_shape, n_classes=10, width=32):
        super().__init__()
        self.classifier = ConvEncoder(image_shape, n_classes, width)

    def forward(self, x):
        return self.classifier(x)


def build(model, image_shape, latent_dim=None, width=None, n_classes=10, discriminator_batchnorm=None,
          extra_layers=None):
    """The untrained bundle for `model` in KINDS, for images of `image_shape` (C, H, W). Each bundle and each of its
    parts gets `egbas_config`; `from_config(bundle.egbas_config)` rebuilds the same architecture.
    extra_layers (dcgan, vae): same-size 3x3 blocks after each strided one, in both networks (None = default)."""
    if model not in KINDS:
        raise KeyError(f"unknown model {model!r}; choose one of {', '.join(KINDS)}")
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 3 or min(image_shape) <= 0:
        raise ValueError(f"image_shape must be (C, H, W) with positive sizes, got {image_shape}")
    latent_dim = _DEFAULT_LATENT[model] if latent_dim is None or model == "classifier" else int(latent_dim)
    width = _DEFAULT_WIDTH[model] if width is None else int(width)
    extra_layers = _DEFAULT_EXTRA_LAYERS.get(model, 0) if extra_layers is None else int(extra_layers)
    if width <= 0 or (latent_dim is not None and latent_dim <= 0):
        raise ValueError(f"latent_dim and width must be positive, got latent_dim={latent_dim}, width={width}")
    if extra_layers < 0 or (extra_layers and model not in _DEFAULT_EXTRA_LAYERS):
        raise ValueError(f"extra_layers must be >= 0 and only applies to {', '.join(_DEFAULT_EXTRA_LAYERS)}, "
                         f"got {extra_layers} for {model}")

    if model == "gan":
        bundle = GAN(MLPGenerator(latent_dim, image_shape, width), MLPDiscriminator(image_shape, width))
    elif model == "dcgan":
        if discriminator_batchnorm is None:
            discriminator_batchnorm = _DISCRIMINATOR_BATCHNORM
        bundle = GAN(DCGANGenerator(latent_dim, image_shape, width, extra_layers),
                     ConvEncoder(image_shape, 1, width, bool(discriminator_batchnorm), extra_layers))
    elif model == "vae":
        bundle = VAE(latent_dim, image_shape, width, extra_layers)
    elif model == "ae":
        bundle = AutoEncoder(latent_dim, image_shape, width)
    else:
        bundle = Classifier(image_shape, n_classes, width)

    config = {"model": model, "image_shape": list(image_shape), "latent_dim": latent_dim, "width": width,
              "n_classes": n_classes,
              # what the explorable part takes and gives, per sample
              "input_shape": [latent_dim] if latent_dim is not None else list(image_shape),
              "output_shape": list(image_shape) if latent_dim is not None else [n_classes]}
    if model == "dcgan":
        config["discriminator_batchnorm"] = bool(discriminator_batchnorm)
    if model in _DEFAULT_EXTRA_LAYERS:
        config["extra_layers"] = extra_layers
    for module in (bundle, *bundle.children()):
        module.egbas_config = config
    return bundle


def from_config(config):
    """The untrained bundle described by an `egbas_config` dict (as saved in a checkpoint's config.json)."""
    if config["model"] == "rednet":
        from .rednet import build_restorer
        return build_restorer(config["channels"], config["depth"], config["width"], config["scale"])
    return build(config["model"], config["image_shape"], config.get("latent_dim"), config.get("width"),
                 config.get("n_classes", 10), config.get("discriminator_batchnorm", True),
                 config.get("extra_layers", 0) if config["model"] in _DEFAULT_EXTRA_LAYERS else None)


def init_weights(module):
    """DCGAN initialisation (Radford et al.): conv weights ~ N(0, 0.02), BatchNorm scale ~ N(1, 0.02), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
