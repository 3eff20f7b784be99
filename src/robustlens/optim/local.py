"""Re-evaluate a convolutional network after a small window of its input changed, computing only what changed.

Incremental inference (Nakandala et al. 2019, "Incremental and approximate inference for faster occlusion-based
deep CNN explanations"): in a chain of local layers — convolutions, pooling, element-wise activations and
normalisations — a change inside an s×s window of the input changes only a slightly larger window of each
layer's output (the window grown by the kernel and shrunk by the stride). :class:`LocalEvaluator` keeps every
layer's input for the current points, recomputes for a candidate only the changed window of each layer (from a
crop of the cached input with the new values written in), and runs the rest of the network — from the first
layer that is not local, or where the window has grown to most of the map — on the whole map. Exact up to float
rounding (the same sums, taken over a crop).

Square Attack's L∞ proposals change one s×s window per image per query, and from its 500th query on s ≤ 6 on an
MNIST digit: there the LeNet-5 forward pass is dominated by the second convolution, of which a 6×6 window
needs a quarter and a 3×3 window an eighth (a query of 89 digits on the 2-core CPU: 4.1 ms at s = 6 and
3.3 ms at s = 3, against 7.4–7.6 ms for the whole channels-last forward pass).

:meth:`LocalEvaluator.build` accepts a model that ``torch.fx`` traces into a chain (each layer's only user is the
next) starting at the input with a :class:`torch.nn.Conv2d` (zero padding), :class:`torch.nn.MaxPool2d`,
:class:`torch.nn.AvgPool2d` or an element-wise layer, in eval mode, whose chain holds at least half of its multiply-adds, and
returns None for anything else (the caller then runs the model as it is).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode

from robustlens.models.classifier import normalized

# the share of a layer's padded input a crop may cover before the rest is run on whole maps
FULL_SHARE = 0.5
# the least share of the model's multiply-adds (on the probe) its local chain must hold: below it the crops'
# bookkeeping costs more than the chain saves (a ResNet's stem alone: Square L∞ on 7 Imagenette-128 images,
# 150 queries, 5.0-6.0 s with an evaluator against 3.2-3.6 s without)
MIN_LOCAL_SHARE = 0.5
# every cached map is channels-last: a window is then a gather of whole pixels, and oneDNN's convolution and
# max-pooling run channels-last natively
_CL = torch.channels_last
# told the number of images of every incremental query (the audit's cost table counts them: robust/audit/passes.py)
_QUERY_LISTENERS: list[Callable[[int], None]] = []


@contextlib.contextmanager
def listening_to_queries(fn: Callable[[int], None]) -> Iterator[None]:
    """Within the block ``fn(n)`` is called for every :meth:`LocalEvaluator.try_window` of ``n`` images."""
    _QUERY_LISTENERS.append(fn)
    try:
        yield
    finally:
        _QUERY_LISTENERS.remove(fn)

_ELEMENTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
                        nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Softplus, nn.Identity)
_ELEMENTWISE_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.silu, F.gelu, torch.sigmoid, torch.tanh, F.hardswish)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


@dataclass(frozen=True)
class _Window:
    """A local layer: ``fn`` applied to an input padded by ``padding`` with ``pad_value`` (``fn`` pads nothing)."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    pad_value: float

    def reach(self, axis: int) -> int:
        """How far one output reaches into the padded input: (k−1)·d + 1."""
        return (self.kernel[axis] - 1) * self.dilation[axis] + 1


def _window(m: nn.Module) -> _Window | None:
    if type(m) is nn.Conv2d and m.padding_mode == "zeros" and not isinstance(m.padding, str):
        w, b, st, d, g = m.weight, m.bias, m.stride, m.dilation, m.groups
        return _Window(lambda t: F.conv2d(t, w, b, st, 0, d, g), _pair(m.kernel_size), _pair(st),
                       _pair(m.padding), _pair(d), 0.0)
    if type(m) is nn.MaxPool2d and not m.ceil_mode and not m.return_indices:
        k, st, d = _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.dilation)
        return _Window(lambda t: F.max_pool2d(t, k, st, 0, d), k, st, _pair(m.padding), d, float("-inf"))
    if (type(m) is nn.AvgPool2d and not m.ceil_mode and m.divisor_override is None
            and (m.count_include_pad or _pair(m.padding) == (0, 0))):
        k, st = _pair(m.kernel_size), _pair(m.stride or m.kernel_size)
        return _Window(lambda t: F.avg_pool2d(t, k, st, 0), k, st, _pair(m.padding), (1, 1), 0.0)
    return None


def _elementwise(n: fx.Node, gm: fx.GraphModule) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """An out-of-place function for an element-wise node whose only tensor input is its first argument."""
    if n.op == "call_module":
        m = gm.get_submodule(str(n.target))
        if isinstance(m, (nn.Dropout, nn.Dropout2d)) and not m.training:
            return lambda t: t
        if type(m) is nn.BatchNorm2d and not m.training and m.track_running_stats:
            return m
        if type(m) in _ELEMENTWISE_MODULES:
            if not getattr(m, "inplace", False):
                return m
            out_of_place = copy.copy(m)
            vars(out_of_place)["inplace"] = False   # the cache is its input: never write into it
            return out_of_place
        return None
    if n.op == "call_function" and n.target in _ELEMENTWISE_FUNCTIONS and len(n.args) == 1 and not n.kwargs:
        fn = n.target
        return lambda t: fn(t)
    consts = [a for a in n.args[1:] if isinstance(a, fx.Node) and a.op == "get_attr"]
    if n.op == "call_function" and n.target is normalized and not n.kwargs and len(n.args) == 3 and len(consts) == 2:
        mean, std = (_attr(gm, str(a.target)) for a in consts)
        return lambda t: normalized(t, mean, std)
    return None


def _attr(gm: fx.GraphModule, target: str) -> torch.Tensor:
    owner, _, name = target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, name)


@dataclass
class _Group:
    """One local layer (or none, for element-wise layers before the first) and the element-wise ones after it."""

    window: _Window | None
    after: list[Callable[[torch.Tensor], torch.Tensor]]
    in_hw: tuple[int, int] = (0, 0)
    out_hw: tuple[int, int] = (0, 0)

    def padding(self) -> tuple[int, int]:
        return self.window.padding if self.window else (0, 0)

    def pad(self, t: torch.Tensor) -> torch.Tensor:
        ph, pw = self.padding()
        if not ph and not pw:
            return t
        return F.pad(t, (pw, pw, ph, ph), value=self.window.pad_value if self.window else 0.0)

    def apply(self, padded: torch.Tensor) -> torch.Tensor:
        t = self.window.fn(padded) if self.window else padded
        for fn in self.after:
            t = fn(t)
        return t


def _chain(gm: fx.GraphModule) -> tuple[list[_Group], fx.Node] | None:
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        return None
    groups: list[_Group] = []
    cur = inputs[0]
    while True:
        users = list(cur.users)
        if len(users) != 1 or users[0].args[:1] != (cur,):
            break
        n = users[0]
        if n.op == "call_module" and len(n.args) == 1 and not n.kwargs:
            win = _window(gm.get_submodule(str(n.target)))
            if win is not None:
                groups.append(_Group(win, []))
                cur = n
                continue
        fn = _elementwise(n, gm)
        if fn is None:
            break
        if not groups:
            groups.append(_Group(None, []))
        groups[-1].after.append(fn)
        cur = n
    if not any(g.window for g in groups):
        return None
    return groups, cur


def _tail(gm: fx.GraphModule, cut: fx.Node) -> fx.GraphModule | None:
    graph = fx.Graph()
    mapping: dict[fx.Node, fx.Node] = {}
    graph.output(graph.graph_copy(gm.graph, mapping))
    old_input = next(n for n in graph.nodes if n.op == "placeholder")
    with graph.inserting_before(old_input):
        z = graph.placeholder("z")
    mapping[cut].replace_all_uses_with(z)
    tail = fx.GraphModule(gm, graph)
    tail.graph.eliminate_dead_code()
    if old_input.users:
        return None
    tail.graph.erase_node(old_input)
    tail.graph.lint()
    tail.recompile()
    tail.delete_all_unused_submodules()
    return tail


# a crop coordinate that no crop has: the changed row or column is read by no output (e.g. a row that a floor-mode
# pooling drops); its values go to a spare row of the crop buffer
_FAR = 1 << 40


@dataclass
class _Step:
    """One group's geometry for one window size, as tables with a row per window position (top·T_w + left in
    the network's input) of flat :func:`_pixels` offsets within one image: ``at`` the changed part of the
    group's padded input, ``crop`` the part its changed outputs read, ``put`` where in that crop each changed
    pixel lies (:data:`_FAR` where the crop does not read it). A group without a local layer, or one run on
    whole maps, has no crop."""

    at: torch.Tensor
    crop: torch.Tensor | None = None
    put: torch.Tensor | None = None
    crop_hw: tuple[int, int] = (0, 0)
    far: bool = False   # some changed pixel lies outside the crop


@dataclass
class _Plan:
    """How a window of one size travels: ``steps`` for the groups run locally, then either the group
    ``whole_from`` and everything after it on whole maps, or (None) the tail on the whole last map, whose
    changed part ``last`` gives (its ``at``; no crop). ``inp``: the window in the input; ``width``: T_w."""

    inp: torch.Tensor
    steps: list[_Step]
    last: _Step
    whole_from: int | None
    width: int


def _axis_step(starts: list[int], r: int, win: _Window, axis: int, n_out: int
               ) -> tuple[list[list[int]], list[list[int]], list[int], int, int]:
    """For each region start (unpadded) along one axis: the padded coordinates the changed outputs read, the
    crop coordinate of each changed input (or -1), the changed outputs' start; their count and the crop length."""
    reach, st, p = win.reach(axis), win.stride[axis], win.padding[axis]
    r_out = min(n_out, (r - 1 + reach - 1) // st + 1)
    length = (r_out - 1) * st + reach
    crops, puts, outs = [], [], []
    for a in starts:
        o0 = min(max(-((reach - 1 - a - p) // st), 0), n_out - r_out)   # ceil((a + p − reach + 1) / st), clamped
        c0 = o0 * st
        crops.append(list(range(c0, c0 + length)))
        puts.append([a + p + k - c0 if 0 <= a + p + k - c0 < length else -1 for k in range(r)])
        outs.append(o0)
    return crops, puts, outs, r_out, length


def _table(rows: list[list[int]], cols: list[list[int]], width: int, device=None) -> torch.Tensor:
    """(T_h·T_w, r_h·r_w) flat offsets rows[t][i]·width + cols[u][j] (``_FAR`` where either is −1)."""
    r = torch.tensor(rows, dtype=torch.long, device=device)
    c = torch.tensor(cols, dtype=torch.long, device=device)
    flat = r[:, None, :, None] * width + c[None, :, None, :]
    far = (r < 0)[:, None, :, None] | (c < 0)[None, :, None, :]
    return torch.where(far, torch.full_like(flat, _FAR), flat).reshape(r.shape[0] * c.shape[0], -1)


class LocalEvaluator:
    """The logits of a batch of points that differ from the cached ones in one window each (see the module).

    :meth:`reset` caches every layer's input at whole points; :meth:`try_window` gives the logits with a window
    of each point replaced, without caching; :meth:`commit` keeps the last tried windows of some rows;
    :meth:`keep` drops rows. Cached maps are channels-last, so a window is a set of whole pixel rows."""

    def __init__(self, groups: list[_Group], tail: nn.Module):
        self.groups, self.tail = groups, tail
        self._inputs: list[torch.Tensor | None] = []   # each local layer's input, padded
        self._tail_in = torch.empty(0)
        self._plans: dict[int, _Plan] = {}
        self._bases: dict[tuple[int, int], torch.Tensor] = {}
        self._pending: tuple | None = None

    @classmethod
    def build(cls, model: nn.Module, probe: torch.Tensor, *, min_share: float = MIN_LOCAL_SHARE
              ) -> LocalEvaluator | None:
        """An evaluator for ``model`` at inputs shaped like ``probe`` (1,C,H,W), or None where the model is not
        such a chain, its chain holds less than ``min_share`` of the model's multiply-adds, or the chain gives other
        logits than the model on the probe)."""
        if probe.dim() != 4:
            return None
        try:
            gm = fx.symbolic_trace(model)
            found = _chain(gm)
            if found is None:
                return None
            groups, cut = found
            tail = _tail(gm, cut)
            if tail is None:
                return None
            with torch.no_grad(), FlopCounterMode(display=False) as head:
                t = probe
                for g in groups:
                    g.in_hw = (t.shape[-2], t.shape[-1])
                    t = g.apply(g.pad(t))
                    g.out_hw = (t.shape[-2], t.shape[-1])
            with torch.no_grad(), FlopCounterMode(display=False) as rest:
                got = tail(t)
            with torch.no_grad():
                want = model(probe)
        except Exception:  # untraceable or unusual: the caller runs the model as it is
            return None
        local = head.get_total_flops()
        if local < min_share * (local + rest.get_total_flops()):
            return None
        if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max())):
            return None
        return cls(groups, tail)

    # --- whole maps ---------------------------------------------------------------------------------------

    def reset(self, x: torch.Tensor) -> torch.Tensor:
        """Cache the layers' inputs at ``x`` (N,C,H,W); the logits (N,K)."""
        first = self.groups[0].pad(x)
        if self.groups[0].window is not None:   # cached and written into: never x itself
            first = first.clone(memory_format=_CL) if first is x else first.contiguous(memory_format=_CL)
        self._inputs, self._tail_in, logits = self._run(0, first)
        self._bases.clear()
        self._pending = None
        return logits

    def _run(self, start: int, padded: torch.Tensor
             ) -> tuple[list[torch.Tensor | None], torch.Tensor, torch.Tensor]:
        """Every group from ``start`` on whole maps, from that group's padded input: (the groups' padded
        inputs — None for a group without a local layer, whose input is never read again —, the tail's input,
        the logits)."""
        levels: list[torch.Tensor | None] = []
        t = padded
        for i, g in enumerate(self.groups[start:]):
            if i:
                padded = g.pad(t)
                if g.window is not None:
                    padded = padded.contiguous(memory_format=_CL)
            levels.append(padded if g.window is not None else None)
            t = g.apply(padded)
        t = t.contiguous(memory_format=_CL)
        return levels, t, self.tail(t)

    def _base(self, n: int, area: int) -> torch.Tensor:
        """(n,) first :func:`_pixels` row of each image in maps of ``area`` pixels."""
        base = self._bases.get((n, area))
        if base is None:
            base = self._bases[(n, area)] = torch.arange(n, device=self._tail_in.device) * area
        return base

    # --- windows ------------------------------------------------------------------------------------------

    def _plan(self, s: int, device) -> _Plan:
        plan = self._plans.get(s)
        if plan is not None:
            return plan
        h0, w0 = self.groups[0].in_hw
        starts_h, starts_w, r_h, r_w = list(range(h0 - s + 1)), list(range(w0 - s + 1)), s, s

        def spans(starts: list[int], r: int, offset: int = 0) -> list[list[int]]:
            return [[a + offset + k for k in range(r)] for a in starts]

        inp = _table(spans(starts_h, s), spans(starts_w, s), w0, device)
        steps: list[_Step] = []
        for i, g in enumerate(self.groups):
            (ph, pw), wp = g.padding(), g.in_hw[1] + 2 * g.padding()[1]
            step = _Step(_table(spans(starts_h, r_h, ph), spans(starts_w, r_w, pw), wp, device))
            if g.window is not None:
                crops_h, puts_h, starts_h, r_out_h, len_h = _axis_step(starts_h, r_h, g.window, 0, g.out_hw[0])
                crops_w, puts_w, starts_w, r_out_w, len_w = _axis_step(starts_w, r_w, g.window, 1, g.out_hw[1])
                if len_h * len_w >= FULL_SHARE * (g.in_hw[0] + 2 * ph) * wp:
                    plan = self._plans[s] = _Plan(inp, steps, step, i, w0 - s + 1)
                    return plan
                step.crop, step.put = _table(crops_h, crops_w, wp, device), _table(puts_h, puts_w, len_w, device)
                step.far = bool((step.put >= _FAR).any())
                step.crop_hw, r_h, r_w = (len_h, len_w), r_out_h, r_out_w
            steps.append(step)
        last = _Step(_table(spans(starts_h, r_h), spans(starts_w, r_w), self.groups[-1].out_hw[1], device))
        plan = self._plans[s] = _Plan(inp, steps, last, None, w0 - s + 1)
        return plan

    def try_window(self, points: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
        """Logits (B,K) of ``points`` (B,C,H,W), which differ from the cached points at most in a ``size``×``size``
        window at (``top``, ``left``) (B,) each; remembered for :meth:`commit`."""
        plan = self._plan(size, points.device)
        n = len(top)
        for listener in _QUERY_LISTENERS:
            listener(n)
        pos = top * plan.width + left
        # the window's pixels, b-major then row then column: (n·s·s, C)
        region = _pixels(points.contiguous(memory_format=_CL)).index_select(
            0, _index(plan.inp, pos, self._base(n, _area(points))))
        r_hw, regions = (size, size), []
        for i, step in enumerate(plan.steps):
            g, cached = self.groups[i], self._inputs[i]
            regions.append(region)
            if cached is None or step.crop is None or step.put is None:   # element-wise: the window stays put
                t = region.view(n, *r_hw, -1).permute(0, 3, 1, 2)
                region = _pixels(g.apply(t).contiguous(memory_format=_CL))
                continue
            (len_h, len_w), c = step.crop_hw, cached.shape[1]
            buf = cached.new_empty(n * len_h * len_w + step.far, c)   # the crop (and a spare row for _FAR)
            crop = buf[:n * len_h * len_w]
            torch.index_select(_pixels(cached), 0, _index(step.crop, pos, self._base(n, _area(cached))), out=crop)
            put = _index(step.put, pos, self._base(n, len_h * len_w))
            buf.index_copy_(0, put.clamp_max_(n * len_h * len_w) if step.far else put, region)
            out = g.apply(crop.view(n, len_h, len_w, c).permute(0, 3, 1, 2)).contiguous(memory_format=_CL)
            r_hw, region = (out.shape[-2], out.shape[-1]), _pixels(out)
        if plan.whole_from is not None:
            whole = self._inputs[plan.whole_from]
            assert whole is not None   # a group run on whole maps has a local layer
            padded = whole.clone(memory_format=_CL)
            _pixels(padded).index_copy_(0, _index(plan.last.at, pos, self._base(n, _area(padded))), region)
            levels, tail_in, logits = self._run(plan.whole_from, padded)
        else:
            levels, tail_in = [], self._tail_in.clone(memory_format=_CL)
            _pixels(tail_in).index_copy_(0, _index(plan.last.at, pos, self._base(n, _area(tail_in))), region)
            logits = self.tail(tail_in)
        self._pending = (plan, pos, regions, levels, tail_in)
        return logits

    def commit(self, accepted: torch.Tensor) -> None:
        """Keep the last tried windows of the rows where ``accepted`` (B,) bool is set."""
        if self._pending is None:
            raise RuntimeError("commit() needs a try_window() first")
        plan, pos, regions, levels, tail_in = self._pending
        self._pending = None
        rows = accepted.nonzero().squeeze(1)
        if not len(rows):
            return
        n, at = len(pos), pos[rows]
        for cached, step, region in zip(self._inputs, plan.steps, regions):
            if cached is not None:
                _pixels(cached).index_copy_(0, _index(step.at, at, rows * _area(cached)),
                                            region.view(n, -1, region.shape[-1])[rows].flatten(0, 1))
        for cached, level in zip(self._inputs[len(plan.steps):], levels):
            if cached is not None and level is not None:
                cached[rows] = level[rows]
        self._tail_in[rows] = tail_in[rows]

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the cached points ``rows`` (an index tensor), in that order."""
        self._inputs = [None if t is None else t[rows].contiguous(memory_format=_CL) for t in self._inputs]
        self._tail_in = self._tail_in[rows].contiguous(memory_format=_CL)
        self._bases.clear()
        self._pending = None


def _index(table: torch.Tensor, pos: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Flat :func:`_pixels` rows, image-major: base[b] + table[pos[b], k]."""
    return (table.index_select(0, pos) + base[:, None]).view(-1)


def _area(t: torch.Tensor) -> int:
    return t.shape[-2] * t.shape[-1]


def _pixels(t: torch.Tensor) -> torch.Tensor:
    """A channels-last (N,C,H,W) tensor as an (N·H·W, C) view: one row per pixel."""
    nhwc = t.permute(0, 2, 3, 1)
    if not nhwc.is_contiguous():
        raise ValueError("expected a channels-last tensor")
    return nhwc.view(-1, t.shape[1])
