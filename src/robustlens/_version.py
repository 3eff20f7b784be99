"""The installed robustlens version: one definition for ``robustlens --version`` and the report."""

from __future__ import annotations


def version() -> str:
    """The version of the installed ``robustlens`` distribution, or ``"unknown"`` when it is not installed
    (e.g. run from a source tree with ``PYTHONPATH=src``)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("robustlens")
    except PackageNotFoundError:
        return "unknown"
