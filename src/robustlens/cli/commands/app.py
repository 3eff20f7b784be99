"""`robustlens app`: the interactive web app (Gradio, offline, bound to 127.0.0.1 by default)."""

from __future__ import annotations

import argparse
import importlib.util
import sys

from robustlens.cli.common import device_of
from robustlens.errors import UserError
from robustlens.models import DEFAULT_MODEL, DEFAULT_ROBUST_MODEL


def add_parser(sub: argparse._SubParsersAction) -> None:
    from robustlens.app.server import DEFAULT_HOST, DEFAULT_PORT

    p = sub.add_parser("app", help="interactive web app: attack, invert and dream in the browser (offline)",
                       description="Serve the interactive app on http://HOST:PORT (needs the `app` extra: "
                                   "pip install 'robustlens[app]'). No analytics, no CDN; localhost only unless "
                                   "--host says otherwise.")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"the standard model (default {DEFAULT_MODEL})")
    p.add_argument("--weights", default=None, help="weights of --model (default: its own)")
    p.add_argument("--robust-model", default=DEFAULT_ROBUST_MODEL,
                   help=f"the robust model (default {DEFAULT_ROBUST_MODEL})")
    p.add_argument("--robust-weights", default=None, help="weights of --robust-model (default: its own)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default: cuda when available)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise UserError("the app needs Gradio: pip install 'robustlens[app]'")
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    from robustlens.app.server import ModelBank, launch

    bank = ModelBank(standard=(args.model, args.weights), robust=(args.robust_model, args.robust_weights),
                     device=device_of(args))
    bank.get("standard")  # a bad model name fails here, before the server starts
    sys.stderr.write(f"robustlens app on http://{args.host}:{args.port} (Ctrl-C stops it)\n")
    sys.stderr.flush()
    launch(args.host, args.port, bank)
    return 0
