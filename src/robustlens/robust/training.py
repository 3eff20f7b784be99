"""Adversarial training and robust fine-tuning: standard, PGD-AT (Madry et al.), fast AT (FGSM with a random
start, Wong et al.) and TRADES (Zhang et al.), with checkpoints that resume exactly.

Data: a uint8 tensor of preprocessed images (N,C,S,S) and labels (N,) (see
:func:`robustlens.robust.datasets.preload`), decoded once. Augmentation (random crop with zero padding and
horizontal flip) is done on batches of tensors.

Determinism and resuming: everything random in step ``s`` (the epoch's permutation, the augmentation, the
attack's random start, dropout) is drawn from generators seeded by ``(seed, epoch)`` or ``(seed, s)``, and the
learning rate is a function of ``s``. A checkpoint therefore only needs the weights, the optimiser's buffers
and ``s``: a run killed and resumed with ``resume=True`` takes the same steps as an uninterrupted one.

Checkpoints (``out/checkpoint.safetensors``): the network under ``model.``, the optimiser's per-parameter
buffers under ``optim.<param index>.<name>``, the global torch RNG state under ``rng.torch``, and a JSON header
(``format``, ``step``, ``epoch``, the :class:`TrainConfig`, the optimiser's hyper-parameters, the scheduler
position, the last metrics). Written atomically every ``checkpoint_every`` steps and at each epoch's end;
``out/metrics.jsonl`` gets one line per logged step and per epoch; ``out/model.safetensors`` holds the final
weights in the format the zoo loads (``--weights out/model.safetensors``).

Under ``torchrun`` the model is wrapped in DistributedDataParallel (gloo on CPU, nccl on CUDA); each rank takes
every K-th example of each global batch (``batch_size`` is the global batch), attacks its share, and the
gradients are averaged. Only rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from robustlens.checks import count, finite_all, positive
from robustlens.errors import UserError
from robustlens.models.checkpoints import read_metadata, save_weights
from robustlens.optim.steps import madry_step_size
from robustlens.robust.distributed import Context, all_reduce_sum, barrier

METHODS = ("standard", "pgd", "fast", "trades")
SCHEDULES = ("onecycle", "cosine", "constant")
CHECKPOINT_FORMAT = "robustlens-train-checkpoint/1"


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters. ``eps``/``step_size`` in [0,1] pixel units; ``step_size`` None means
    2.5·ε/steps (PGD), 1.25·ε (fast AT) or ε/4 (TRADES). ``schedule``: ``onecycle`` (linear warm-up over the
    first ``warmup`` fraction of steps to ``lr``, then linear decay to 0), ``cosine`` or ``constant``.
    ``eps_ramp``: fraction of steps over which ε grows linearly from 0 (0 = none)."""

    method: str = "standard"
    norm: str = "linf"
    eps: float = 0.0
    steps: int = 7
    step_size: float | None = None
    trades_beta: float = 6.0
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    warmup: float = 0.2
    eps_ramp: float = 0.0
    crop_padding: int = 0
    flip: bool = False
    seed: int = 0

    def __post_init__(self):
        finite_all(eps=self.eps, step_size=self.step_size, trades_beta=self.trades_beta, lr=self.lr,
                   momentum=self.momentum, weight_decay=self.weight_decay, warmup=self.warmup,
                   eps_ramp=self.eps_ramp)
        positive("step_size", self.step_size)
        for name in ("eps", "trades_beta", "momentum", "weight_decay"):
            positive(name, getattr(self, name), allow_zero=True)
        count("crop_padding", self.crop_padding, minimum=0)
        if self.method not in METHODS:
            raise UserError(f"unknown training method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        if self.method != "standard" and not self.eps > 0:
            raise UserError(f"--method {self.method} needs --eps > 0")
        if self.epochs < 1 or self.batch_size < 1 or self.steps < 1:
            raise UserError("epochs, batch size and attack steps must be at least 1")
        if not (self.lr > 0 and 0 <= self.warmup < 1 and 0 <= self.eps_ramp <= 1):
            raise UserError("need lr > 0, 0 <= warmup < 1 and 0 <= eps_ramp <= 1")

    def attack_steps(self) -> int:
        return {"standard": 0, "pgd": self.steps, "fast": 1, "trades": self.steps}[self.method]

    def attack_step_size(self, eps: float) -> float:
        if self.step_size is not None:
            return self.step_size
        return {"pgd": madry_step_size(eps, self.steps), "fast": 1.25 * eps, "trades": eps / 4}.get(self.method, 0.0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def learning_rate(cfg: TrainConfig, step: int, total: int) -> float:
    """The learning rate at global step ``step`` of ``total``."""
    frac = step / max(total, 1)
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "cosine":
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * frac))
    if frac < cfg.warmup:
        return cfg.lr * frac / cfg.warmup
    return cfg.lr * max(0.0, (1 - frac) / (1 - cfg.warmup))


def eps_at(cfg: TrainConfig, step: int, total: int) -> float:
    if cfg.eps_ramp <= 0:
        return cfg.eps
    return cfg.eps * min(1.0, (step + 1) / (cfg.eps_ramp * total))


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs and platforms)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(_seed(seed, 1, epoch)))


def augment(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding ``crop_padding``) and horizontal flip of a batch (N,C,H,W); parameters are
    drawn for the whole batch from ``gen``."""
    n, _, h, w = x.shape
    if cfg.crop_padding > 0:
        p = cfg.crop_padding
        padded = F.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=gen)
        rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None].expand(n, x.shape[1], h, w + 2 * p)
        x = padded.gather(2, rows)
        cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :].expand(n, x.shape[1], h, w)
        x = x.gather(3, cols)
    if cfg.flip:
        flip = torch.rand(n, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


def _trades_adversary(model: nn.Module, x: torch.Tensor, cfg: TrainConfig, eps: float, seed: int) -> torch.Tensor:
    """TRADES' inner maximisation: PGD on KL(p(x) ‖ p(x')) from x + 0.001·N(0, 1), via the engine."""
    from robustlens.optim.engine import optimize
    from robustlens.optim.objectives import Lambda
    from robustlens.optim.threat import make_threat

    with torch.no_grad():
        p_clean = F.softmax(model(x), dim=1)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    start = x + 0.001 * torch.randn(x.shape, generator=gen, device=x.device)

    def neg_kl(out):
        logp = F.log_softmax(out.logits, dim=1)
        pc = out.rows(p_clean)
        return -(pc * (pc.clamp_min(1e-12).log() - logp)).sum(1)

    res = optimize(model, x, Lambda(neg_kl, name="-KL"), threat=make_threat(cfg.norm, eps), steps=cfg.steps,
                   step_size=cfg.attack_step_size(eps), start=start, seed=seed, progress=False, history=False)
    return res.x


def _adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, eps: float,
                 seed: int) -> torch.Tensor:
    """The training inputs of one step (the clean batch for standard training)."""
    from robustlens.recipes.attacks import pgd

    if cfg.method == "standard":
        return x
    if cfg.method == "trades":
        model.eval()
        try:
            return _trades_adversary(model, x, cfg, eps, seed)
        finally:
            model.train()
    return pgd(model, x, y, norm=cfg.norm, eps=eps, step_size=cfg.attack_step_size(eps),
               steps=cfg.attack_steps(), random_start=True, seed=seed)


# --- checkpoints ------------------------------------------------------------------------------------------

def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = v
            else:
                scalars[f"{idx}.{name}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = v
    for key, v in meta.get("scalars", {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(path: Path, net: nn.Module, opt: torch.optim.Optimizer, meta: dict) -> Path:
    """Write a training checkpoint (see the module docstring), atomically."""
    tensors = {f"model.{k}": v for k, v in net.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_tensors(opt)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    return save_weights(tensors, path, {**meta, "format": CHECKPOINT_FORMAT, "optimizer": opt_meta})


def load_checkpoint(path: Path, net: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Restore weights, optimiser and RNG from a training checkpoint; returns its metadata."""
    from safetensors.torch import load_file

    from robustlens.models.checkpoints import load_into

    meta = read_metadata(path)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not a robustlens training checkpoint")
    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise UserError(f"cannot read checkpoint {path}: {e}") from None
    load_into(net, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, source=str(path))
    _restore_optimizer(opt, {k: v for k, v in tensors.items() if k.startswith("optim.")}, meta["optimizer"])
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    return meta


# --- the loop ---------------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    steps: int
    epochs: int
    seconds: float
    resumed_from: int | None
    final: dict
    model_path: Path | None


def _log(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """Drop records logged after ``step`` (written after the checkpoint a run resumes from)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


def train(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    *,
    out: Path,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
    val_robust: int = 0,
    resume: bool = False,
    checkpoint_every: int = 0,
    log_every: int = 50,
    ctx: Context = Context(),
    progress: bool = False,
    max_steps: int | None = None,
    extra_metadata: dict | None = None,
) -> TrainResult:
    """Train ``model`` (a zoo :class:`~robustlens.models.Classifier`, in place) on uint8 ``images`` (N,C,S,S) and
    ``labels``. ``val``: uint8 images and labels for clean accuracy after each epoch, and robust accuracy
    (PGD-10, the training norm and ε) on the first ``val_robust`` of them. ``max_steps`` stops early (as if
    killed) after that many global steps, without the final files. Returns a summary; files in ``out``."""
    from tqdm.auto import tqdm

    device = ctx.device
    n = len(labels)
    per_epoch = n // cfg.batch_size
    if per_epoch < 1:
        raise UserError(f"{n} training examples are fewer than one batch of {cfg.batch_size}")
    if cfg.batch_size % ctx.world_size:
        raise UserError(f"--batch-size {cfg.batch_size} must be divisible by the {ctx.world_size} processes")
    total = per_epoch * cfg.epochs
    net = model.net
    model.to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.momentum > 0)
    out = Path(out)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out / "checkpoint.safetensors", out / "metrics.jsonl"
    start, resumed_from = 0, None
    if resume and ckpt_path.is_file():
        meta = load_checkpoint(ckpt_path, net, opt)
        saved = TrainConfig.from_dict(meta["train_config"])
        if saved != cfg:
            diff = {k: (v, getattr(cfg, k)) for k, v in saved.to_dict().items() if getattr(cfg, k) != v}
            raise UserError(f"--resume: {ckpt_path} was written with other settings (saved vs now: {diff})")
        if meta.get("num_examples") != n:
            raise UserError(f"--resume: the checkpoint was trained on {meta.get('num_examples')} examples, not {n}")
        start = resumed_from = int(meta["step"])
        if ctx.is_main:
            _truncate_log(log_path, start)
    elif ctx.is_main and log_path.exists():
        log_path.unlink()
    model.to(device)
    trainee = net
    if ctx.distributed:
        trainee = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    base_meta = {"model": getattr(model, "name", type(net).__name__), "train_config": cfg.to_dict(),
                 "num_examples": n, "steps_per_epoch": per_epoch, "total_steps": total,
                 "world_size": ctx.world_size, **(extra_metadata or {})}
    t0 = time.perf_counter()
    bar = tqdm(total=total, initial=start, desc=f"train ({cfg.method})", disable=not (progress and ctx.is_main),
               dynamic_ncols=True)
    running = torch.zeros(3, dtype=torch.float64)  # loss sum, correct on the training inputs, count
    epoch_running = torch.zeros(3, dtype=torch.float64)
    if resumed_from is not None and ctx.is_main:  # saved summed over ranks: rank 0 carries them on
        running = torch.tensor(meta.get("running", [0.0] * 3), dtype=torch.float64)
        epoch_running = torch.tensor(meta.get("epoch_running", [0.0] * 3), dtype=torch.float64)
    last_metrics: dict = {}
    stop = total if max_steps is None else min(total, max_steps)
    step = start
    epoch = step // per_epoch
    perm = epoch_permutation(n, cfg.seed, epoch)
    while step < stop:
        e, b = divmod(step, per_epoch)
        if e != epoch:
            epoch, perm = e, epoch_permutation(n, cfg.seed, e)
        idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
        gen = torch.Generator().manual_seed(_seed(cfg.seed, 2, step))
        x = augment(images[idx].float().div_(255.0), cfg, gen)[ctx.rank::ctx.world_size].to(device)
        y = labels[idx][ctx.rank::ctx.world_size].to(device)
        torch.manual_seed(_seed(cfg.seed, 3, step, ctx.rank))
        lr = learning_rate(cfg, step, total)
        for g in opt.param_groups:
            g["lr"] = lr
        eps = eps_at(cfg, step, total)
        x_train = _adversarial(model, x, y, cfg, eps, _seed(cfg.seed, 4, step, ctx.rank))
        if cfg.method == "trades":
            logits_clean = trainee(model.normalize(x))
            logits = trainee(model.normalize(x_train))
            kl = F.kl_div(F.log_softmax(logits, 1), F.softmax(logits_clean, 1), reduction="batchmean")
            loss = F.cross_entropy(logits_clean, y) + cfg.trades_beta * kl
        else:
            logits = trainee(model.normalize(x_train))
            loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            batch = torch.tensor([float(loss) * len(y), float((logits.argmax(1) == y).sum()), len(y)],
                                 dtype=torch.float64)
            running += batch
            epoch_running += batch
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{float(running[0] / running[2]):.3f}", acc=f"{float(running[1] / running[2]):.3f}",
                        lr=f"{lr:.3g}")
        epoch_end = step % per_epoch == 0
        if (log_every and step % log_every == 0) or epoch_end:
            tot = all_reduce_sum(epoch_running if epoch_end else running, ctx)
            last_metrics = {"step": step, "epoch": step / per_epoch, "lr": lr, "eps": eps,
                            "train_loss": float(tot[0] / tot[2]), "train_accuracy": float(tot[1] / tot[2]),
                            "seconds": round(time.perf_counter() - t0, 2)}
            running.zero_()
            if epoch_end:
                epoch_running.zero_()
            if epoch_end and val is not None:
                last_metrics.update(_validate(model, val, cfg, val_robust, ctx))
                model.train()
            if ctx.is_main:
                _log(log_path, {**last_metrics, "kind": "epoch" if epoch_end else "step"})
        if epoch_end or (checkpoint_every and step % checkpoint_every == 0):
            sums = all_reduce_sum(running, ctx).tolist(), all_reduce_sum(epoch_running, ctx).tolist()
            if ctx.is_main:
                save_checkpoint(ckpt_path, net, opt, {**base_meta, "step": step, "epoch": step // per_epoch,
                                                      "scheduler": {"step": step, "lr": lr}, "metrics": last_metrics,
                                                      "running": sums[0], "epoch_running": sums[1]})
            barrier(ctx)
    bar.close()
    model.eval()
    model_path = None
    if step >= total and ctx.is_main:
        model_path = save_weights(net.state_dict(), out / "model.safetensors",
                                  {**base_meta, "format": "robustlens-weights/1", "metrics": last_metrics,
                                   "preprocess": model.config.to_dict(),
                                   "class_wnids": list(getattr(model, "class_wnids", []) or []) or None})
    barrier(ctx)
    return TrainResult(steps=step, epochs=step // per_epoch, seconds=time.perf_counter() - t0,
                       resumed_from=resumed_from, final=last_metrics, model_path=model_path)


def _validate(model: nn.Module, val: tuple[torch.Tensor, torch.Tensor], cfg: TrainConfig, val_robust: int,
              ctx: Context) -> dict:
    from robustlens.robust.datasets import LabelledImages, spread_indices
    from robustlens.robust.evaluate import evaluate_robustness

    images, labels = val
    ds = LabelledImages(model.config, labels.tolist(), pixels=images, description="val")
    eps = [cfg.eps] if cfg.eps > 0 and val_robust > 0 else [0.0]
    clean = evaluate_robustness(model, ds, norm=cfg.norm, eps=[0.0], steps=1, batch_size=256, ctx=ctx)
    out = {"val_accuracy": clean.clean_accuracy}
    if eps[0] > 0:
        sub = ds.subset(spread_indices(len(ds), val_robust))
        r = evaluate_robustness(model, sub, norm=cfg.norm, eps=eps, steps=10, batch_size=100, seed=cfg.seed, ctx=ctx)
        out.update({"val_robust_n": r.n, "val_robust_clean_accuracy": r.clean_accuracy,
                    "val_robust_accuracy": r.robust_accuracy[eps[0]]})
    return out
