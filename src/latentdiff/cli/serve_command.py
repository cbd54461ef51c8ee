"""`latentdiff serve`: the web UI over one or more trained runs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

EXAMPLE = "latentdiff serve runs/demo runs/mine --port 7860"


def register(sub: argparse._SubParsersAction, formatter) -> None:
    help = "web UI: generate, img2img, inpaint (mask painted in the browser), interpolate; PNGs keep settings"
    p = sub.add_parser(
        "serve", help=help, description=f"{help}\n\nexample:\n  {EXAMPLE}", formatter_class=formatter
    )
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folders (a selector when several)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--out", type=Path, default=Path("ui_outputs"), help="folder for every image made")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest upload accepted")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> str:
    from latentdiff.ui.server import ServeConfig, start_server

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be 1 to 65535, got {args.port}")
    if not args.max_upload_mb > 0:
        raise ValueError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    server = start_server(
        ServeConfig(
            runs=list(args.runs),
            out=args.out,
            host=args.host,
            port=args.port,
            device=args.device,
            max_upload_mb=args.max_upload_mb,
        )
    )
    print(f"latentdiff web UI on {server.url} (images saved to {args.out}/); Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return "stopped"
