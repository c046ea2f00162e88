"""The `egbas` command line: demo, train, explore, sweep, sr, sr-eval.

Every user error ends as ONE line on stderr (`egbas: error: ...`) and exit status 2, never a traceback.
"""
import argparse
import sys


def _positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def _positive_float(text):
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _fraction(text):
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (argparse prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    from . import __version__
    parser = _Parser(prog="egbas", description="Explore the generative regions of deep generative "
                                     "networks (E-GBAS, Jeon, Jeong, Choi, AAAI 2020).")
    parser.add_argument("--version", action="version", version=f"egbas-fast {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser("demo", help="explore an embedded default generator and write the report")
    demo.add_argument("--out", default="egbas-demo", help="report directory (default: egbas-demo)")
    demo.add_argument("--model", choices=("faces", "mnist"), default="mnist",
                      help="mnist (default): the small DCGAN shipped with the package (trained on mnist5k); "
                           "faces: the pretrained 64x64 face DCGAN")

    train = commands.add_parser("train", help="train a model; writes a checkpoint every epoch")
    train.add_argument("--model", required=True, help="gan, dcgan, vae, ae, classifier or rednet")
    train.add_argument("--data", default="mnist5k",
                       help="mnist5k, mnist, fashion, digits, folder:PATH or npz:PATH (default: mnist5k); "
                            "photos for rednet")
    train.add_argument("--epochs", type=_positive_int, default=5, help="total epochs (default: 5)")
    train.add_argument("--out", default=None, help="checkpoint directory (default: runs/MODEL-DATA)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    train.add_argument("--batch-size", type=_positive_int, default=None, help="default: per model kind")
    train.add_argument("--lr", type=_positive_float, default=None, help="Adam learning rate")
    train.add_argument("--latent-dim", type=_positive_int, default=None)
    train.add_argument("--width", type=_positive_int, default=None, help="feature width (ngf/ndf, MLP hidden)")
    train.add_argument("--extra-layers", type=_non_negative_int, default=None,
                       help="dcgan/vae: same-size 3x3 blocks after each strided one (default: dcgan 2, vae 1; "
                            "0 = the plain pytorch/examples layout)")
    train.add_argument("--image-size", type=_positive_int, default=None, help="resize images to SIZE x SIZE")
    train.add_argument("--limit", type=_positive_int, default=None, help="use a fixed random subset of N images")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.add_argument("--scale", type=int, choices=(2, 3, 4), default=None, help="rednet: upscaling factor")
    train.add_argument("--depth", type=_positive_int, default=None, help="rednet: conv layers per side (5)")

    explore = commands.add_parser("explore", help="explore the generative region of a query in a checkpoint")
    explore.add_argument("--checkpoint", required=True, help="checkpoint directory (from egbas train)")
    explore.add_argument("--layer", required=True, help="dotted module name, e.g. main.5")
    explore.add_argument("--keep", type=_fraction, default=0.05, help="share of units kept (default: 0.05)")
    explore.add_argument("--n", type=_positive_int, default=500, help="tree nodes (default: 500)")
    query = explore.add_mutually_exclusive_group()
    query.add_argument("--query-seed", type=_non_negative_int, default=None,
                       help="query = draw number S of the latent prior (default: 0)")
    query.add_argument("--image", metavar="FILE", help="query = this image: inverted (gan, dcgan), encoded "
                                                       "(vae, ae) or itself (classifier)")
    query.add_argument("--data", metavar="NAME", help="query = image --index I of a data set (mnist5k, mnist, "
                                                      "fashion, digits, folder:PATH, npz:PATH)")
    explore.add_argument("--index", type=_non_negative_int, default=None, help="image number, with --data")
    explore.add_argument("--seed", type=int, default=0, help="seed of inversion, selection and exploration")
    explore.add_argument("--out", required=True, help="report directory")
    explore.add_argument("--quiet", action="store_true", help="no progress bars")

    layers = commands.add_parser("layers", help="list the explorable layers of a checkpoint with their unit counts")
    layers.add_argument("--checkpoint", required=True, help="checkpoint directory (from egbas train)")

    sweep = commands.add_parser("sweep", help="explore layers x keeps x queries in parallel into a Parquet table",
                                description="One exploration per (layer, keep, query), one row each in "
                                            "OUT/part-*.parquet; a rerun skips finished rows. --summary OUT writes "
                                            "OUT/summary.html from the table instead.")
    model = sweep.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", help="checkpoint directory (from egbas train)")
    model.add_argument("--model", choices=("faces",), help="faces: the pretrained 64x64 face DCGAN")
    sweep.add_argument("--layers", type=_names, help="comma-separated layer names, e.g. main.2,main.5")
    sweep.add_argument("--keeps", type=_fractions, default=[0.05], help="comma-separated shares of units kept "
                                                                          "(default: 0.05)")
    sweep.add_argument("--queries", help="query seeds (prior draws), e.g. 0-63 or 0,3,8-11")
    sweep.add_argument("--images", metavar="DIR", help="real images as queries: every image file in DIR, inverted "
                                                       "through the generator (a classifier explores the image)")
    sweep.add_argument("--n", type=_positive_int, default=500, help="tree nodes per row (default: 500)")
    sweep.add_argument("--seed", type=_non_negative_int, default=0, help="seed of selection and exploration")
    sweep.add_argument("--out", help="table directory")
    sweep.add_argument("--workers", type=_positive_int, default=None, help="embedded worker processes "
                                                                           "(default: one per CPU core)")
    sweep.add_argument("--address", default=None, help="Ray cluster address (default: $RAY_ADDRESS; unset: "
                                                       "embedded process pool); needs egbas-fast[ray]")
    sweep.add_argument("--reports", action="store_true", help="also write each row's report under OUT/reports/")
    sweep.add_argument("--coverage", action="store_true", help="also fill reach and diversity (the tree against "
                       "samples of the restricted prior; one sampler run per row)")
    sweep.add_argument("--summary", metavar="OUT", help="write OUT/summary.html (plots of the table) and exit")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")

    sr = commands.add_parser("sr", help="super-resolve an image with a rednet checkpoint (RED-Net)")
    sr.add_argument("--checkpoint", required=True,
                    help="rednet checkpoint directory, or zoo:2 / zoo:3 / zoo:4 (the shipped models)")
    sr.add_argument("--image", required=True, help="low-resolution input image (greyscale, RGB or RGBA)")
    sr.add_argument("--out", required=True, help="output image (.png, .tif, .bmp or .webp)")
    sr.add_argument("--tile", type=_positive_int, default=256, help="tile side for large images (default: 256)")

    sr_eval = commands.add_parser("sr-eval", help="PSNR / SSIM of rednet checkpoints against bicubic upscaling")
    sr_eval.add_argument("--checkpoint", required=True, nargs="+", help="rednet checkpoint directories or zoo:N")
    sr_eval.add_argument("--splits", default="held-out,sporco,skimage",
                         help="photo sets: held-out, sporco, skimage, train (default: held-out,sporco,skimage)")
    sr_eval.add_argument("--out", default=None, help="also write sr_eval.json and sr_eval.txt here")
    return parser


def _names(text):
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"must be comma-separated names without empty items, got {text!r}")
    return names


def _fractions(text):
    try:
        return [_fraction(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated fractions in (0, 1], got {text!r}") from None


def _run_sweep(args):
    from . import sweeps as sweep

    if args.summary:
        print(f"summary: {sweep.write_summary(args.summary)}")
        return
    needed = (("--checkpoint or --model", args.checkpoint or args.model), ("--layers", args.layers),
              ("--queries or --images", args.queries or args.images), ("--out", args.out))
    missing = [flag for flag, value in needed if not value]
    if missing:
        raise ValueError(f"egbas sweep needs {', '.join(missing)} (or --summary OUT)")
    table = sweep.sweep(args.checkpoint or args.model, args.layers, args.keeps, args.queries, n=args.n,
                        out=args.out, images=args.images, seed=args.seed, workers=args.workers,
                        address=args.address, reports=args.reports, coverage=args.coverage,
                        progress=not args.quiet)
    failed = sum(status != "ok" for status in table.column("status").to_pylist())
    print(f"table: {args.out} ({table.num_rows} rows, {failed} failed); plots: egbas sweep --summary {args.out}")


def _run(args):
    if args.command == "train":
        from .train import train
        out = train(model=args.model, data=args.data, epochs=args.epochs, out=args.out, seed=args.seed,
                    resume=args.resume, progress=not args.quiet, lr=args.lr, latent_dim=args.latent_dim,
                    width=args.width, image_size=args.image_size, limit=args.limit, batch_size=args.batch_size,
                    extra_layers=args.extra_layers,
                    **{k: v for k, v in (("scale", args.scale), ("depth", args.depth)) if v is not None})
        print(f"checkpoint: {out}")
    elif args.command == "sweep":
        _run_sweep(args)
    elif args.command == "demo":
        from .demo import run_demo
        run_demo(args.out, args.model)
    elif args.command == "layers":
        from .demo import run_layers
        print(run_layers(args.checkpoint))
    elif args.command == "sr":
        from .sr import run_sr
        print(f"wrote {run_sr(args.checkpoint, args.image, args.out, args.tile)}")
    elif args.command == "sr-eval":
        from .sr import run_evaluation
        run_evaluation(args.checkpoint, tuple(s.strip() for s in args.splits.split(",") if s.strip()), args.out)
    else:
        from .demo import run_explore
        run_explore(args.checkpoint, args.layer, args.keep, args.n, args.query_seed, args.seed, args.out,
                    image=args.image, data=args.data, index=args.index, progress=not args.quiet)
    return 0


def main(argv=None):
    """Entry point of `egbas`; returns the exit status (0 ok, 2 user error, 130 interrupted)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse already printed its one-line error (or --help)
        return e.code
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("egbas: interrupted (files written so far are complete)", file=sys.stderr)
        return 130
    except (ValueError, OSError, KeyError, ImportError) as e:  # CheckpointError is a ValueError
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)  # KeyError's str() adds quotes
        print(f"egbas: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
