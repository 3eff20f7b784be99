"""Objectives and masks for synthesis: a distance to a reference outside a mask, a channel's activation inside
a mask, and the masks themselves. Masks are (N or 1, 1, H, W) float tensors, 1 inside the region (the hole to
inpaint, the area to paint), 0 outside."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustlens.errors import UserError
from robustlens.optim.objectives import Objective, Outputs


def _per_row(t: torch.Tensor, out: Outputs) -> torch.Tensor:
    return out.select(t.to(out.x.device))


class SquaredErrorOutside(Objective):
    """mean over all C·H·W entries of ((x − reference) ⊙ (1 − mask))²: how far the pixels outside the mask
    moved (the published inpainting / painting penalty; a mean, so its scale does not depend on the image
    size). ``reference`` (N or 1, C, H, W); ``mask`` (N or 1, 1, H, W). Reports ``outside_mse``."""

    def __init__(self, reference: torch.Tensor, mask: torch.Tensor):
        self.reference, self.keep = reference.detach(), (1 - mask.detach().float())

    def __call__(self, out):
        d = (out.x.float() - _per_row(self.reference, out).float()) * _per_row(self.keep, out)
        return d.flatten(1).pow(2).mean(1)

    def report(self, out):
        return {"outside_mse": self(out)}

    def __repr__(self):
        return "SquaredErrorOutside"


class MaskedChannel(Objective):
    """loss = −(mean activation of ``channel`` at ``layer`` over the positions inside ``mask``): the mask
    (N or 1, 1, H, W) is area-resized to the layer's grid and used as weights. A layer without a grid ((N,C),
    or (N,C,1,1) such as ``avgpool``: the published "representation" unit) gives the unit itself. Reports
    ``activation``."""

    def __init__(self, layer: str, channel: int, mask: torch.Tensor):
        self.layer, self.channel, self.mask = layer, int(channel), mask.detach().float()
        self.layers = (layer,)

    def activation(self, out: Outputs) -> torch.Tensor:
        a = out.activations[self.layer]
        if a.dim() == 2:
            a = a[:, :, None, None]
        if a.dim() != 4:
            raise UserError(f"layer {self.layer} has output shape {tuple(a.shape[1:])}: paint needs (C,H,W) or (C,)")
        if not 0 <= self.channel < a.shape[1]:
            raise UserError(f"layer {self.layer} has {a.shape[1]} channels; channel {self.channel} does not exist")
        w = F.interpolate(_per_row(self.mask, out), size=a.shape[-2:], mode="area")  # (N,1,h,w)
        w = w / w.flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        return (a[:, self.channel:self.channel + 1].float() * w).flatten(1).sum(1)

    def __call__(self, out):
        return -self.activation(out)

    def report(self, out):
        return {"activation": self.activation(out)}

    def __repr__(self):
        return f"MaskedChannel({self.layer}:{self.channel})"


def box_mask(size: int | tuple[int, int], top: int, left: int, height: int, width: int) -> torch.Tensor:
    """(1,1,H,W) mask, 1 on the box rows top..top+height−1, columns left..left+width−1."""
    h, w = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1 or top < 0 or left < 0 or top + height > h or left + width > w:
        raise UserError(f"box top={top} left={left} height={height} width={width} does not fit in {h}x{w} px")
    m = torch.zeros(1, 1, h, w)
    m[..., top:top + height, left:left + width] = 1
    return m


def random_box_masks(n: int, size: int, *, fraction: float = 60 / 224,
                     generator: torch.Generator) -> torch.Tensor:
    """(n,1,S,S) masks of one square box each, side round(fraction·S) (the published 60 px at 224), placed
    uniformly at random."""
    side = max(1, round(fraction * size))
    masks = torch.zeros(n, 1, size, size)
    corners = torch.randint(0, size - side + 1, (n, 2), generator=generator)
    for i, (t, left) in enumerate(corners.tolist()):
        masks[i, :, t:t + side, left:left + side] = 1
    return masks


def check_masks(masks: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``masks`` as (N or 1, 1, H, W) float in {0,1} matching ``images`` (N,C,H,W); (H,W) and (1,H,W) are
    accepted. Raises UserError on a shape mismatch or an empty mask."""
    m = masks.float()
    while m.dim() < 4:
        m = m.unsqueeze(0)
    if m.shape[1] != 1 or m.shape[-2:] != images.shape[-2:] or m.shape[0] not in (1, images.shape[0]):
        raise UserError(f"mask of shape {tuple(masks.shape)} does not fit images of shape {tuple(images.shape)}")
    m = (m > 0.5).float()
    if bool((m.flatten(1).sum(1) == 0).any()):
        raise UserError("a mask is empty: mark the region with white (1) pixels")
    return m


def fill_mean(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Pixels inside the mask replaced by the per-channel mean of the pixels outside it (per image)."""
    keep = 1 - masks
    mean = (images * keep).sum((2, 3), keepdim=True) / keep.sum((2, 3), keepdim=True).clamp_min(1)
    return images * keep + mean * masks


def centre_hole(size: int) -> torch.Tensor:
    """(1,1,S,S) mask of a centre box of side 60/224 of the image (the published hole size), 1 = hole."""
    side = max(1, round(size * 60 / 224))
    top = (size - side) // 2
    return box_mask(size, top, top, side, side)


def line_drawing(x: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) in [0,1] → a grey line drawing (N,3,H,W): 1 − Sobel edge strength, scaled by its 98th
    percentile (dark lines on white)."""
    from robustlens.explain import sobel_edges

    mag = sobel_edges(x)[:, None]                                             # (N,1,H,W)
    mag = mag / mag.flatten(1).quantile(0.98, dim=1).clamp_min(1e-6).view(-1, 1, 1, 1)
    return (1 - mag.clamp(0, 1)).expand(-1, 3, -1, -1).contiguous()
