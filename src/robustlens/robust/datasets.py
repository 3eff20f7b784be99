"""Labelled image datasets for evaluation and training, in the label space of a model.

``--data`` specs (:func:`parse_data_spec`):

- ``folder:PATH``: one sub-folder per class, named by wnid (``n01440764``) or by class index (``0``..``9``);
- ``nips17:PATH``: the NIPS-17 competition layout, ``images.csv`` (``ImageId``, 1-based ``TrueLabel``) and
  ``images/<ImageId>.jpg`` (or ``.png``);
- ``list:FILE``: lines ``path, label`` (paths relative to FILE's folder; label an index or a wnid; ``#``
  comments);
- ``mnist:PATH``: MNIST IDX files (gzip or not): a folder (the test files ``t10k-*`` if present, else
  ``train-*``) or the images file itself (its labels file is found by name).

Labels are mapped into the model's label space (:class:`LabelSpace`): a 1000-class model takes ImageNet
indices; a model over an ImageNet subset (``model.class_wnids``, e.g. Imagenette: label k is the k-th wnid in
sorted order) takes wnids and ImageNet indices of its classes, and examples of other classes are *skipped*
(counted in ``skipped``); any other model (MNIST, CIFAR) takes plain indices ``0..num_classes-1``.

Images come out as the model expects them (:func:`robustlens.models.preprocess.preprocess`): float (C, S, S) in
[0, 1]. :func:`preload` decodes a dataset once into a uint8 tensor, for training loops.
"""

from __future__ import annotations

import csv
import gzip
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from robustlens.errors import UserError
from robustlens.images import load_pil
from robustlens.models.preprocess import PreprocessConfig, preprocess

DATA_KINDS = ("folder", "nips17", "list", "mnist")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}
_WNID = re.compile(r"n\d{8}")


@dataclass(frozen=True)
class DataSpec:
    kind: str
    path: Path

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}"


def parse_data_spec(text: str) -> DataSpec:
    """``KIND:PATH`` with KIND in folder, nips17, list, mnist; the path must exist.

    Example:

    ```pycon
    >>> import tempfile
    >>> from pathlib import Path
    >>> from robustlens.robust import parse_data_spec
    >>> folder = tempfile.mkdtemp()  # any existing folder of class folders
    >>> spec = parse_data_spec(f"folder:{folder}")
    >>> spec.kind, Path(spec.path) == Path(folder)
    ('folder', True)

    ```
    """
    kind, sep, rest = str(text).partition(":")
    if not sep or kind not in DATA_KINDS:
        raise UserError(f"--data {text!r}: expected KIND:PATH with KIND one of {', '.join(DATA_KINDS)} "
                        "(e.g. folder:imagenette128/val, mnist:data/mnist)")
    try:
        path = Path(rest).expanduser()
        exists, is_dir, is_file = path.exists(), path.is_dir(), path.is_file()
    except (OSError, ValueError, RuntimeError) as e:  # a NUL byte, a name too long, an unknown ~user, ...
        raise UserError(f"--data {text!r}: not a usable path ({_reason(e)})") from None
    if not exists:
        raise UserError(f"--data {text!r}: {path} does not exist")
    if kind in ("folder", "nips17") and not is_dir:
        raise UserError(f"--data {text!r}: {kind} needs a folder, {path} is a file")
    if kind == "list" and not is_file:
        raise UserError(f"--data {text!r}: list needs a file of 'path, label' lines, {path} is a folder")
    return DataSpec(kind, path)


def _reason(e: BaseException) -> str:
    """One line for an exception raised while reading a path or file."""
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return " ".join(text.split()) or type(e).__name__


# --- label spaces -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LabelSpace:
    """A model's classes: ``num_classes`` and, when they are ImageNet classes, their wnids in label order
    (``imagenet`` is True for the full 1000-class space)."""

    num_classes: int
    wnids: tuple[str, ...] | None = None

    @property
    def imagenet(self) -> bool:
        return self.wnids is not None and len(self.wnids) == 1000

    @classmethod
    def of(cls, model) -> "LabelSpace":
        """The label space of a :class:`~robustlens.models.Classifier` (``class_wnids`` if it has them)."""
        wnids = getattr(model, "class_wnids", None)
        n = int(getattr(model, "num_classes", 1000))
        if wnids is not None:
            return cls(len(wnids), tuple(wnids))
        if n == 1000:
            from robustlens.models.labels import imagenet_classes

            return cls(1000, tuple(c.wnid for c in imagenet_classes()))
        return cls(n)

    def from_wnid(self, wnid: str) -> int | None:
        """The label of ImageNet class ``wnid``; None when the model does not have that class."""
        if self.wnids is None:
            raise UserError(f"this model's {self.num_classes} classes are not ImageNet classes: label data by "
                            f"index 0..{self.num_classes - 1}, not by wnid ({wnid})")
        return self._index().get(wnid)

    def from_imagenet_index(self, index: int) -> int | None:
        """The label of ImageNet class ``index`` (0..999); None when the model does not have that class."""
        from robustlens.models.labels import imagenet_classes

        if not 0 <= index < 1000:
            raise UserError(f"ImageNet class index {index} is out of range 0..999")
        return self.from_wnid(imagenet_classes()[index].wnid)

    def from_label(self, text: str) -> int | None:
        """A label written in a dataset: a wnid, or an index (ImageNet index for ImageNet-class models,
        else the model's own index)."""
        text = text.strip()
        if _WNID.fullmatch(text):
            return self.from_wnid(text)
        if not text.lstrip("-").isdigit():
            raise UserError(f"label {text!r} is neither a class index nor a wnid")
        idx = int(text)
        if self.wnids is not None:
            return self.from_imagenet_index(idx)
        if not 0 <= idx < self.num_classes:
            raise UserError(f"label {idx} is out of range 0..{self.num_classes - 1}")
        return idx

    def _index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.wnids or ())}


# --- datasets ---------------------------------------------------------------------------------------------

class LabelledImages(Dataset):
    """Examples ``(image (C,S,S) float in [0,1], label)``; ``sources[i]`` says where example i came from.

    Holds either file paths (decoded on access, so DataLoader workers share the work) or a uint8 tensor of
    images (N,H,W) / (N,C,H,W)."""

    def __init__(self, config: PreprocessConfig, labels: Sequence[int], *, paths: Sequence[Path] | None = None,
                 pixels: torch.Tensor | None = None, description: str = "", skipped: int = 0):
        if (paths is None) == (pixels is None):
            raise ValueError("give exactly one of paths and pixels")
        self.config = config
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        self.paths = list(paths) if paths is not None else None
        self.pixels = pixels
        self.description = description
        self.skipped = skipped

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def sources(self) -> list[str]:
        if self.paths is not None:
            return [str(p) for p in self.paths]
        return [f"{self.description}#{i}" for i in range(len(self))]

    def image(self, i: int) -> torch.Tensor:
        if self.paths is not None:
            return preprocess(load_pil(self.paths[i]), self.config)
        assert self.pixels is not None  # exactly one of the two (__init__)
        return tensor_to_model_input(self.pixels[i], self.config)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.image(i), int(self.labels[i])

    def subset(self, indices: Sequence[int]) -> "LabelledImages":
        idx = list(indices)
        labels = self.labels[idx].tolist()
        if self.paths is not None:
            return LabelledImages(self.config, labels, paths=[self.paths[i] for i in idx],
                                  description=self.description, skipped=self.skipped)
        return LabelledImages(self.config, labels, pixels=self.pixels[idx] if self.pixels is not None else None,
                              description=self.description, skipped=self.skipped)


def tensor_to_model_input(img: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """A uint8 image (H,W) or (C,H,W) -> float (config.channels, S, S) in [0,1]; resized only if needed."""
    if img.dim() == 2:
        img = img.unsqueeze(0)
    c, h, w = img.shape
    if h == w == config.input_size and c == config.channels:
        return img.float().div_(255.0)
    arr = img.permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[:, :, 0] if c == 1 else arr, "L" if c == 1 else "RGB").convert("RGB")
    return preprocess(pil, config)


def spread_indices(n: int, limit: int | None) -> list[int]:
    """``limit`` indices spread evenly over range(n) (all of them when limit is None or ≥ n)."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 1:
        raise UserError(f"--limit must be at least 1, got {limit}")
    return [i * n // limit for i in range(limit)]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _folder(path: Path, space: LabelSpace) -> tuple[list[Path], list[int], int]:
    classes = sorted(d for d in path.iterdir() if d.is_dir())
    if not classes:
        raise UserError(f"folder:{path} has no class sub-folders (expected one folder per wnid or class index)")
    paths, labels, skipped = [], [], 0
    for d in classes:
        if not (_WNID.fullmatch(d.name) or d.name.isdigit()):
            raise UserError(f"folder:{path}: sub-folder {d.name!r} is neither a wnid (n01440764) nor a class index")
        files = _image_files(d)
        label = space.from_label(d.name)
        if label is None:
            skipped += len(files)
            continue
        paths += files
        labels += [label] * len(files)
    return paths, labels, skipped


def _nips17(path: Path, space: LabelSpace) -> tuple[list[Path], list[int], int]:
    table = path / "images.csv"
    if not table.is_file():
        raise UserError(f"nips17:{path}: no images.csv (expected the NIPS-17 dev set layout)")
    if space.wnids is None:
        raise UserError(f"nips17 labels are ImageNet classes; this model has {space.num_classes} other classes")
    paths, labels, skipped = [], [], 0
    with table.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "ImageId" not in rows[0] or "TrueLabel" not in rows[0]:
        raise UserError(f"{table}: expected columns ImageId and TrueLabel")
    for n, row in enumerate(rows, 2):
        if not row.get("ImageId") or not str(row.get("TrueLabel") or "").strip().isdigit():
            raise UserError(f"{table}:{n}: expected an ImageId and a whole-number TrueLabel, got {row!r}"[:300])
        stem = path / "images" / row["ImageId"]
        found = next((stem.with_suffix(s) for s in (".jpg", ".png", ".jpeg") if stem.with_suffix(s).is_file()), None)
        if found is None:
            raise UserError(f"{table}: image {row['ImageId']} not found under {path / 'images'}")
        label = space.from_imagenet_index(int(row["TrueLabel"]) - 1)  # the csv is 1-based
        if label is None:
            skipped += 1
            continue
        paths.append(found)
        labels.append(label)
    return paths, labels, skipped


def _list(path: Path, space: LabelSpace) -> tuple[list[Path], list[int], int]:
    paths, labels, skipped = [], [], 0
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, label_text = line.rpartition(",") if "," in line else line.rpartition(" ")
        if not sep or not name.strip():
            raise UserError(f"{path}:{n}: expected 'path, label', got {line!r}")
        file = (path.parent / name.strip()).resolve()
        if not file.is_file():
            raise UserError(f"{path}:{n}: image {name.strip()} not found ({file})")
        label = space.from_label(label_text)
        if label is None:
            skipped += 1
            continue
        paths.append(file)
        labels.append(label)
    if not paths and not skipped:
        raise UserError(f"list:{path} has no 'path, label' lines")
    return paths, labels, skipped


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (MNIST format; gzip or not) as a numpy array of its dtype and shape."""
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read IDX file {p}: {_reason(e)}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise UserError(f"{p} is not an IDX file (bad magic number)")
    dtypes: dict[int, Any] = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise UserError(f"{p}: unknown IDX data type 0x{data[2]:02x}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(dtypes[data[2]])
    body = data[4 + 4 * ndim:]
    if len(body) != math.prod(shape) * dtype.itemsize:
        raise UserError(f"{p}: IDX header says shape {shape} but the file holds {len(body)} bytes of data")
    return np.frombuffer(body, dtype=dtype).reshape(shape)


def mnist_files(path: Path) -> tuple[Path, Path]:
    """(images file, labels file) for ``mnist:PATH`` (see the module docstring)."""
    if path.is_file():
        labels = Path(str(path).replace("images-idx3", "labels-idx1"))
        if labels == path or not labels.is_file():
            raise UserError(f"mnist:{path}: cannot find its labels file ({labels.name})")
        return path, labels
    for split in ("t10k", "train"):
        for suffix in (".gz", ""):
            images = path / f"{split}-images-idx3-ubyte{suffix}"
            labels = path / f"{split}-labels-idx1-ubyte{suffix}"
            if images.is_file() and labels.is_file():
                return images, labels
    raise UserError(f"mnist:{path}: no t10k-/train-images-idx3-ubyte[.gz] with its labels file in the folder")


def load_mnist(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST images (N, 28, 28) uint8 and labels (N,) int64 from ``mnist:PATH``."""
    images_file, labels_file = mnist_files(Path(path))
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"{images_file} / {labels_file}: expected (N,H,W) images and (N,) labels, "
                        f"got {images.shape} and {labels.shape}")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def open_dataset(spec: str | DataSpec, model, *, limit: int | None = None) -> LabelledImages:
    """The examples of ``spec`` preprocessed for ``model`` (its ``config``) with labels in its label space.

    ``limit``: keep that many examples, spread evenly over the dataset's order (files sorted by class then
    name), so a small limit still covers every class."""
    spec = spec if isinstance(spec, DataSpec) else parse_data_spec(spec)
    config: PreprocessConfig = model.config
    space = LabelSpace.of(model)
    if spec.kind == "mnist":
        pixels, digits = load_mnist(spec.path)
        if space.wnids is not None:
            raise UserError(f"MNIST labels are digits; {getattr(model, 'name', 'this model')} has ImageNet classes")
        if int(digits.max()) >= space.num_classes:
            raise UserError(f"MNIST labels go up to {int(digits.max())}; the model has {space.num_classes} classes")
        keep = spread_indices(len(digits), limit)
        return LabelledImages(config, digits[keep].tolist(), pixels=pixels[keep], description=str(spec))
    reader = {"folder": _folder, "nips17": _nips17, "list": _list}[spec.kind]
    try:
        paths, labels, skipped = reader(spec.path, space)
    except UserError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as e:  # unreadable file, bad bytes, odd path
        raise UserError(f"{spec}: cannot read it ({_reason(e)})") from None
    if not paths:
        raise UserError(f"{spec}: none of its {skipped} images belongs to a class of the model")
    keep = spread_indices(len(paths), limit)
    return LabelledImages(config, [labels[i] for i in keep], paths=[paths[i] for i in keep],
                          description=str(spec), skipped=skipped)


def make_loader(dataset: Dataset, *, batch_size: int, workers: int = 0, shuffle: bool = False,
                generator: torch.Generator | None = None) -> DataLoader:
    """A DataLoader of (images (B,C,S,S) float, labels (B,)) batches, in order unless ``shuffle``."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      generator=generator, persistent_workers=False, pin_memory=False)


def preload(dataset: LabelledImages, *, workers: int = 0, batch_size: int = 256,
            progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every example once: (uint8 images (N,C,S,S), labels (N,)). Pixels are rounded to k/255."""
    from tqdm.auto import tqdm

    loader = make_loader(dataset, batch_size=batch_size, workers=workers)
    chunks = [torch.round(x * 255.0).to(torch.uint8)
              for x, _ in tqdm(loader, desc="decoding", disable=not progress, leave=False)]
    images = torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.uint8)
    return images, dataset.labels.clone()
