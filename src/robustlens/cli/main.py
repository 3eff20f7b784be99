"""The `robustlens` command line: a thin layer over the Python API.

Errors the user can fix print one line on stderr (``robustlens: error: ...``) and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from robustlens._version import version
from robustlens.errors import UserError

COMMANDS = ["models", "classes", "layers", "classify", "demo", "report", "app", "train", "evaluate", "compare",
            "attack", "invert", "dream", "visualize", "explain", "synthesize"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse would print the usage block too)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="robustlens", description="See what an image classifier sees and how it is fooled.")
    parser.add_argument("--version", action="version", version=f"robustlens {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"robustlens.cli.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except UserError as e:
        sys.stderr.write(f"robustlens: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("robustlens: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
