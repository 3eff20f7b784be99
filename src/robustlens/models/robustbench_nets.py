"""CIFAR-10 networks as RobustBench defines them, so its checkpoints load as they are and compute what its
leaderboard measured ([0, 1] inputs; normalisation, where a model has one, is the Classifier's first module):

- ``cifar_wrn28_10``: the TRADES / RobustBench WideResNet-28-10 (``conv1``, ``block1..3.layer.i`` with ``bn1``,
  ``conv1``, ``bn2``, ``conv2``, ``convShortcut``, Carmon et al.'s unused ``sub_block1``, ``bn1``, ``fc``);
- ``cifar_preactresnet18_rb``: RobustBench's ``PreActResNet(PreActBlock, [2, 2, 2, 2])`` (Wong2020Fast): the
  projection shortcut sees the block's raw input and there is no BN-ReLU before ``linear`` — unlike
  ``cifar_preactresnet18`` (same key names, shortcut on the activated input, final ``bn``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustlens.models._registry import register_model
from robustlens.models.classifier import Classifier
from robustlens.models.small import CIFAR10_CLASSES, CIFAR_CONFIG, PreActBlock, build_small


class RBPreActBlock(PreActBlock):
    """:class:`~robustlens.models.small.PreActBlock` (same modules, same keys) whose shortcut takes the raw input
    rather than the pre-activated one, as RobustBench's PreActResNet-18 computes it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.shortcut(x) if hasattr(self, "shortcut") else x
        return self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x)))))) + skip


class RBPreActResNet18(nn.Module):
    """(N, 3, 32, 32) -> (N, classes): ``conv1``, ``layer1..4`` (two blocks each), 4×4 average pool, ``linear``."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        cin = 64
        for i, w in enumerate((64, 128, 256, 512)):
            setattr(self, f"layer{i + 1}", nn.Sequential(RBPreActBlock(cin, w, 1 if i == 0 else 2),
                                                         RBPreActBlock(w, w, 1)))
            cin = w
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        for i in range(1, 5):
            out = getattr(self, f"layer{i}")(out)  # (N, 512, 4, 4) after layer4
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


class WideBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3×3(stride)-BN-ReLU-conv3×3, plus the input (or its 1×1
    projection when the width or stride changes); (N, cin, H, W) -> (N, cout, H/stride, W/stride)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.equal = cin == cout and stride == 1
        self.convShortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(a))))
        # The projection sees the activated input, the identity the raw input (as in TRADES' WideResNet).
        return out + (x if self.convShortcut is None else self.convShortcut(a))


class WideStage(nn.Module):
    """``n`` blocks, the first changing width/stride; keys ``layer.<i>.*``."""

    def __init__(self, n: int, cin: int, cout: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(*[WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                                     for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-width for 32×32 inputs: (N, 3, 32, 32) in [0, 1] -> (N, classes) logits. ``sub_block1``
    adds an unused copy of the first stage (present in Carmon et al.'s checkpoints)."""

    def __init__(self, depth: int = 28, widen: int = 10, num_classes: int = 10, sub_block1: bool = False):
        super().__init__()
        n = (depth - 4) // 6
        w = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, w[0], 3, padding=1, bias=False)
        self.block1 = WideStage(n, w[0], w[1], 1)
        if sub_block1:
            self.sub_block1 = WideStage(n, w[0], w[1], 1)
        self.block2 = WideStage(n, w[1], w[2], 2)
        self.block3 = WideStage(n, w[2], w[3], 2)
        self.bn1 = nn.BatchNorm2d(w[3])
        self.fc = nn.Linear(w[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))  # (N, 64·widen, 8, 8)
        x = F.adaptive_avg_pool2d(F.relu(self.bn1(x)), 1).flatten(1)  # (N, 64·widen)
        return self.fc(x)


@register_model("cifar_wrn28_10", "CIFAR-10 WideResNet-28-10 (TRADES/RobustBench layout, with sub_block1), 32px, [0,1]",
                default_weights="none")
def cifar_wrn28_10(weights: str, seed: int) -> Classifier:
    return build_small("cifar_wrn28_10", lambda: WideResNet(28, 10, sub_block1=True), CIFAR_CONFIG, weights, seed,
                  class_names=CIFAR10_CLASSES)


@register_model("cifar_preactresnet18_rb", "CIFAR-10 PreAct ResNet-18 as RobustBench defines it (Wong2020Fast), "
                "32px, [0,1]", default_weights="none")
def cifar_preactresnet18_rb(weights: str, seed: int) -> Classifier:
    return build_small("cifar_preactresnet18_rb", RBPreActResNet18, CIFAR_CONFIG, weights, seed,
                  class_names=CIFAR10_CLASSES)
