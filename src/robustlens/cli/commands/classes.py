"""`robustlens classes [QUERY]`: look up ImageNet classes by index, wnid or (partial) name."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from robustlens.cli.common import emit
from robustlens.errors import UserError
from robustlens.models.labels import ImageNetClass, imagenet_classes, resolve_class


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classes", help="look up ImageNet classes",
                       description="Without QUERY: list all 1000 classes. With QUERY (index, wnid or name, "
                                   "case-insensitive, partial): the class it names, or the choices when ambiguous.")
    p.add_argument("query", nargs="?", help="e.g. 282, n02123159, 'tiger cat', tarantula")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    classes = imagenet_classes()
    rows: Sequence[ImageNetClass]
    if args.query is None:
        rows = classes
    else:
        try:
            rows = [classes[resolve_class(args.query)]]
        except UserError as e:
            if "ambiguous" not in str(e) or args.json is False:
                raise
            q = args.query.strip().lower()
            rows = [c for c in classes if any(q in n.lower() for n in c.names)]
    result = {"classes": [{"index": c.index, "wnid": c.wnid, "name": c.name, "synonyms": list(c.names)} for c in rows]}
    emit(result, args, "\n".join(f"{c.index:>4}  {c.wnid}  {', '.join(c.names)}" for c in rows))
    return 0
