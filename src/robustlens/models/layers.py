"""Layer introspection and activations by name.

Layer names are those of the wrapped network (``model.net``): ``layer4``, ``layer4.2.conv1``, ``_blocks.10``.
An unknown name raises :class:`UserError` listing close matches. Hooks are always removed afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from robustlens.errors import UserError, unknown


def _root(model: nn.Module) -> nn.Module:
    return getattr(model, "net", model)


def layer_names(model: nn.Module) -> list[str]:
    """Every named sub-module of the network, in definition order."""
    return [n for n, _ in _root(model).named_modules() if n]


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called ``name`` (see module docstring); ``"logits"`` is not a layer name."""
    modules = dict(_root(model).named_modules())
    if name not in modules or not name:
        raise unknown("layer", name, layer_names(model))
    return modules[name]


@contextlib.contextmanager
def capture(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Within the block, each forward pass of ``model`` stores the output of each named layer in the yielded
    dict (a module called several times keeps its last output). Hooks are removed on exit."""
    store: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for n in names:
            mod = resolve_layer(model, n)

            def hook(_m, _inp, out, _n=n):
                store[_n] = out[0] if isinstance(out, (tuple, list)) else out

            handles.append(mod.register_forward_hook(hook))
        yield store
    finally:
        for h in handles:
            h.remove()


def get_activations(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Outputs of the named layers for input ``x`` (N,C,H,W in [0,1]) in one forward pass.

    Example:

    ```pycon
    >>> import torch
    >>> from robustlens.models import create_model, get_activations
    >>> model = create_model("mnist_lenet5", "none", seed=0)
    >>> acts = get_activations(model, torch.rand(2, 1, 28, 28), ["conv1"])
    >>> acts["conv1"].shape
    torch.Size([2, 32, 28, 28])

    ```
    """
    with capture(model, names) as store:
        model(x)
    return {n: store[n] for n in names}


def layer_table(model: nn.Module, input_size: int | None = None) -> list[dict]:
    """One row per named module: name, type, output shape for a single (C, S, S) input (S = the model's input
    size unless given), parameter count. Modules never called in the forward pass get ``None`` as shape."""
    config = getattr(model, "config", None)
    size = input_size or (config.input_size if config else 224)
    channels = config.channels if config else 3
    names = layer_names(model)
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    modules = dict(_root(model).named_modules())
    for n in names:
        def hook(_m, _inp, out, _n=n):
            t = out[0] if isinstance(out, (tuple, list)) else out
            if isinstance(t, torch.Tensor):
                shapes[_n] = tuple(t.shape)

        handles.append(modules[n].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, channels, size, size))
    finally:
        for h in handles:
            h.remove()
    return [{"name": n, "type": type(modules[n]).__name__, "output_shape": list(shapes[n]) if n in shapes else None,
             "params": sum(p.numel() for p in modules[n].parameters(recurse=False))} for n in names]


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The last ``nn.Linear`` in module order (the classifier head) and its name."""
    found = [(n, m) for n, m in _root(model).named_modules() if isinstance(m, nn.Linear)]
    if not found:
        raise ValueError(f"{type(_root(model)).__name__} has no nn.Linear layer")
    return found[-1]


# Early, middle and late layers per architecture, by the model's registry name prefix.
_INVERSION_LAYERS = {
    "efficientnet_lite": ("_blocks.2", "_blocks.7", "_conv_head"),
    "imagenette_resnet": ("layer2", "layer3", "layer4"),
    "imagenette128_resnet": ("layer2", "layer3", "layer4"),
    "resnet": ("layer1", "layer3", "layer4"),
}
_NOT_FEATURE_MAPS = ("ReLU", "ReLU6", "SiLU", "ZeroPad2d", "Identity")


def default_inversion_layers(model: nn.Module, k: int = 3) -> tuple[str, ...]:
    """``k`` layers from early to late to invert (or dream at): a known choice per architecture (its first
    ``k``), else ``k`` evenly spaced top-level blocks (named modules with one dot at most whose output is a
    feature map (N, C, H, W)). Raises :class:`UserError` when the model has fewer such blocks than ``k``."""
    name = str(getattr(model, "name", ""))
    names = set(layer_names(model))
    for prefix, known in _INVERSION_LAYERS.items():
        if name.startswith(prefix) and all(n in names for n in known):
            return known[:k]
    rows = [r for r in layer_table(model) if r["output_shape"] and len(r["output_shape"]) == 4
            and r["name"].count(".") <= 1 and r["type"] not in _NOT_FEATURE_MAPS]
    if len(rows) < k:
        raise UserError(f"{name}: cannot choose {k} layers to invert; name them with --layer")
    if k == 1:
        return (rows[-1]["name"],)
    return tuple(rows[round(i * (len(rows) - 1) / (k - 1))]["name"] for i in range(k))
