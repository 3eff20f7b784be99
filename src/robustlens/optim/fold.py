"""The private inference copy that attacks and attributions differentiate (``Speed.fold_bn``): the same function
as the user's eval-mode model up to float rounding, with less memory traffic per forward+backward pass.

Four rewrites of a ``torch.fx`` trace of the model (each measured on the 2-core AVX2 CPU; figures in
``docs/performance.md``):

1. every BatchNorm2d that directly follows a Conv2d is folded into that convolution's weight and bias;
2. explicit "same" zero padding (EfficientNet-Lite's ``static_padding``) moves into the convolution: the padded
   copy of the activation disappears from both passes (:func:`_inline_same_padding`);
3. a ReLU feeding a max-pooling moves after it (bit-identical values and gradients; :func:`_pool_before_relu`);
4. on the CPU in float32, a convolution and the ReLU/ReLU6 after it run as one oneDNN call, with a backward
   that reads the mask from the saved output (:class:`ConvAct`).

The model itself is never changed; :func:`prepared` checks the copy's logits against the model's on a probe
and falls back to the model when they differ or the model cannot be traced.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.autograd.function import once_differentiable

from robustlens.optim.speed import in_format


class _LeafConvTracer(fx.Tracer):
    """Keeps every Conv2d (subclasses such as "same"-padding convolutions included) and BatchNorm2d a leaf."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) or super().is_leaf_module(m, qualname)


def _private_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None,
                  fmt: torch.memory_format) -> nn.Conv2d:
    """A shallow copy of ``conv`` (same class and hyper-parameters, no hooks) with its own parameters."""
    new = copy.copy(conv)
    new._parameters, new._modules = dict(conv._parameters), dict(conv._modules)
    new._forward_hooks, new._forward_pre_hooks = type(conv._forward_hooks)(), type(conv._forward_pre_hooks)()
    new.weight = nn.Parameter(weight.detach().clone().contiguous(memory_format=fmt), requires_grad=False)
    new.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
    return new


def _is_same_padding_conv(conv: nn.Module) -> bool:
    """EfficientNet-Lite's "same" convolution: ``static_padding`` (ZeroPad2d or a no-op) then F.conv2d."""
    return isinstance(conv, nn.Conv2d) and type(conv).__name__ == "Conv2dStaticSamePadding"


def _inline_same_padding(conv: nn.Conv2d) -> None:
    """Move a "same" convolution's explicit zero padding into the convolution, in place on a private copy.

    Per axis (before L, after R): L = R becomes the convolution's own padding (no extra work); R = L + 1
    (stride 2 on an even size) becomes padding R with a zero row/column prepended to the kernel, which reads
    the same pixels: Σ_{d=0..k} w'[d] x[s·i − R + d] = Σ_{d<k} w[d] x[s·i − L + d]. Bit-identical results.
    The larger kernel is used only for depthwise convolutions, which are memory-bound (pad + 3×3 stride-2
    depthwise on 96×112×112, forward+backward: 98 ms → 53 ms as a 4×4); a dense convolution pays for the
    extra taps (EfficientNet-Lite0's stem: 72 ms → 95 ms), so it keeps its explicit padding."""
    if not _is_same_padding_conv(conv):
        return
    pad = getattr(conv, "static_padding", None)
    if not isinstance(pad, nn.ZeroPad2d):
        conv.static_padding = nn.Identity()          # the library's own no-op for 1×1 convolutions
        return
    if tuple(conv.padding) != (0, 0) or tuple(conv.dilation) != (1, 1) or conv.padding_mode != "zeros":
        return
    left, right, top, bottom = (int(v) for v in pad.padding)
    grow, padding = [0, 0], [0, 0]
    for axis, (lo, hi) in enumerate(((top, bottom), (left, right))):
        if hi not in (lo, lo + 1):
            return
        grow[axis], padding[axis] = hi - lo, hi
    depthwise = conv.groups == conv.in_channels == conv.out_channels
    if any(grow) and not depthwise:
        return
    if any(grow):
        w = conv.weight.detach()
        fmt = torch.channels_last if w.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        w = nn.functional.pad(w, (grow[1], 0, grow[0], 0)).contiguous(memory_format=fmt)
        conv.weight = nn.Parameter(w, requires_grad=False)
        conv.kernel_size = (int(w.shape[-2]), int(w.shape[-1]))
    conv.padding = (padding[0], padding[1])
    conv.static_padding = nn.Identity()


# --- convolution + activation in one oneDNN call -----------------------------------------------------------

def _pointwise_op() -> Any:
    """oneDNN's fused convolution + post-op (the kernel inductor uses on the CPU), or None without it."""
    try:
        return torch.ops.mkldnn._convolution_pointwise.default if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


_POINTWISE = _pointwise_op()


def _activation(m: nn.Module) -> tuple[str, list[float]] | None:
    """(oneDNN post-op name, scalars) for a ReLU, ReLU6 or Hardtanh module, else None."""
    if type(m) is nn.ReLU:
        return "relu", []
    if type(m) in (nn.ReLU6, nn.Hardtanh):
        lo, hi = float(m.min_val), float(m.max_val)  # type: ignore[arg-type]
        return ("hardtanh", [lo, hi]) if lo < hi else None
    return None


def _plain_conv(conv: nn.Module) -> bool:
    """Whether ``conv(x)`` is exactly ``F.conv2d(x, weight, bias, stride, padding, dilation, groups)``."""
    if not isinstance(conv, nn.Conv2d) or isinstance(conv.padding, str) or conv.padding_mode != "zeros":
        return False
    return type(conv) is nn.Conv2d or (_is_same_padding_conv(conv)
                                        and isinstance(getattr(conv, "static_padding", None), nn.Identity))


class _ConvActFunction(torch.autograd.Function):
    """y = act(conv(x)) in one oneDNN call; the input gradient only (the weights of a private copy are frozen).
    Backward: ReLU's mask y > 0 and hardtanh's lo < y < hi read the output, which equals reading the
    pre-activation (y = clamp(z) is inside (lo, hi) exactly when z is)."""

    @staticmethod
    def forward(ctx, x, weight, bias, conv: nn.Conv2d, attr: str, scalars: list[float]):
        args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        y = _POINTWISE(x, weight, bias, *args, attr, scalars, "")
        ctx.save_for_backward(x, weight, y)
        ctx.conv_args, ctx.attr, ctx.scalars = args, attr, scalars
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight, y = ctx.saved_tensors
        if ctx.attr == "relu":
            g = torch.ops.aten.threshold_backward(grad, y, 0)
        else:
            g = torch.ops.aten.hardtanh_backward(grad, y, *ctx.scalars)
        padding, stride, dilation, groups = ctx.conv_args
        gx = torch.ops.aten.convolution_backward(g, x, weight, None, stride, padding, dilation, False, [0, 0],
                                                 groups, [True, False, False])[0]
        return gx, None, None, None, None, None


class ConvAct(nn.Module):
    """A convolution and the activation after it. On the CPU in float32 (no autocast, frozen weights) both run
    as one oneDNN call (forward 10–40% faster per pair, bit-identical); elsewhere the two modules as they are."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module, attr: str, scalars: list[float]):
        super().__init__()
        self.conv, self.act = conv, act
        self.attr, self.scalars = attr, scalars

    def activation(self) -> tuple[Any, tuple[float, ...]]:
        """(function, extra arguments) computing the activation out of place: ``fn(z, *args)``."""
        return (torch.relu, ()) if self.attr == "relu" else (nn.functional.hardtanh, tuple(self.scalars))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv.weight
        if (_POINTWISE is not None and x.device.type == "cpu" and x.dim() == 4 and x.dtype == torch.float32
                and w.dtype == torch.float32 and not w.requires_grad and not torch.is_autocast_enabled("cpu")):
            return _ConvActFunction.apply(x, w, self.conv.bias, self.conv, self.attr, self.scalars)
        return self.act(self.conv(x))


def _fuse_activations(gm: fx.GraphModule) -> int:
    """Replace each (plain convolution → ReLU/ReLU6 module) pair whose convolution feeds only the activation by
    one :class:`ConvAct`; returns how many."""
    modules = dict(gm.named_modules())
    fused = 0
    for node in list(gm.graph.nodes):
        act = modules.get(node.target) if node.op == "call_module" else None
        spec = _activation(act) if act is not None else None
        prev = node.args[0] if node.args else None
        if (spec is None or len(node.args) != 1 or node.kwargs or not isinstance(prev, fx.Node)
                or prev.op != "call_module" or len(prev.users) != 1 or len(prev.args) != 1 or prev.kwargs):
            continue
        conv = modules.get(prev.target)
        if conv is None or not _plain_conv(conv):
            continue
        name = f"{prev.target}_act"
        while name in modules:
            name += "_"
        gm.add_submodule(name, ConvAct(conv, act, *spec))  # type: ignore[arg-type]
        modules[name] = gm.get_submodule(name)
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, prev.args)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        gm.graph.erase_node(prev)
        fused += 1
    return fused


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """A plain ReLU of its one argument: the module, ``F.relu``/``torch.relu`` or ``t.relu()`` (in place or not)."""
    if len(node.args) != 1 or set(node.kwargs) - {"inplace"}:
        return False
    if node.op == "call_module":
        return type(modules.get(str(node.target))) is nn.ReLU
    if node.op == "call_function":
        return node.target in (F.relu, torch.relu)
    return node.op == "call_method" and node.target == "relu"


def _pool_before_relu(gm: fx.GraphModule) -> int:
    """Rewrite each ReLU → MaxPool2d pair (the ReLU feeding only the pool, its input feeding only the ReLU) as
    MaxPool2d → ReLU; returns how many.

    max(relu(a), relu(b), …) = relu(max(a, b, …)) because ReLU is non-decreasing, and the gradient goes to the
    same element (the first maximum; a window without a positive element gets none either way), so values and
    gradients are bit-identical, while the ReLU and its backward now touch a quarter of the elements behind a
    2×2 pool: 20% of an MNIST LeNet-5 input-gradient step went to the two ReLUs before their pools."""
    modules = dict(gm.named_modules())
    swapped = 0
    for pool in list(gm.graph.nodes):
        m = modules.get(str(pool.target)) if pool.op == "call_module" else None
        relu = pool.args[0] if pool.args else None
        if (type(m) is not nn.MaxPool2d or m.return_indices or len(pool.args) != 1 or pool.kwargs
                or not isinstance(relu, fx.Node) or len(relu.users) != 1 or not _is_relu(relu, modules)
                or not isinstance(relu.args[0], fx.Node) or len(relu.args[0].users) != 1):
            continue   # (an in-place ReLU whose input is read again must stay where it is)
        with gm.graph.inserting_after(pool):
            new_pool = gm.graph.call_module(str(pool.target), relu.args)
        with gm.graph.inserting_after(new_pool):
            new_relu = gm.graph.call_function(F.relu, (new_pool,))
        pool.replace_all_uses_with(new_relu)
        gm.graph.erase_node(pool)
        gm.graph.erase_node(relu)
        swapped += 1
    return swapped


def _fold(model: nn.Module, fmt: torch.memory_format) -> tuple[fx.GraphModule, int]:
    """(a GraphModule computing ``model`` with its Conv2d→BatchNorm2d pairs folded and its ReLU→MaxPool2d
    pairs swapped, how many of those two rewrites were made). Every Conv2d of the result has private weights in
    ``fmt`` (and its "same" padding inlined); convolutions followed by a ReLU/ReLU6 are fused with it; other
    modules are shared with ``model``."""
    tracer = _LeafConvTracer()
    graph = tracer.trace(model)
    gm = fx.GraphModule(tracer.root, graph)  # new containers, shared leaf modules
    modules = dict(gm.named_modules())
    replace: dict[str, nn.Conv2d] = {}
    for node in list(gm.graph.nodes):
        bn = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(bn, nn.BatchNorm2d):
            continue
        prev = node.args[0] if node.args else None
        if not isinstance(prev, fx.Node) or prev.op != "call_module" or not isinstance(prev.target, str):
            continue
        conv = modules.get(prev.target)
        if (not isinstance(conv, nn.Conv2d) or len(prev.users) != 1 or bn.training or bn.running_mean is None
                or bn.running_var is None or bn.num_features != conv.out_channels or prev.target in replace):
            continue
        dt = torch.promote_types(conv.weight.dtype, torch.float32)  # float64 models fold in float64
        with torch.no_grad():
            scale = torch.rsqrt(bn.running_var.to(dt) + bn.eps)
            if bn.weight is not None:
                scale = scale * bn.weight.to(dt)
            shift = -bn.running_mean.to(dt) * scale
            if bn.bias is not None:
                shift = shift + bn.bias.to(dt)
            w = conv.weight.to(dt) * scale.reshape(-1, 1, 1, 1)
            b = shift if conv.bias is None else conv.bias.to(dt) * scale + shift
        replace[prev.target] = _private_conv(conv, w.to(conv.weight.dtype), b.to(conv.weight.dtype), fmt)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
    folded = len(replace)
    for name, mod in modules.items():  # convolutions without a BatchNorm get private weights too
        if isinstance(mod, nn.Conv2d) and name and name not in replace:
            replace[name] = _private_conv(mod, mod.weight, mod.bias, fmt)
    for name, conv in replace.items():
        _inline_same_padding(conv)
        parent, _, leaf = name.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, leaf, conv)
    folded += _pool_before_relu(gm)
    _fuse_activations(gm)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm, folded


def _signature(model: nn.Module) -> tuple:
    tensors = [*model.parameters(), *model.buffers()]
    return (tuple((id(t), t.data_ptr(), t._version) for t in tensors), tuple(m.training for m in model.modules()))


_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prepared(model: nn.Module, probe: torch.Tensor, *, channels_last: bool) -> nn.Module:
    """A private inference copy of ``model`` (the module docstring) with the convolution weights channels-last
    when asked — or ``model`` itself when that is not possible or not useful: a module in training mode, a
    model ``torch.fx`` cannot trace, nothing to fold or swap (no BatchNorm after a convolution, no ReLU before
    a max-pooling), or outputs on ``probe`` (inputs (N,C,H,W); the first is used) that differ from the model's
    beyond float rounding.

    The model is not changed. The copy is cached per model while the model's parameters, buffers and
    train/eval modes stay the same. Only the output is preserved: hooks on inner layers do not run in it."""
    if any(m.training for m in model.modules()) or probe.dim() != 4:
        return model
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    sig = _signature(model)
    hit = _PREPARED.get(model)
    if hit is not None and hit[0] == sig and hit[1] == fmt:
        return hit[2]
    gm: nn.Module
    try:
        gm, folded = _fold(model, fmt)
        if folded:
            x = probe[:1].detach()
            with torch.no_grad():
                a = model(x.contiguous()).float()
                b = gm(in_format(x, fmt)).float()
            scale = float(a.abs().max()) if a.numel() else 1.0
            if a.shape != b.shape or not torch.allclose(a, b, rtol=1e-3, atol=1e-4 * max(scale, 1.0)):
                folded = 0
    except Exception:  # not traceable by torch.fx (data-dependent control flow, unsupported calls...)
        folded = 0
    if not folded:
        gm = model
    _PREPARED[model] = (sig, fmt, gm)
    return gm
