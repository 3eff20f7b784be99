"""Fuzz what robustlens reads: mutated PNG/JPEG/WebP/TIFF/GIF/BMP bytes, ``--data`` specs, ``list:`` files
and NIPS-17 ``images.csv`` tables. The only error allowed to escape is the project's own UserError.

    PYTHONPATH=src python scripts/fuzz_inputs.py --cases 10000 [--seed 0] [--json]

Hypothesis drives the mutations (byte flips, inserts, deletions, truncations, header overwrites, chunk splices
for images; edits of real spec strings and table lines for the data files). Every case that raises anything
but a UserError is recorded (type, message, a reproducer) and counted; the run continues. Exit code 1 when
any escaped. ``tests/test_hardening_fuzz.py`` runs the same targets with a few hundred cases in CI.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustlens.errors import UserError

FUZZ_MAX_PIXELS = 1_000_000  # a mutated header may ask for a large picture: keep each decode cheap
FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "GIF", "BMP")


def seed_images(photo: Path | None = None) -> dict[str, bytes]:
    """Real, small pictures in every format we read (from ``photo`` when given, else scikit-image's chelsea)."""
    from PIL import Image

    if photo is not None:
        img = Image.open(photo).convert("RGB")
    else:
        from robustlens.images import example_image

        img = example_image("chelsea")
    img = img.resize((48, 32))
    out = {}
    for fmt in FORMATS:
        buf = io.BytesIO()
        img.convert("P" if fmt == "GIF" else "RGB").save(buf, fmt)
        out[fmt] = buf.getvalue()
    buf = io.BytesIO()
    img.convert("RGBA").save(buf, "PNG")  # another colour type
    out["PNG-RGBA"] = buf.getvalue()
    return out


# one mutation: (kind, position in [0,1), a byte string)
MUTATION = st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "header", "splice"]),
                     st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=16))


def mutate(data: bytes, mutations: list[tuple[str, float, bytes]]) -> bytes:
    """Apply ``mutations`` to ``data`` (positions are fractions of the current length)."""
    b = bytearray(data)
    for kind, where, blob in mutations:
        i = int(where * len(b)) if b else 0
        if kind == "flip" and b:
            b[i] ^= blob[0] or 1
        elif kind == "set" and b:
            b[i:i + len(blob)] = blob
        elif kind == "insert":
            b[i:i] = blob
        elif kind == "delete":
            del b[i:i + len(blob)]
        elif kind == "truncate":
            del b[i:]
        elif kind == "header" and b:  # the first 64 bytes hold sizes, lengths and offsets
            j = int(where * min(64, len(b)))
            b[j:j + len(blob)] = blob
        elif kind == "splice" and len(b) > 8:  # repeat a stretch of the file elsewhere
            k = (i + 7 * len(blob)) % len(b)
            b[i:i] = b[k:k + 4 * len(blob)]
    return bytes(b)


class Tally:
    """Cases run and errors that escaped (anything but UserError), by type."""

    def __init__(self, raise_escapes: bool):
        self.raise_escapes = raise_escapes
        self.cases: dict[str, int] = {}
        self.escaped: list[dict] = []

    def run(self, target: str, fn, *args) -> None:
        self.cases[target] = self.cases.get(target, 0) + 1
        try:
            fn(*args)
        except UserError as e:
            if "\n" in str(e):
                self._escape(target, AssertionError(f"UserError on several lines: {e!r}"), args)
        except Exception as e:  # the point of the fuzzing: record what escaped
            self._escape(target, e, args)

    def _escape(self, target: str, e: BaseException, args) -> None:
        if self.raise_escapes:
            raise AssertionError(f"{target}: {type(e).__name__} escaped: {e}") from e
        tb = traceback.extract_tb(e.__traceback__)
        self.escaped.append({"target": target, "type": type(e).__name__, "message": str(e)[:300],
                             "where": f"{tb[-1].filename}:{tb[-1].lineno}" if tb else "",
                             "input": repr(args[0])[:300]})


def check_image(data: bytes, suffix: str, folder: Path) -> None:
    """Decode ``data`` as a file: an RGB image within the pixel limit, or a UserError."""
    from robustlens.images import load_pil, max_pixels

    p = folder / f"fuzz.{suffix}"
    p.write_bytes(data)
    img = load_pil(p)
    assert img.mode == "RGB" and img.size[0] * img.size[1] <= max_pixels(), (img.mode, img.size)


def check_spec(text: str) -> None:
    from robustlens.robust.datasets import parse_data_spec

    parse_data_spec(text)


def check_table(text: str, kind: str, folder: Path, model) -> None:
    """Write ``text`` as a ``list:`` file or a NIPS-17 ``images.csv`` and open it; read its first image."""
    from robustlens.robust.datasets import open_dataset

    path = folder / ("list.txt" if kind == "list" else "images.csv")
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    ds = open_dataset(f"{kind}:{path if kind == 'list' else folder}", model, limit=2)
    if len(ds):
        ds[0]


def make_workspace(images: dict[str, bytes]) -> tuple[Path, dict[str, str]]:
    """A folder with a few real images, a list file and a NIPS-17 layout that name them (the texts to mutate)."""
    root = Path(tempfile.mkdtemp(prefix="robustlens-fuzz-"))
    (root / "images").mkdir()
    names = []
    for i, fmt in enumerate(("PNG", "JPEG", "WEBP")):
        name = f"img{i}.{fmt.lower()}"
        (root / name).write_bytes(images[fmt])
        (root / "images" / f"id{i}.{'jpg' if fmt == 'JPEG' else 'png'}").write_bytes(images["PNG"])
        names.append(name)
    wnids = ["n01440764", "n02102040", "n02979186"]
    texts = {"list": "".join(f"{n}, {w}\n" for n, w in zip(names, wnids)) + "# a comment\nimg0.png 0\n",
             "nips17": "ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass\n"
                       + "".join(f"id{i},u,0,0,1,1,{[1, 218, 483][i]},5\n" for i in range(3))}
    return root, texts


TEXT_EDIT = st.tuples(st.sampled_from(["insert", "delete", "replace"]), st.floats(0, 1, exclude_max=True),
                      st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
                      | st.sampled_from([",", "\n", "\0", "..", "/", "~", "-1", "999999", "n0", "nan", "#", ":",
                                         "\ufeff", "\r\n", " ", "\\", "\udcff"]))


def edit_text(text: str, edits: list[tuple[str, float, str]]) -> str:
    for kind, where, piece in edits:
        i = int(where * len(text)) if text else 0
        if kind == "insert":
            text = text[:i] + piece + text[i:]
        elif kind == "delete":
            text = text[:i] + text[i + max(1, len(piece)):]
        else:
            text = text[:i] + piece + text[i + len(piece):]
    return text


def build_targets(tally: Tally, images: dict[str, bytes], root: Path, texts: dict[str, str], model):
    """The Hypothesis-driven fuzz targets (each a callable that runs ``max_examples`` cases when called)."""
    suffixes = {"PNG": "png", "PNG-RGBA": "png", "JPEG": "jpg", "WEBP": "webp", "TIFF": "tiff", "GIF": "gif",
                "BMP": "bmp"}

    @given(fmt=st.sampled_from(sorted(images)), muts=st.lists(MUTATION, min_size=1, max_size=6),
           wrong_suffix=st.booleans())
    def images_target(fmt, muts, wrong_suffix):
        data = mutate(images[fmt], muts)
        tally.run("image", check_image, data, "png" if wrong_suffix else suffixes[fmt], root)

    @given(kind=st.sampled_from(["folder", "nips17", "list", "mnist", "csv", "", "LIST"]),
           path=st.sampled_from([str(root), str(root / "list.txt"), str(root / "images"), "~", "", "/proc/self",
                                 "/dev/null", "."]),
           edits=st.lists(TEXT_EDIT, max_size=3))
    def spec_target(kind, path, edits):
        tally.run("spec", check_spec, edit_text(f"{kind}:{path}", edits))

    @given(kind=st.sampled_from(["list", "nips17"]), edits=st.lists(TEXT_EDIT, min_size=1, max_size=5))
    def table_target(kind, edits):
        tally.run(f"{kind} file", check_table, edit_text(texts[kind], edits), kind, root, model)

    return {"image": images_target, "spec": spec_target, "table": table_target}


def run(cases: int, seed: int, photo: Path | None = None, raise_escapes: bool = False) -> dict:
    """Run about ``cases`` cases (images 70%, specs 10%, tables 20%) and return the tally as a dict."""
    from hypothesis import seed as hyp_seed

    from robustlens.images import set_max_pixels
    from robustlens.models import create_model

    set_max_pixels(FUZZ_MAX_PIXELS)
    images = seed_images(photo)
    root, texts = make_workspace(images)
    model = create_model("imagenette_resnet", "none")
    tally = Tally(raise_escapes)
    targets = build_targets(tally, images, root, texts, model)
    share = {"image": 0.7, "spec": 0.1, "table": 0.2}
    t0 = time.perf_counter()
    try:
        for name, fn in targets.items():
            n = max(1, int(cases * share[name]))
            wrapped = settings(max_examples=n, deadline=None, database=None, derandomize=False,
                               suppress_health_check=list(HealthCheck))(fn)
            hyp_seed(seed)(wrapped)()
    finally:
        set_max_pixels(None)
    return {"cases": sum(tally.cases.values()), "by_target": tally.cases, "escaped": len(tally.escaped),
            "escaped_kinds": sorted({f"{e['target']}: {e['type']} at {e['where']}" for e in tally.escaped}),
            "examples": tally.escaped[:10], "seconds": round(time.perf_counter() - t0, 1), "seed": seed}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=10_000, help="about this many cases in all (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--photo", type=Path, default=None, help="seed picture (default: scikit-image's chelsea)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = run(args.cases, args.seed, args.photo)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['cases']} cases ({', '.join(f'{k} {v}' for k, v in result['by_target'].items())}) in "
              f"{result['seconds']} s: {result['escaped']} escaped")
        for kind in result["escaped_kinds"]:
            print("  ", kind)
    return 1 if result["escaped"] else 0


if __name__ == "__main__":
    sys.exit(main())
