"""Small classifiers: MNIST (advertorch LeNet-5, TRADES SmallCNN), CIFAR-10 (PreAct ResNet-18) and the
project's own Imagenette ResNets, registered in the model registry.

Module names follow the layouts of the published checkpoints, so their state dicts load as they are:

- ``mnist_lenet5``: advertorch's LeNet-5 (``conv1``, ``conv2``, ``linear1``, ``linear2``; 3×3 convolutions);
- ``mnist_smallcnn``: TRADES' SmallCNN (``feature_extractor.conv1..4``, ``classifier.fc1..3``);
- ``cifar_preactresnet18``: a PreAct ResNet-18 with RobustBench's key names (``conv1``,
  ``layer1..4`` of ``PreActBlock`` with ``shortcut.0``, ``bn``, ``linear``);
- ``imagenette_resnet_robust`` / ``imagenette_resnet_standard``: :class:`ImagenetteResNet` trained by this
  project (see ``docs/models.md``); ``imagenette_resnet``: the same architecture, random init by default.

MNIST and CIFAR models take [0, 1] inputs without normalisation; their default weights are ``"none"``
(pass a checkpoint with ``--weights PATH``).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from robustlens.errors import UserError
from robustlens.models._registry import register_model, seeded_init
from robustlens.models.checkpoints import load_weights
from robustlens.models.classifier import Classifier, SubsetClassifier
from robustlens.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessConfig

MNIST_CONFIG = PreprocessConfig(input_size=28, resize_size=28, mean=(0.0,), std=(1.0,), channels=1,
                                notes="MNIST: 1 channel, [0,1], no normalisation")
CIFAR_CONFIG = PreprocessConfig(input_size=32, resize_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                                notes="CIFAR-10: [0,1], no normalisation (RobustBench convention)")
DIGITS = tuple(str(i) for i in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The 10 Imagenette classes in sorted wnid order: label k of an Imagenette model is IMAGENETTE_WNIDS[k].
IMAGENETTE_WNIDS = ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
                    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257")
IMAGENETTE_SIZE = 64


# --- MNIST ------------------------------------------------------------------------------------------------

class LeNet5(nn.Module):
    """advertorch's MNIST LeNet-5: (N,1,28,28) -> (N,10)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.linear1 = nn.Linear(7 * 7 * 64, 200)
        self.relu3 = nn.ReLU()
        self.linear2 = nn.Linear(200, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.linear2(self.relu3(self.linear1(self.flatten(x))))


class SmallCNN(nn.Module):
    """TRADES' MNIST SmallCNN: four 3×3 convolutions (32, 32, 64, 64), two max-pools, three linear layers
    (1024 -> 200 -> 200 -> 10); (N,1,28,28) -> (N,10)."""

    def __init__(self, drop: float = 0.5):
        super().__init__()
        self.feature_extractor = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(1, 32, 3)), ("relu1", nn.ReLU()),
            ("conv2", nn.Conv2d(32, 32, 3)), ("relu2", nn.ReLU()), ("maxpool1", nn.MaxPool2d(2)),
            ("conv3", nn.Conv2d(32, 64, 3)), ("relu3", nn.ReLU()),
            ("conv4", nn.Conv2d(64, 64, 3)), ("relu4", nn.ReLU()), ("maxpool2", nn.MaxPool2d(2)),
        ]))
        self.classifier = nn.Sequential(OrderedDict([
            ("fc1", nn.Linear(64 * 4 * 4, 200)), ("relu1", nn.ReLU()), ("drop", nn.Dropout(drop)),
            ("fc2", nn.Linear(200, 200)), ("relu2", nn.ReLU()),
            ("fc3", nn.Linear(200, 10)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.feature_extractor(x).flatten(1))


# --- CIFAR-10 ---------------------------------------------------------------------------------------------

class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNet18(nn.Module):
    """PreAct ResNet-18 for 32×32 inputs: (N,3,32,32) -> (N,num_classes)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        widths, cin = (64, 128, 256, 512), 64
        for i, w in enumerate(widths):
            blocks = [PreActBlock(cin, w, 1 if i == 0 else 2), PreActBlock(w, w, 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = w
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        for i in range(1, 5):
            out = getattr(self, f"layer{i}")(out)
        out = F.relu(self.bn(out))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


# --- Imagenette -------------------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    """ResNet basic block (torchvision naming: conv1, bn1, conv2, bn2, downsample.0/1)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + skip)


class ImagenetteResNet(nn.Module):
    """A small ResNet of basic blocks (torchvision layer names: ``conv1``, ``maxpool``, ``layer1..4``,
    ``avgpool``, ``fc``): a 3×3 stride-2 stem, optionally a 3×3 stride-2 max-pooling after it (``stem_pool``),
    then ``blocks[i]`` basic blocks of width ``widths[i]`` per stage (stride 2 from the second stage on);
    (N,3,S,S) -> (N,classes). Without the pooling at 64 px: layer1 32×32, layer2 16×16, layer3 8×8, layer4 4×4;
    with it, every stage is half as large."""

    def __init__(self, num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64, 128),
                 blocks: tuple[int, ...] | None = None, stem_pool: bool = False):
        super().__init__()
        blocks = blocks or (1,) * len(widths)
        if len(blocks) != len(widths):
            raise ValueError(f"{len(widths)} widths but {len(blocks)} block counts")
        self.conv1 = nn.Conv2d(3, widths[0], 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1) if stem_pool else nn.Identity()
        cin = widths[0]
        for i, (w, b) in enumerate(zip(widths, blocks)):
            stage = [BasicBlock(cin, w, 1 if i == 0 else 2)] + [BasicBlock(w, w, 1) for _ in range(b - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
            cin = w
        self.n_stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.n_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.avgpool(x).flatten(1))


IMAGENETTE_CONFIG = PreprocessConfig(input_size=IMAGENETTE_SIZE, resize_size=IMAGENETTE_SIZE,
                                     interpolation="bilinear", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                     notes="Imagenette 10 classes (sorted wnids), whole image resized to 64 px")
IMAGENETTE128_CONFIG = PreprocessConfig(input_size=128, resize_size=128, interpolation="bilinear",
                                        mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                        notes="Imagenette 10 classes (sorted wnids), whole image resized to 128 px")
IMAGENETTE128_WIDTHS = (24, 48, 96, 192)  # 0.69 M parameters; at 128 px layer4 is 8×8


def imagenette128_resnet18_32_net() -> ImagenetteResNet:
    """The long-run pair's architecture (docs/models.md, "Choosing the architecture"): ResNet-18's 2-2-2-2 basic
    blocks at half its widths (32-256), a 3×3 stride-2 stem without max-pooling, so ``layer4`` is 8×8 at 128 px."""
    return ImagenetteResNet(widths=(32, 64, 128, 256), blocks=(2, 2, 2, 2))  # 2.8 M parameters


def imagenette128_net() -> ImagenetteResNet:
    """The 128 px pair's architecture: :class:`ImagenetteResNet` with widths :data:`IMAGENETTE128_WIDTHS`."""
    return ImagenetteResNet(widths=IMAGENETTE128_WIDTHS)


def models_dir() -> Path:
    """Where the project's own weights live: ``$ROBUSTLENS_MODELS``, else the package's ``weights/`` folder
    (package data, so an installed wheel has them too)."""
    env = os.environ.get("ROBUSTLENS_MODELS")
    return Path(env) if env else Path(__file__).resolve().parent / "weights"


def project_weights(name: str) -> Path:
    """The committed weights file of the project model ``name`` (UserError if it is not there)."""
    p = models_dir() / f"{name}.safetensors"
    if not p.is_file():
        raise UserError(f"weights of {name} not found at {p}: set ROBUSTLENS_MODELS to the folder holding "
                        f"{p.name} (the package's robustlens/models/weights/), or pass --weights PATH")
    return p


# --- registration -----------------------------------------------------------------------------------------

def build_small(name: str, make, config: PreprocessConfig, weights: str, seed: int, *, class_names=None,
           class_wnids=None) -> Classifier:
    net = seeded_init(seed, make)
    desc = f"none (random init, seed {seed})"
    if weights != "none":
        info = load_weights(net, weights)
        desc = info.source
    model: Classifier
    if class_wnids is not None:
        model = SubsetClassifier(net, config, class_wnids=class_wnids, name=name, weights=desc)
    else:
        model = Classifier(net, config, name=name, weights=desc, num_classes=10, class_names=class_names)
    return model.eval()


@register_model("mnist_lenet5", "MNIST LeNet-5 (advertorch layout), 28px grey, [0,1] inputs", default_weights="none")
def mnist_lenet5(weights: str, seed: int) -> Classifier:
    return build_small("mnist_lenet5", LeNet5, MNIST_CONFIG, weights, seed, class_names=DIGITS)


@register_model("mnist_smallcnn", "MNIST SmallCNN (TRADES layout), 28px grey, [0,1] inputs", default_weights="none")
def mnist_smallcnn(weights: str, seed: int) -> Classifier:
    return build_small("mnist_smallcnn", SmallCNN, MNIST_CONFIG, weights, seed, class_names=DIGITS)


@register_model("cifar_preactresnet18", "CIFAR-10 PreAct ResNet-18 (RobustBench key names; shortcut on the pre-activated input: RobustBench's own computation is cifar_preactresnet18_rb), 32px, [0,1]",
                default_weights="none")
def cifar_preactresnet18(weights: str, seed: int) -> Classifier:
    return build_small("cifar_preactresnet18", PreActResNet18, CIFAR_CONFIG, weights, seed, class_names=CIFAR10_CLASSES)


@register_model("imagenette_resnet", "Imagenette small ResNet, 64px, 10 classes (random init by default)",
                default_weights="none")
def imagenette_resnet(weights: str, seed: int) -> Classifier:
    return build_small("imagenette_resnet", ImagenetteResNet, IMAGENETTE_CONFIG, weights, seed,
                       class_wnids=IMAGENETTE_WNIDS)


@register_model("imagenette128_resnet", "Imagenette ResNet (widths 24-192), 128px, 10 classes (random init by "
                "default)", default_weights="none")
def imagenette128_resnet(weights: str, seed: int) -> Classifier:
    return build_small("imagenette128_resnet", imagenette128_net, IMAGENETTE128_CONFIG, weights, seed,
                       class_wnids=IMAGENETTE_WNIDS)


@register_model("imagenette128_resnet18_32", "Imagenette ResNet-18 layout at half width (32-256, no stem pooling), "
                "128px, 10 classes (random init by default)", default_weights="none")
def imagenette128_resnet18_32(weights: str, seed: int) -> Classifier:
    return build_small("imagenette128_resnet18_32", imagenette128_resnet18_32_net, IMAGENETTE128_CONFIG, weights,
                       seed, class_wnids=IMAGENETTE_WNIDS)


def _register_project_model(name: str, description: str, make=ImagenetteResNet,
                            config: PreprocessConfig = IMAGENETTE_CONFIG) -> None:
    def builder(weights: str, seed: int) -> Classifier:
        path = str(project_weights(name)) if weights == "project" else weights
        return build_small(name, make, config, path, seed, class_wnids=IMAGENETTE_WNIDS)

    register_model(name, description, default_weights="project")(builder)


_register_project_model("imagenette_resnet_robust",
                        "Imagenette small ResNet, 64px, L2 adversarially trained (eps 1.0) by this project")
_register_project_model("imagenette_resnet_standard",
                        "Imagenette small ResNet, 64px, standard training by this project")
_register_project_model("imagenette128_resnet18_robust",
                        "Imagenette ResNet-18 layout at half width (32-256), 128px, L2 adversarially trained (eps 1.5, "
                        "then 3.0) by this project: the default robust model",
                        imagenette128_resnet18_32_net, IMAGENETTE128_CONFIG)
_register_project_model("imagenette128_resnet18_standard",
                        "Imagenette ResNet-18 layout at half width (32-256), 128px, standard training by this project",
                        imagenette128_resnet18_32_net, IMAGENETTE128_CONFIG)
_register_project_model("imagenette128_resnet_robust",
                        "Imagenette ResNet (24-192), 128px, L2 adversarially trained (eps 1.5) by this project",
                        imagenette128_net, IMAGENETTE128_CONFIG)
_register_project_model("imagenette128_resnet_standard",
                        "Imagenette ResNet (24-192), 128px, standard training by this project",
                        imagenette128_net, IMAGENETTE128_CONFIG)
