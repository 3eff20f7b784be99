"""The `robustlens` command line: a thin layer over the Python API.

Errors the user can fix print one line on stderr (``robustlens: error: ...``) and exit with code 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from pathlib import Path

from robustlens._version import version
from robustlens.errors import UserError

# a full disk, a quota, a read-only or forbidden place: the machine's state, said in one line like a user error
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}

COMMANDS = ["models", "classes", "layers", "classify", "demo", "report", "app", "train", "evaluate", "compare",
            "attack", "invert", "dream", "visualize", "explain", "synthesize", "audit"]


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
    from robustlens.cli.common import final_path, finish_outputs
    from robustlens.images import set_max_pixels

    try:
        set_max_pixels(getattr(args, "max_pixels", None))
        code = int(args.run(args) or 0)
        finish_outputs(True)  # the staged --out folder moves into place only now
        return code
    except UserError as e:
        sys.stderr.write(f"robustlens: error: {_one_line(e)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("robustlens: interrupted\n")
        return 130
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS:
            raise
        where = final_path(Path(e.filename)) if e.filename else "the output"  # not the staging folder's name
        sys.stderr.write(f"robustlens: error: cannot write {where}: {e.strerror}\n")
        return 2
    finally:
        finish_outputs(False)  # whatever was not published (failure, interrupt) is removed
        set_max_pixels(None)


def _one_line(e: BaseException) -> str:
    """The message of ``e`` on one line."""
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    raise SystemExit(main())
