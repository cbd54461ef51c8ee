"""The `latentdiff` command: parses arguments and calls the library; it alone decides what is printed."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from latentdiff import __version__
from latentdiff.cli import data, demo_command, evaluate, generate, serve_command, train
from latentdiff.cli.options import setup_logging

log = logging.getLogger("latentdiff")


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentdiff",
        description="Train and run latent diffusion models on your own images: Stage 1 autoencoder, Stage 2 "
        "diffusion on its latents, generation by reverse diffusion + decoding.\n\n"
        "quick start:\n  latentdiff demo                      # everything on Fashion-MNIST\n"
        "  latentdiff sample runs/demo --class sneaker --guidance 2 --out out/",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"latentdiff {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and results only")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train.register(sub, _Formatter)
    generate.register(sub, _Formatter)
    data.register(sub, _Formatter)
    evaluate.register(sub, _Formatter)
    demo_command.register(sub, _Formatter)
    serve_command.register(sub, _Formatter)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose)
    try:
        message = args.func(args)
    except KeyboardInterrupt as e:
        print(f"latentdiff: interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130
    except Exception as e:  # one line for the user; --debug for the traceback
        if args.debug:
            raise
        text = str(e).strip().splitlines()
        reason = " ".join(line.strip() for line in text) if text else type(e).__name__
        if not isinstance(e, ValueError | OSError | RuntimeError | KeyError):
            reason += f" ({type(e).__name__}; run with --debug for the traceback)"
        print(f"latentdiff {args.command}: error: {reason}", file=sys.stderr)
        return 1
    if message and os.environ.get("RANK", "0") == "0":  # under torchrun, one rank speaks for all
        print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
