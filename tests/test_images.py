import io

import numpy as np
import pytest
import torch
from PIL import Image

from robustlens.errors import UserError
from robustlens.images import load_image, load_pil, quantize, save_image, to_rgb
from robustlens.models.preprocess import PreprocessConfig, center_crop, preprocess, resize_short_side


def _write(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


@pytest.mark.parametrize("fmt,suffix", [("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"), ("BMP", ".bmp"),
                                        ("TIFF", ".tif")])
def test_formats_load_as_rgb(tmp_path, fmt, suffix):
    arr = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    p = _write(Image.fromarray(arr), tmp_path / f"a{suffix}", format=fmt)
    x = load_image(p)
    assert x.shape == (3, 20, 30) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1


def test_mode_L_replicates_grey():
    img = Image.fromarray(np.full((4, 5), 77, np.uint8), "L")
    assert np.all(np.asarray(to_rgb(img)) == 77)


def test_mode_RGBA_composites_on_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 200  # red 200
    rgba[0, 0, 3] = 0  # fully transparent -> white
    rgba[0, 1, 3] = 255  # opaque -> (200, 0, 0)
    rgba[1, 0, 3] = 128  # half: 200*a + 255*(1-a), 0*a + 255*(1-a)
    out = np.asarray(to_rgb(Image.fromarray(rgba, "RGBA"))).astype(int)
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[0, 1]) == (200, 0, 0)
    a = 128 / 255
    assert np.allclose(out[1, 0], [200 * a + 255 * (1 - a), 255 * (1 - a), 255 * (1 - a)], atol=1.01)


def test_mode_LA_composites_on_white():
    la = np.zeros((1, 2, 2), np.uint8)
    la[0, 0] = (0, 0)
    la[0, 1] = (10, 255)
    out = np.asarray(to_rgb(Image.fromarray(la, "LA")))
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[0, 1]) == (10, 10, 10)


def test_mode_P_with_and_without_transparency(tmp_path):
    pal = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    assert np.asarray(to_rgb(pal)).tolist() == [[[255, 0, 0], [0, 0, 255]]]
    p = tmp_path / "t.png"
    pal.save(p, transparency=0)
    out = np.asarray(load_pil(p))
    assert out[0, 0].tolist() == [255, 255, 255] and out[0, 1].tolist() == [0, 0, 255]


def test_mode_CMYK_uses_pillow_conversion():
    cmyk = Image.new("CMYK", (3, 3), (0, 255, 255, 0))  # no cyan, full magenta+yellow -> red
    assert np.asarray(to_rgb(cmyk))[0, 0].tolist() == [255, 0, 0]


def test_mode_I16_scales_by_257(tmp_path):
    arr = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(arr).save(p)
    img = Image.open(p)
    assert img.mode.startswith("I")
    out = np.asarray(load_pil(p))
    assert out[0, :, 0].tolist() == [0, 100, 255]


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255  # left half white in stored pixels
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif, quality=100)
    out = np.asarray(load_pil(p))
    assert out.shape == (20, 10, 3)  # displayed upright: portrait
    assert out[:8].mean() > 200 and out[12:].mean() < 50  # former left half is now on top


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".webp"])
def test_save_reload_round_trip_exact(tmp_path, suffix):
    x = torch.rand(3, 17, 23, generator=torch.Generator().manual_seed(1))
    p = save_image(x, tmp_path / f"x{suffix}")
    back = load_image(p)
    assert torch.equal(back, quantize(x))
    again = load_image(save_image(back, tmp_path / f"y{suffix}"))
    assert torch.equal(again, back)


def test_save_refuses_lossy(tmp_path):
    with pytest.raises(UserError, match="lossless"):
        save_image(torch.rand(3, 4, 4), tmp_path / "x.jpg")
    assert not (tmp_path / "x.jpg").exists()


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_pil(tmp_path / "missing.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="not an image"):
        load_pil(tmp_path / "notes.txt")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(UserError, match="truncated"):
        load_pil(tmp_path / "cut.jpg")


def test_preprocess_matches_config():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 451, 3), dtype=np.uint8))
    cfg = PreprocessConfig.from_crop_pct(224, 0.875, interpolation="bicubic")
    assert cfg.resize_size == 256
    x = preprocess(img, cfg)
    assert x.shape == (3, 224, 224)
    # Same as doing it by hand with Pillow: short side 300 -> 256 (long 451 -> int(256*451/300) = 384), bicubic.
    manual = img.resize((384, 256), Image.Resampling.BICUBIC)
    left, top = int(round((384 - 224) / 2)), int(round((256 - 224) / 2))
    manual = np.asarray(manual.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255
    assert torch.allclose(x, torch.from_numpy(manual).permute(2, 0, 1))


def test_resize_and_crop_geometry():
    img = Image.new("RGB", (100, 50))
    assert resize_short_side(img, 25).size == (50, 25)
    assert center_crop(Image.new("RGB", (10, 6)), 8).size == (8, 8)  # padded when smaller


def test_lite_scaling_equals_documented_formula(default_model):
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(default_model.normalize(x), (x * 255 - 127) / 128, atol=1e-5)
