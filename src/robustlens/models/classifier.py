"""The wrapper every model comes in: normalisation as the first module, so every model takes images in [0, 1]
(ε is then always in pixel units); :class:`SubsetClassifier` for models whose classes are a subset of ImageNet."""

from __future__ import annotations

import torch
from torch import nn

from robustlens._layout import one_channel_nhwc
from robustlens.models.preprocess import PreprocessConfig


def normalized(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std, keeping a one-channel image in channels-last order when it came in it (see
    :func:`robustlens.optim.speed.in_format`): element-wise ops give such an image NCHW strides back, and the
    network after it would run NCHW. A leaf for ``torch.fx`` (its layout test is data-dependent control flow
    that symbolic tracing cannot follow), so models that start with :class:`Normalize` stay traceable and get
    their BatchNorm-folded copies."""
    out = (x - mean) / std
    if x.dim() == 4 and x.shape[1] == 1 and x.stride(1) == 1 and out.stride(1) != 1:
        out = one_channel_nhwc(out)
    return out


torch.fx.wrap("normalized")


class Normalize(nn.Module):
    """(x - mean) / std per channel; x in [0, 1], shape (N, C, H, W)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalized(x, self.mean, self.std)


class Classifier(nn.Module):
    """A network with its normalisation in front: ``forward(x in [0,1], (N,C,H,W)) -> logits (N, classes)``.

    Layer names are the names inside ``net`` (``layer4``, ``_blocks.3``), see :mod:`robustlens.models.layers`.
    """

    def __init__(
        self,
        net: nn.Module,
        config: PreprocessConfig,
        *,
        name: str,
        weights: str,
        num_classes: int = 1000,
        class_names: tuple[str, ...] | None = None,
    ):
        super().__init__()
        self.normalize = Normalize(config.mean, config.std)
        self.net = net
        self.config = config
        self.name = name
        self.weights = weights
        self.num_classes = num_classes
        self._class_names = class_names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    def class_name(self, index: int) -> str:
        if self._class_names is not None:
            return self._class_names[index]
        if self.num_classes == 1000:
            from robustlens.models.labels import class_name

            return class_name(index)
        return str(index)

    def describe(self) -> dict:
        return {"model": self.name, "weights": self.weights, "num_classes": self.num_classes,
                "preprocess": self.config.to_dict()}


class SubsetClassifier(Classifier):
    """A :class:`Classifier` whose classes are a subset of ImageNet: label k is the ImageNet class with wnid
    ``class_wnids[k]``. Datasets map wnids / ImageNet indices through it (see :mod:`robustlens.robust.datasets`)."""

    def __init__(self, net: nn.Module, config: PreprocessConfig, *, class_wnids: tuple[str, ...], **kw):
        from robustlens.models.labels import imagenet_classes

        by_wnid = {c.wnid: c for c in imagenet_classes()}
        names = tuple(by_wnid[w].name for w in class_wnids)
        super().__init__(net, config, num_classes=len(class_wnids), class_names=names, **kw)
        self.class_wnids = tuple(class_wnids)

    def describe(self) -> dict:
        return {**super().describe(), "class_wnids": list(self.class_wnids)}
