"""CLI commands: one module per command (``add_parser(subparsers)`` and ``run(args) -> int``)."""
