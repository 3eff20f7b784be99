"""Datasets: --data specs, label spaces (ImageNet, Imagenette subset, plain digits), the four layouts,
MNIST IDX files, evenly spread limits, preloading."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from tests.conftest import shared_path

from robustlens.errors import UserError
from robustlens.models import create_model
from robustlens.models.labels import imagenet_classes
from robustlens.models.small import IMAGENETTE_WNIDS
from robustlens.robust.datasets import (
    LabelSpace,
    load_mnist,
    make_loader,
    open_dataset,
    parse_data_spec,
    preload,
    read_idx,
    spread_indices,
)

TENCH, SPRINGER = IMAGENETTE_WNIDS[0], IMAGENETTE_WNIDS[1]
GOLDFISH = imagenet_classes()[1].wnid  # not an Imagenette class


@pytest.fixture(scope="module")
def imagenette_model():
    return create_model("imagenette_resnet", "none")


@pytest.fixture(scope="module")
def lenet():
    return create_model("mnist_lenet5", "none")


class _ImageNet1000:
    """Stands in for a 1000-class model (only ``config``/``num_classes`` are used by datasets)."""

    num_classes = 1000

    def __init__(self, config):
        self.config = config


def _image(path, colour=(200, 30, 30), size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _write_idx(path, array: np.ndarray, code: int) -> None:
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_parse_data_spec_errors(tmp_path):
    assert parse_data_spec(f"folder:{tmp_path}").kind == "folder"
    for bad, why in [("imagenet:/x", "KIND:PATH"), (str(tmp_path), "KIND:PATH"),
                     (f"folder:{tmp_path / 'nope'}", "does not exist"), (f"list:{tmp_path}", "list needs a file")]:
        with pytest.raises(UserError, match=why):
            parse_data_spec(bad)


def test_label_spaces(imagenette_model, lenet):
    sub = LabelSpace.of(imagenette_model)
    assert sub.num_classes == 10 and not sub.imagenet
    assert sub.from_wnid(SPRINGER) == 1 and sub.from_wnid(GOLDFISH) is None
    assert sub.from_label("0") == 0 and sub.from_label("1") is None  # ImageNet index 1 (goldfish): not a class
    full = LabelSpace(1000, tuple(c.wnid for c in imagenet_classes()))
    assert full.imagenet and full.from_wnid(GOLDFISH) == 1
    digits = LabelSpace.of(lenet)
    assert digits.from_label("7") == 7
    with pytest.raises(UserError, match="not ImageNet classes"):
        digits.from_label(TENCH)
    with pytest.raises(UserError, match="out of range"):
        digits.from_label("10")


def test_wnid_folder_in_subset_and_full_label_spaces(tmp_path, imagenette_model):
    for wnid, n in [(TENCH, 2), (SPRINGER, 3), (GOLDFISH, 1)]:
        for i in range(n):
            _image(tmp_path / wnid / f"{i}.jpg")
    ds = open_dataset(f"folder:{tmp_path}", imagenette_model)
    assert ds.labels.tolist() == [0, 0, 1, 1, 1] and ds.skipped == 1
    x, y = ds[0]
    assert x.shape == (3, 64, 64) and 0 <= float(x.min()) and float(x.max()) <= 1 and y == 0
    full = open_dataset(f"folder:{tmp_path}", _ImageNet1000(imagenette_model.config))
    assert full.labels.tolist() == [0, 0, 1, 217, 217, 217] and full.skipped == 0  # folders in wnid order


def test_index_folders_for_digit_models(tmp_path, lenet):
    for d in ("3", "7"):
        _image(tmp_path / d / "a.png", colour=(255, 255, 255), size=(28, 28))
    ds = open_dataset(f"folder:{tmp_path}", lenet)
    assert ds.labels.tolist() == [3, 7] and ds[0][0].shape == (1, 28, 28)
    _image(tmp_path / "cats" / "a.png")
    with pytest.raises(UserError, match="neither a wnid"):
        open_dataset(f"folder:{tmp_path}", lenet)


def test_nips17_labels_are_one_based(tmp_path, imagenette_model):
    for name in ("a", "b"):
        _image(tmp_path / "images" / f"{name}.jpg")
    (tmp_path / "images.csv").write_text("ImageId,URL,TrueLabel,TargetClass\na,u,1,5\nb,u,2,5\n")
    full = open_dataset(f"nips17:{tmp_path}", _ImageNet1000(imagenette_model.config))
    assert full.labels.tolist() == [0, 1]  # TrueLabel 1 is ImageNet class 0 (tench)
    sub = open_dataset(f"nips17:{tmp_path}", imagenette_model)
    assert sub.labels.tolist() == [0] and sub.skipped == 1


def test_list_file(tmp_path, imagenette_model):
    _image(tmp_path / "img" / "x.png")
    _image(tmp_path / "img" / "y.png")
    lst = tmp_path / "labels.txt"
    lst.write_text(f"# file, label\nimg/x.png, 0\nimg/y.png, {SPRINGER}\n")
    ds = open_dataset(f"list:{lst}", imagenette_model)
    assert ds.labels.tolist() == [0, 1]
    lst.write_text("img/missing.png, 0\n")
    with pytest.raises(UserError, match=r"labels.txt:1: image img/missing.png not found"):
        open_dataset(f"list:{lst}", imagenette_model)


def test_mnist_idx_round_trip_and_limits(tmp_path, lenet):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 28, 28))
    labels = np.arange(20) % 10
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, 0x08)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels, 0x08)
    assert np.array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), images)
    x, y = load_mnist(tmp_path)
    assert x.shape == (20, 28, 28) and y.tolist() == labels.tolist()
    ds = open_dataset(f"mnist:{tmp_path}", lenet, limit=5)
    assert ds.labels.tolist() == [0, 4, 8, 2, 6]  # spread evenly: indices 0, 4, 8, 12, 16
    img, _ = ds[1]
    assert torch.equal(img[0], torch.from_numpy(images[4]).float() / 255)
    u8, lab = preload(ds)
    assert u8.dtype == torch.uint8 and u8.shape == (5, 1, 28, 28) and torch.equal(u8[1, 0], torch.from_numpy(images[4]).to(torch.uint8))
    batches = list(make_loader(ds, batch_size=2))
    assert [len(b[1]) for b in batches] == [2, 2, 1]
    (tmp_path / "bad-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x08\x08\x08\x08"))
    with pytest.raises(UserError, match="not an IDX file"):
        read_idx(tmp_path / "bad-images-idx3-ubyte.gz")


def test_spread_indices():
    assert spread_indices(10, None) == list(range(10))
    assert spread_indices(10, 3) == [0, 3, 6]
    with pytest.raises(UserError):
        spread_indices(10, 0)


def test_shared_mnist_and_imagenette(lenet, imagenette_model):
    mnist = open_dataset(f"mnist:{shared_path('data', 'mnist')}", lenet)
    assert len(mnist) == 10000 and mnist.labels[:4].tolist() == [7, 2, 1, 0]
    val = open_dataset(f"folder:{shared_path('data', 'imagenette128', 'val')}", imagenette_model, limit=20)
    assert sorted(set(val.labels.tolist())) == list(range(10)) and val.skipped == 0
