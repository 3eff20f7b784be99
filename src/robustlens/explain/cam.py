"""Class-activation maps at a named layer: Grad-CAM (Selvaraju et al. 2017) and Grad-CAM++ (Chattopadhay et al.
2018), upsampled (bilinear) to the input size. Maps are (N,1,H,W), non-negative, unnormalised.

The layer defaults to the model's last convolutional block: of all modules, the one whose 4-D output with a
spatial size above 1×1 is produced last in the forward pass (``layer4`` of a ResNet, the head activation of
EfficientNet-Lite0). A module called several times is read at its last call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustlens.errors import UserError
from robustlens.explain._core import Attribution, TargetSpec, check_images, chunks, resolve_targets, target_scores
from robustlens.models.layers import _root, capture, resolve_layer


def default_layer(model: nn.Module, probe: torch.Tensor) -> str:
    """Name of the last module (in forward order) whose output is (N,C,h,w) with h·w > 1, for input ``probe``."""
    order: list[str] = []
    handles = []
    for name, mod in _root(model).named_modules():
        if not name:
            continue

        def hook(_m, _inp, out, _n=name):
            t = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape[-1] * t.shape[-2] > 1:
                order.append(_n)

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(probe[:1])
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise UserError("this model has no convolutional feature map; Grad-CAM needs a layer with (C,h,w) output")
    return order[-1]


def _layer_gradients(model: nn.Module, layer: str, x: torch.Tensor,
                     targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(activations A (N,K,h,w), ∂f_c/∂A (N,K,h,w)) at ``layer`` in one forward/backward pass."""
    with capture(model, [layer]) as store, torch.enable_grad():
        xi = x.detach().requires_grad_(True)       # gives the graph a leaf even when parameters are frozen
        scores = target_scores(model(xi).float(), targets)                 # (N,)
        act = store[layer]
        if not isinstance(act, torch.Tensor) or act.dim() != 4:
            raise UserError(f"layer {layer!r} outputs {tuple(getattr(act, 'shape', ()))}; Grad-CAM needs (N,C,h,w)")
        (grad,) = torch.autograd.grad(scores.sum(), act)
    return act.detach(), grad


class GradCAM:
    """Grad-CAM: ReLU(Σ_k α_k A_k) with α_k the spatial mean of ∂f_c/∂A_k."""

    name = "gradcam"

    def __init__(self, model: nn.Module, layer: str | None = None, *, batch_size: int = 32):
        self.model = model
        self.layer = layer
        if layer is not None:
            resolve_layer(model, layer)
        self.batch_size = int(batch_size)

    def attribute(self, x: torch.Tensor, target: TargetSpec = None) -> Attribution:
        x = check_images(x)
        t = resolve_targets(self.model, x, target)
        layer = self.layer or default_layer(self.model, x)
        maps = torch.cat([self._attribute(x[s], t[s], layer) for s in chunks(x.shape[0], self.batch_size)])
        return Attribution(self.name, maps, t, info={"layer": layer})

    def _attribute(self, x: torch.Tensor, targets: torch.Tensor, layer: str) -> torch.Tensor:
        act, grad = _layer_gradients(self.model, layer, x, targets)          # (N,K,h,w) each
        cam = F.relu((self._weights(act, grad) * act).sum(1, keepdim=True))  # (N,1,h,w)
        return F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)   # (N,1,H,W)

    def _weights(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return grad.mean(dim=(2, 3), keepdim=True)                           # (N,K,1,1)


class GradCAMPlusPlus(GradCAM):
    """Grad-CAM++: α_k = Σ_ij a_ij^k ReLU(g_ij^k), a = g² / (2g² + Σ_ij A_ij^k · g³) (the closed form for an
    exponential score, as in the paper and pytorch-grad-cam). ``eps`` is added to the denominator (0: the
    formula as published, a zero denominator giving a = 0; pytorch-grad-cam adds 1e-6)."""

    name = "gradcampp"

    def __init__(self, model: nn.Module, layer: str | None = None, *, batch_size: int = 32, eps: float = 0.0):
        super().__init__(model, layer, batch_size=batch_size)
        self.eps = float(eps)

    def _weights(self, act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        g2, g3 = grad.pow(2), grad.pow(3)                                    # (N,K,h,w)
        denom = 2 * g2 + act.sum(dim=(2, 3), keepdim=True) * g3 + self.eps
        a = torch.where(grad != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g2))
        return (a * F.relu(grad)).sum(dim=(2, 3), keepdim=True)              # (N,K,1,1)
