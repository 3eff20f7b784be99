"""The independent judge of the perceptual benchmarks: the bundled ImageNet EfficientNet-Lite0 (never trained
against the models it judges) on images upsampled to its input size (bicubic); Imagenette label k is ImageNet
class ``IMAGENETTE_WNIDS[k]``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustlens.models import create_model
from robustlens.models.labels import imagenet_classes


class Judge:
    """EfficientNet-Lite0 on images upsampled to its input size; ``imagenet[k]`` = ImageNet index of label k."""

    def __init__(self, wnids: tuple[str, ...], model: str = "efficientnet_lite0"):
        self.model = create_model(model)
        by_wnid = {c.wnid: c.index for c in imagenet_classes()}
        self.imagenet = torch.tensor([by_wnid[w] for w in wnids])
        self.size = self.model.config.input_size

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """(N,1000) judge probabilities of ``x`` (N,3,S,S) in [0,1]."""
        out = []
        with torch.inference_mode():
            for chunk in x.split(50):
                up = F.interpolate(chunk, size=(self.size, self.size), mode="bicubic", align_corners=False)
                out.append(self.model(up.clamp(0, 1)).float().softmax(1))
        return torch.cat(out)

    def scores(self, x: torch.Tensor, labels: torch.Tensor) -> dict:
        """Judge top-1 / top-5 accuracy for Imagenette ``labels`` (N,), and the Inception-Score-style figure."""
        p = self.probs(x)
        c = self.imagenet[labels.cpu()]
        top5 = (p.topk(5, 1).indices == c[:, None]).any(1)
        return {"top1": float((p.argmax(1) == c).float().mean()), "top5": float(top5.float().mean()),
                "inception_score": inception_score(p), "n": len(x)}


def inception_score(p: torch.Tensor) -> float:
    """exp(mean_x KL(p(y|x) ‖ p(y))) with p(y) the mean of the rows of ``p`` (N, classes)."""
    p = p.double().clamp_min(1e-12)
    marginal = p.mean(0, keepdim=True)
    return float(torch.exp((p * (p.log() - marginal.log())).sum(1).mean()))
