"""The ``robustlens`` command line (one module per command under :mod:`robustlens.cli.commands`)."""

from robustlens.cli.main import main

__all__ = ["main"]
