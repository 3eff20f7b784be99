"""Synthesis recipes (Santurkar et al. 2019) on small inputs with tiny random models: shapes, ranges, masks,
seeds, the Gaussian seed fit against numpy, the on-disk cache, and the CLI's input rules."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from robustlens.cli.main import main
from robustlens.errors import UserError
from robustlens.models import create_model
from robustlens.models.classifier import SubsetClassifier
from robustlens.models.preprocess import PreprocessConfig
from robustlens.models.small import IMAGENETTE_WNIDS, ImagenetteResNet
from robustlens.optim.objectives import Outputs
from robustlens.recipes import synthesis as syn
from robustlens.recipes.synthesis.figures import comparison_figure, robust_vs_standard

LEVEL = 0.5 / 255 + 1e-6  # rounding to the 8-bit grid


@pytest.fixture(scope="module")
def model():
    return create_model("imagenette_resnet", weights="none", seed=0)


@pytest.fixture(scope="module")
def model32():
    """A 32 px model over the same classes: nothing may assume 64 px."""
    torch.manual_seed(0)
    config = PreprocessConfig(input_size=32, resize_size=32)
    return SubsetClassifier(ImagenetteResNet(), config, class_wnids=IMAGENETTE_WNIDS, name="tiny32",
                            weights="none").eval()


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.round(torch.rand(n, 3, size, size, generator=g) * 255) / 255


def _toy_fit(size: int = 64, classes=(0, 3), per_class: int = 6) -> syn.ClassGaussians:
    x = _images(per_class * len(classes), size)
    labels = torch.tensor([c for c in classes for _ in range(per_class)])
    return syn.fit_class_gaussians(x, labels)


def _on_grid(x: torch.Tensor) -> bool:
    return bool(torch.allclose(x * 255, torch.round(x * 255), atol=1e-4))


# --- procedures ---------------------------------------------------------------------------------------------

def test_procedure_is_published_at_224_and_scales_with_sqrt_pixels():
    assert syn.procedure("generate", 224) == syn.Procedure(40.0, 1.0, 60)
    assert syn.procedure("inpaint", 224) == syn.Procedure(21.6, 0.1, 720)
    p = syn.procedure("translate", (64, 128))
    s = math.sqrt(64 * 128) / 224
    assert p.eps == pytest.approx(80 * s) and p.step_size == pytest.approx(0.5 * s) and p.steps == 200
    assert syn.procedure("sketch", 32, eps=2.0, steps=5) == syn.Procedure(2.0, 32 / 224, 5)
    with pytest.raises(UserError):
        syn.procedure("dream", 64)
    with pytest.raises(UserError):
        syn.procedure("generate", 64, eps=-1.0)


# --- seed distributions -------------------------------------------------------------------------------------

def test_gaussian_fit_matches_numpy_mean_and_cov():
    x = torch.rand(30, 3, 8, 8, dtype=torch.float64)
    labels = torch.tensor([0] * 12 + [2] * 18)
    fit = syn.fit_class_gaussians(x, labels, factor=4)
    assert fit.classes == [0, 2] and fit.counts == [12, 18] and fit.side == 2
    small = x.numpy().reshape(30, 3, 2, 4, 2, 4).mean((3, 5)).reshape(30, -1)  # ×4 block means
    for k, c in enumerate((0, 2)):
        rows = small[labels.numpy() == c]
        np.testing.assert_allclose(fit.mean[k].numpy(), rows.mean(0), atol=1e-6)
        want = np.cov(rows, rowvar=False) + 1e-4 * np.eye(rows.shape[1])
        np.testing.assert_allclose(fit.covariance[k].numpy(), want, atol=1e-6)


def test_seed_samples_follow_the_fit_and_are_nearest_upsampled():
    fit = syn.ClassGaussians(classes=[5], side=2, mean=torch.full((1, 12), 0.5),
                             scale_tril=torch.linalg.cholesky(0.0004 * torch.eye(12) + 0.0002)[None],
                             counts=[10], meta={})
    s = fit.sample(torch.full((4000,), 5), size=2, generator=torch.Generator().manual_seed(0))
    flat = s.reshape(4000, -1).double()
    assert flat.mean(0).sub(0.5).abs().max() < 0.003
    np.testing.assert_allclose(np.cov(flat.numpy(), rowvar=False), fit.covariance[0].numpy(), atol=6e-5)
    big = fit.sample(torch.full((3,), 5), size=8, generator=torch.Generator().manual_seed(1))
    small = fit.sample(torch.full((3,), 5), size=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(big, small.repeat_interleave(4, 2).repeat_interleave(4, 3))
    with pytest.raises(UserError):
        fit.sample(torch.tensor([1]), size=8, generator=torch.Generator())


def _folder(tmp_path, per_class: int = 3):
    root = tmp_path / "data"
    g = np.random.default_rng(0)
    for wnid in IMAGENETTE_WNIDS[:2]:
        (root / wnid).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(g.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / wnid / f"{i}.png")
    return root


def test_seed_cache_is_written_once_and_reused(tmp_path, model, monkeypatch):
    root = _folder(tmp_path)
    cache = tmp_path / "cache"
    first = syn.class_gaussians(model, f"folder:{root}", cache=cache)
    files = list(cache.iterdir())
    assert len(files) == 1 and first.classes == [0, 1] and first.counts == [3, 3]

    import robustlens.robust.datasets as datasets

    def no_reading(*a, **k):
        raise AssertionError("the data set was read again")

    monkeypatch.setattr(datasets, "open_dataset", no_reading)
    again = syn.class_gaussians(model, f"folder:{root}", cache=cache)
    assert torch.equal(again.mean, first.mean) and torch.equal(again.scale_tril, first.scale_tril)
    monkeypatch.undo()
    syn.class_gaussians(model, f"folder:{root}", cache=cache, limit=4)  # another key: another file
    assert len(list(cache.iterdir())) == 2


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLENS_SEEDS_CACHE", str(tmp_path / "s"))
    assert syn.seeds.cache_dir() == tmp_path / "s"


# --- recipes ------------------------------------------------------------------------------------------------

def test_generate_is_batched_in_range_and_seeded(model):
    fit = _toy_fit()
    kw = dict(samples=2, steps=3, progress=False)
    a = syn.generate(model, fit, [3, 0], seed=1, **kw)
    assert a.images.shape == (4, 3, 64, 64) and a.targets.tolist() == [3, 3, 0, 0]
    assert float(a.images.min()) >= 0 and float(a.images.max()) <= 1 and _on_grid(a.images)
    assert bool((a.l2 <= a.settings["eps"] + 0.01).all())  # the ball, up to the rounding to 8 bits
    b = syn.generate(model, fit, [3, 0], seed=1, **kw)
    assert torch.equal(a.images, b.images) and torch.equal(a.starts, b.starts)
    c = syn.generate(model, fit, [3, 0], seed=2, **kw)
    assert not torch.equal(a.starts, c.starts)
    d = a.to_dict()
    json.dumps(d, allow_nan=False)
    assert len(d["rows"]) == 4 and {"target", "target_prob", "success", "l2"} <= set(d["rows"][0])


def test_inpaint_respects_the_mask_and_never_reads_the_hole(model):
    x = _images(2, 64)
    masks = syn.random_box_masks(2, 64, generator=torch.Generator().manual_seed(0))
    assert masks.shape == (2, 1, 64, 64) and int(masks[0].sum()) == round(60 / 224 * 64) ** 2
    res = syn.inpaint(model, x, masks, labels=[1, 2], steps=4, progress=False)
    outside = (res.images - x).abs() * (1 - masks)
    assert float(outside.max()) <= LEVEL
    assert float(((res.images - res.starts).abs() * masks).max()) > 0  # the hole was worked on
    filled = syn.fill_mean(x, masks)
    mean_outside = (x * (1 - masks)).sum((2, 3)) / (1 - masks).sum((2, 3))
    assert torch.allclose(filled[0, :, masks[0, 0].bool()], mean_outside[0][:, None].expand(3, -1))
    other = x.clone()
    other[masks.expand_as(x).bool()] = 0.0  # different content in the hole
    res2 = syn.inpaint(model, other, masks, labels=[1, 2], steps=4, progress=False)
    assert torch.equal(res.images * masks, res2.images * masks)
    free = syn.inpaint(model, x, masks, labels=[1, 2], steps=4, paste=False, progress=False)
    assert free.extra["outside_change"].shape == (2,)


def test_one_image_many_masks_is_one_batch(model):
    x = _images(1, 64)
    masks = torch.cat([syn.box_mask(64, 0, 0, 16, 16), syn.box_mask(64, 40, 40, 20, 20)])
    res = syn.inpaint(model, x, masks, steps=2, progress=False)
    assert res.images.shape == (2, 3, 64, 64) and res.masks.shape == (2, 1, 64, 64)
    with pytest.raises(UserError):
        syn.inpaint(model, _images(3, 64), masks, steps=1, progress=False)
    with pytest.raises(UserError):
        syn.inpaint(model, x, torch.zeros(1, 1, 64, 64), steps=1, progress=False)


def test_super_resolve_starts_from_nearest_upsampling(model32):
    low = _images(2, 8)
    res = syn.super_resolve(model32, low, labels=[4, 5], steps=3, progress=False)
    assert res.images.shape == (2, 3, 32, 32)
    assert torch.equal(res.starts, low.repeat_interleave(4, 2).repeat_interleave(4, 3))
    assert res.settings["eps"] == pytest.approx(8 * 32 / 224)
    assert bool((res.l2 <= res.settings["eps"] + 0.01).all()) and _on_grid(res.images)
    assert syn.downsample(_images(1, 32), 4).shape == (1, 3, 8, 8)


def test_translate_and_sketch_push_towards_the_target(model32):
    x = _images(3, 32)
    res = syn.translate(model32, x, 7, steps=20, eps=5.0, step_size=0.5, progress=False)
    assert res.targets.tolist() == [7, 7, 7] and res.images.shape == x.shape
    before = torch.softmax(model32(x), 1)[:, 7]
    assert bool((res.target_prob > before).all())
    sk = syn.sketch_to_image(model32, x[:2], [1, 2], steps=2, progress=False)
    assert sk.targets.tolist() == [1, 2] and sk.task == "sketch"
    with pytest.raises(UserError):
        syn.translate(model32, x, [1, 2], steps=1, progress=False)
    with pytest.raises(UserError):
        syn.translate(model32, x * 2, 1, steps=1, progress=False)


def test_paint_raises_the_unit_inside_the_mask(model):
    from robustlens.models.layers import get_activations

    x = _images(2, 64)
    with torch.inference_mode():
        a = get_activations(model, x, ["layer3"])["layer3"]
    ch = int(a.mean((0, 2, 3)).argmax())
    mask = syn.box_mask(64, 16, 16, 32, 32)
    res = syn.paint_features(model, x, mask, f"layer3:{ch}", steps=10, progress=False)
    assert bool((res.extra["activation"] > res.extra["activation_start"]).all())
    assert res.targets is None and res.success is None
    two = syn.paint_features(model, x, mask, [f"layer3:{ch}", "layer2:0"], steps=1, progress=False)
    assert two.settings["features"] == [f"layer3:{ch}", "layer2:0"]


def test_masked_objectives_against_direct_formulas():
    g = torch.Generator().manual_seed(0)
    x, ref = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 8, 8, generator=g)
    mask = syn.box_mask(8, 2, 2, 4, 4)
    out = Outputs(x=x, logits=torch.zeros(2, 10), activations={"l": torch.rand(2, 5, 4, 4, generator=g)},
                  index=torch.arange(2))
    want = (((x - ref) * (1 - mask)) ** 2).flatten(1).mean(1)
    assert torch.allclose(syn.SquaredErrorOutside(ref, mask)(out), want)
    act = out.activations["l"][:, 3, 1:3, 1:3].flatten(1).mean(1)  # the 8 px box on a 4×4 grid
    assert torch.allclose(syn.MaskedChannel("l", 3, mask)(out), -act)


def test_robust_vs_standard_runs_every_model_on_the_same_inputs(tmp_path, model32):
    other = SubsetClassifier(ImagenetteResNet(), model32.config, class_wnids=IMAGENETTE_WNIDS, name="other",
                             weights="none").eval()
    x = _images(2, 32)
    res = robust_vs_standard("translate", {"a": model32, "b": other}, tmp_path / "f.png", images=x, targets=1,
                             steps=1, progress=False)
    assert set(res) == {"a", "b"} and torch.equal(res["a"].starts, res["b"].starts)
    assert (tmp_path / "f.png").stat().st_size > 1000
    path = comparison_figure(res, tmp_path / "g.png", originals=x, pick=[1])
    assert path.is_file()


# --- CLI ----------------------------------------------------------------------------------------------------

def _png(tmp_path, name="img.png", size=40):
    p = tmp_path / name
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(p)
    return str(p)


TINY = ["--model", "imagenette_resnet", "--weights", "none", "--threads", "1"]


def test_cli_translate_writes_pngs_and_strict_json(tmp_path, capsys):
    img = _png(tmp_path)
    out = tmp_path / "out"
    rc = main(["synthesize", "translate", img, img, "--target", "church", "--target", "9", "--steps", "2",
               "--out", str(out), "--json", *TINY])
    assert rc == 0
    d = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert [r["target"] for r in d["rows"]] == [4, 9] and d["task"] == "translate"
    assert {"synthesis.png", "result_0.png", "start_1.png", "result.json"} <= {p.name for p in out.iterdir()}


@pytest.mark.parametrize("args", [
    ["translate", "IMG", "--target", "nosuch"],
    ["translate", "IMG", "--target", "1", "--target", "2", "--target", "3"],
    ["inpaint", "IMG", "--box", "60,60,20,20"],
    ["inpaint", "IMG", "--box", "1,2"],
    ["paint", "IMG", "--feature", "nolayer:1"],
    ["superres", "IMG", "--factor", "3"],
    ["sketch", "IMG", "--target", "1", "--eps", "-1"],
    ["translate", "/no/such.png", "--target", "1"],
    ["generate", "--data", "folder:/no/such/folder"],
    ["generate", "--data", "folder:/tmp", "--samples", "0"],
])
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args):
    img = _png(tmp_path)
    out = tmp_path / "out"
    rc = main(["synthesize", *[img if a == "IMG" else a for a in args], "--out", str(out), *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


# --- the seed statistics shipped with the package ------------------------------------------------------------

def test_low_rank_form_keeps_each_value_variance_and_full_rank_is_the_fit():
    x = _images(12, 16)  # D = 3·4² = 48 values per class, 6 images each: Σ has rank 5 (+ jitter)
    labels = torch.tensor([0] * 6 + [3] * 6)
    fit = syn.fit_class_gaussians(x, labels)
    cov = fit.covariance.double()
    full = syn.LowRankGaussians.fit(x, labels, rank=48)
    assert torch.allclose(full.mean, fit.mean, atol=1e-6)
    ff = full.factor.double() @ full.factor.double().transpose(1, 2)
    # the top-5 directions carry all of Σ but the jitter along the other 43
    eye = torch.eye(48, dtype=torch.float64)
    assert torch.allclose(ff + 1e-4 * (eye - _span(full.factor.double())), cov, atol=1e-5)
    low = syn.LowRankGaussians.fit(x, labels, rank=3)
    approx = low.factor.double() @ low.factor.double().transpose(1, 2)
    diag = approx.diagonal(dim1=1, dim2=2) + low.residual_std.double().square()
    assert torch.allclose(diag, cov.diagonal(dim1=1, dim2=2), atol=1e-5)  # every value's variance kept
    assert all(0 < v < 1 for v in low.meta["variance_kept"])
    seeds = low.sample(torch.tensor([3, 0, 3]), size=16, generator=torch.Generator().manual_seed(0))
    assert seeds.shape == (3, 3, 16, 16) and 0 <= float(seeds.min()) and float(seeds.max()) <= 1


def _span(f: torch.Tensor) -> torch.Tensor:
    """(K,D,D): the projection onto the column span of each (D,r) factor."""
    q = torch.linalg.qr(f).Q
    return q @ q.transpose(1, 2)


def test_shipped_seeds_cover_the_imagenette_classes_at_128px():
    model = create_model("imagenette128_resnet", "none")
    seeds = syn.shipped_seeds(model)
    assert seeds is not None and seeds.classes == list(range(10)) and seeds.side == 32
    assert min(seeds.counts) > 800  # fitted to the real training images, not a stand-in
    x = seeds.sample(torch.arange(10).repeat_interleave(64), size=128, generator=torch.Generator().manual_seed(0))
    assert x.shape == (640, 3, 128, 128)
    # class-conditional: the average of each class's 64 seeds is nearest that class's mean
    avg = F.avg_pool2d(x, 4).flatten(1).reshape(10, 64, -1).mean(1)
    assert torch.equal(torch.cdist(avg, seeds.mean).argmin(1), torch.arange(10))
    assert syn.shipped_seeds(create_model("mnist_lenet5", "none")) is None


def test_cli_generate_without_data_uses_the_shipped_seeds(tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["synthesize", "generate", "--class", "church", "--samples", "1", "--steps", "2", "--out", str(out),
               "--json", "--model", "imagenette128_resnet", "--weights", "none", "--threads", "1"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    assert [r["target"] for r in d["rows"]] == [4] and "Imagenette train" in d["settings"]["seed_data"]
    assert (out / "result_0.png").is_file()
    rc = main(["synthesize", "generate", "--samples", "1", "--model", "mnist_lenet5", "--weights", "none"])
    assert rc == 2 and "--data" in capsys.readouterr().err
