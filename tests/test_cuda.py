"""The GPU paths: attacks (float32 and bf16 autocast), evaluation and training on a CUDA device.

Skipped where no CUDA device is present (CI has none); `benchmarks/gpu.sh` runs them on the lent GPU machine.
"""

from __future__ import annotations

import pytest
import torch

from robustlens.models import create_model
from robustlens.recipes.attacks import attack, pgd
from robustlens.robust.distributed import Context
from robustlens.robust.evaluate import evaluate_robustness
from robustlens.robust.training import TrainConfig, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA = torch.device("cuda")


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Random 8-bit images (on the grid, as every image read from a file)."""
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed)) / 255


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_pgd_on_cuda_stays_in_the_ball_and_its_success_is_float32(precision):
    from robustlens.optim import speed

    model = create_model("resnet18", "none").to(CUDA)
    x = images(6, 96).to(CUDA)
    with torch.no_grad():
        y = model(x).argmax(1)
    with speed.use(speed.Speed(precision=precision)):
        adv = pgd(model, x, y, eps=2 / 255, step_size=0.5 / 255, steps=8, early_stop=True, seed=1)
    assert adv.device == x.device
    assert float((adv - x).abs().max()) <= 2 / 255 + 1e-6 and 0 <= float(adv.min()) <= float(adv.max()) <= 1
    with torch.no_grad():
        fooled = model(adv).argmax(1) != y
    assert bool(fooled.any())


def test_attack_on_cuda_reports_float32_success_after_rounding():
    """bf16 autocast on the GPU (ResNet family): every reported success holds in float32 on the 8-bit image."""
    model = create_model("resnet18", "none").to(CUDA)
    x = images(4, 96, seed=2).to(CUDA)
    res = attack(model, x, target=[1, 2, 3, 4], eps=16 / 255, steps=10, progress=False)
    assert res.adversarial.device == x.device
    on_grid = res.adversarial * 255
    assert float((on_grid - on_grid.round()).abs().max()) < 1e-3  # 8-bit values
    with torch.no_grad():
        top1 = model(res.adversarial).argmax(1)
    assert torch.equal(top1 == torch.tensor([1, 2, 3, 4], device=CUDA), res.success)


def test_cpu_and_cuda_agree_in_float32_without_random_start():
    """Same model, images and settings: the attacks' success rates agree (cuDNN's TF32 turned off)."""
    from robustlens.optim import speed

    torch.backends.cudnn.allow_tf32 = False
    try:
        model = create_model("mnist_lenet5", "none", seed=3)
        x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(4))
        with torch.no_grad():
            y = model(x).argmax(1)
        with speed.use(speed.Speed(precision="fp32")):
            a_cpu = pgd(model, x, y, eps=0.02, step_size=0.005, steps=10, random_start=False)
            a_gpu = pgd(model.to(CUDA), x.to(CUDA), y.to(CUDA), eps=0.02, step_size=0.005, steps=10,
                        random_start=False)
        with torch.no_grad():
            s_cpu = (model(a_cpu.to(CUDA)).argmax(1) != y.to(CUDA)).float().mean()
            s_gpu = (model(a_gpu).argmax(1) != y.to(CUDA)).float().mean()
        assert abs(float(s_cpu) - float(s_gpu)) <= 2 / 64
    finally:
        torch.backends.cudnn.allow_tf32 = True


def test_evaluate_and_train_on_cuda(tmp_path):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(128) % 10
    imgs = torch.randint(0, 60, (128, 1, 28, 28), generator=g)
    for i, k in enumerate(labels.tolist()):
        imgs[i, 0, 2 * k + 4: 2 * k + 6, 4:24] = 255
    imgs = imgs.to(torch.uint8)
    model = create_model("mnist_lenet5", "none").to(CUDA)
    cfg = TrainConfig(method="fast", eps=0.1, epochs=3, batch_size=32, lr=0.05)
    train(model, imgs, labels, cfg, out=tmp_path / "run", ctx=Context(device=CUDA))
    assert next(model.parameters()).device.type == CUDA.type
    data = list(zip((imgs.float() / 255).unbind(0), labels.tolist()))
    res = evaluate_robustness(model.eval(), data, eps=[0.1], steps=5, batch_size=64)
    assert res.clean_accuracy > 0.5
