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

import contextlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from robustlens.checks import count, finite_all, positive
from robustlens.errors import UserError
from robustlens.models.checkpoints import save_weights
from robustlens.models.classifier import Classifier
from robustlens.optim.speed import PRECISIONS, autocast, channels_last_model, in_format, native_bf16, use_channels_last
from robustlens.robust.averaging import WeightAverage
from robustlens.robust.checkpointing import load_checkpoint, save_checkpoint
from robustlens.robust.distributed import Context, all_reduce_sum, barrier
from robustlens.robust.methods import METHODS, Standard

SCHEDULES = ("onecycle", "cosine", "constant")


def training_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype of a training step for ``precision`` on ``device`` (None: float32)."""
    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        return torch.bfloat16
    return None


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters. ``eps``/``step_size`` in [0,1] pixel units; ``step_size`` None means
    2.5·ε/steps (PGD), 1.25·ε (fast AT) or ε/4 (TRADES). ``schedule``: ``onecycle`` (linear warm-up over the
    first ``warmup`` fraction of steps to ``lr``, then linear decay to 0), ``cosine`` or ``constant``.
    ``eps_ramp``: fraction of steps over which ε grows linearly from 0 (0 = none). ``precision``: ``fp32``,
    ``bf16`` (autocast: convolutions and matmuls in bfloat16, losses and the optimiser's weights in float32) or
    ``auto`` (bf16 where the device runs it natively — AVX512-BF16/AMX CPUs, Ampere+ GPUs —, else fp32; resolved
    on each machine, so a run resumed elsewhere takes that machine's choice). ``ema``: decay of an exponential
    moving average of the weights (:mod:`robustlens.robust.averaging`; 0 = none, e.g. 0.999): validation and
    the final weights use the average."""

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
    precision: str = "auto"
    ema: float = 0.0

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
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        if self.method != "standard" and not self.eps > 0:
            raise UserError(f"--method {self.method} needs --eps > 0")
        if self.epochs < 1 or self.batch_size < 1 or self.steps < 1:
            raise UserError("epochs, batch size and attack steps must be at least 1")
        if not (self.lr > 0 and 0 <= self.warmup < 1 and 0 <= self.eps_ramp <= 1):
            raise UserError("need lr > 0, 0 <= warmup < 1 and 0 <= eps_ramp <= 1")
        if not 0 <= self.ema < 1:
            raise UserError(f"--ema is a decay in [0, 1) (0: no weight average), not {self.ema}")

    def training_method(self) -> Standard:
        """The :mod:`robustlens.robust.methods` object for ``method``."""
        return METHODS[self.method](norm=self.norm, steps=self.steps, step_size=self.step_size, beta=self.trades_beta)

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


def _snapshot_log(snapshot: Path) -> Path:
    """The copy of ``metrics.jsonl`` kept beside a snapshot (the run's history moves with it)."""
    return snapshot.with_name(snapshot.stem + ".metrics.jsonl")


def _truncate_log(path: Path, step: int) -> None:
    """Drop records logged after ``step`` (written after the checkpoint a run resumes from)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


def train(
    model: Classifier,
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
    snapshot: Path | None = None,
) -> TrainResult:
    """Train ``model`` (a zoo :class:`~robustlens.models.Classifier`, in place) on uint8 ``images`` (N,C,S,S) and
    ``labels``. ``val``: uint8 images and labels for clean accuracy after each epoch, and robust accuracy
    (PGD-10, the training norm and ε) on the first ``val_robust`` of them. ``max_steps`` stops early (as if
    killed) after that many global steps, without the final files. ``snapshot``: a compact copy of every
    checkpoint (the compact format of :mod:`robustlens.robust.checkpointing`, half the size; ``metrics.jsonl``
    beside it as ``<name>.metrics.jsonl``) is kept at this path, and a run resumed where ``out`` has no checkpoint starts from it — how a long run moves between
    machines (commit the snapshot, resume it elsewhere). Returns a summary; files in ``out``."""
    from tqdm.auto import tqdm

    run = _Training(model, images, labels, cfg, out=Path(out), ctx=ctx, val=val, val_robust=val_robust,
                    log_every=log_every, checkpoint_every=checkpoint_every, extra_metadata=extra_metadata,
                    snapshot=Path(snapshot) if snapshot else None)
    # channels-last before the DDP wrap in resume()/fresh(): DDP lays out its gradient buckets by the parameters'
    # strides when it is built (built before, every step copied the NHWC grads into NCHW bucket views, warning)
    with channels_last_model(run.net, run.channels_last):
        start = run.resume() if resume else run.fresh()
        stop = run.total if max_steps is None else min(run.total, max_steps)
        with tqdm(total=run.total, initial=start, desc=f"train ({cfg.method})",
                  disable=not (progress and ctx.is_main), dynamic_ncols=True) as bar:
            while run.step < stop:
                lr = run.train_step()
                bar.update(1)
                bar.set_postfix(loss=f"{float(run.running[0] / run.running[2]):.3f}",
                                acc=f"{float(run.running[1] / run.running[2]):.3f}", lr=f"{lr:.3g}")
                run.after_step(lr)
    return run.finish(start)


class _Training:
    """The state of one :func:`train` run: data, model, optimiser, counters; one method per phase."""

    def __init__(self, model: Classifier, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig, *, out: Path,
                 ctx: Context, val, val_robust: int, log_every: int, checkpoint_every: int,
                 extra_metadata: dict | None, snapshot: Path | None = None):
        self.model, self.images, self.labels, self.cfg, self.ctx = model, images, labels, cfg, ctx
        self.val, self.val_robust, self.log_every, self.checkpoint_every = val, val_robust, log_every, checkpoint_every
        self.method = cfg.training_method()
        self.n = len(labels)
        self.per_epoch = self.n // cfg.batch_size
        if self.per_epoch < 1:
            raise UserError(f"{self.n} training examples are fewer than one batch of {cfg.batch_size}")
        if cfg.batch_size % ctx.world_size:
            raise UserError(f"--batch-size {cfg.batch_size} must be divisible by the {ctx.world_size} processes")
        self.total = self.per_epoch * cfg.epochs
        self.net = model.net
        model.to(ctx.device).train()
        # NHWC on the CPU for image-sized inputs (the engine's "auto" rule): ~1.2-1.4x faster train steps of the
        # Imagenette ResNets at 64-128 px with one thread; the weights are saved in the usual layout
        self.channels_last = use_channels_last(self.net, images[:1].to(ctx.device), "auto")
        self.amp = training_dtype(cfg.precision, ctx.device)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
        self.average = WeightAverage(self.net, cfg.ema) if cfg.ema > 0 else None
        self.out = out
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
        self.ckpt_path, self.log_path = out / "checkpoint.safetensors", out / "metrics.jsonl"
        self.snapshot = snapshot
        self.base_meta = {"model": getattr(model, "name", type(self.net).__name__), "train_config": cfg.to_dict(),
                          "num_examples": self.n, "steps_per_epoch": self.per_epoch, "total_steps": self.total,
                          "world_size": ctx.world_size,
                          "compute_dtype": "bfloat16" if self.amp is not None else "float32",
                          **(extra_metadata or {})}
        self.running = torch.zeros(3, dtype=torch.float64)  # loss sum, correct on the training inputs, count
        self.epoch_running = torch.zeros(3, dtype=torch.float64)
        self.last_metrics: dict = {}
        self.step, self.eps = 0, cfg.eps
        self.resumed_from: int | None = None
        self._perm: tuple[int, torch.Tensor] = (-1, torch.empty(0, dtype=torch.long))
        self.t0 = time.perf_counter()
        self.seconds_before = 0.0  # training seconds of the earlier runs this one resumes (all machines)

    def fresh(self) -> int:
        if self.ctx.is_main and self.log_path.exists():
            self.log_path.unlink()
        self._wrap()
        return 0

    def resume(self) -> int:
        """Continue from ``out/checkpoint.safetensors`` if there is one, else from the snapshot if there is one
        (same settings and data only)."""
        path = self.ckpt_path
        if not path.is_file():
            if self.snapshot is None or not self.snapshot.is_file():
                return self.fresh()
            path = self.snapshot
            if self.ctx.is_main and _snapshot_log(path).is_file():
                shutil.copyfile(_snapshot_log(path), self.log_path)
        meta = load_checkpoint(path, self.net, self.opt, self.average)
        saved = TrainConfig.from_dict(meta["train_config"])
        if saved != self.cfg:
            diff = {k: (v, getattr(self.cfg, k)) for k, v in saved.to_dict().items() if getattr(self.cfg, k) != v}
            raise UserError(f"--resume: {path} was written with other settings (saved vs now: {diff})")
        if meta.get("num_examples") != self.n:
            raise UserError(f"--resume: the checkpoint was trained on {meta.get('num_examples')} examples, "
                            f"not {self.n}")
        self.step = self.resumed_from = int(meta["step"])
        self.seconds_before = float(meta.get("seconds_total", 0.0))
        if self.ctx.is_main:  # saved summed over ranks: rank 0 carries them on
            _truncate_log(self.log_path, self.step)
            self.running = torch.tensor(meta.get("running", [0.0] * 3), dtype=torch.float64)
            self.epoch_running = torch.tensor(meta.get("epoch_running", [0.0] * 3), dtype=torch.float64)
        self._wrap()
        return self.step

    def averaged(self):
        """A context in which the network holds the weight average (nothing changes without ``--ema``)."""
        return self.average.swapped_in(self.net) if self.average is not None else contextlib.nullcontext()

    def _wrap(self) -> None:
        self.model.to(self.ctx.device)
        self.trainee = self.net
        if self.ctx.distributed:
            device = self.ctx.device
            self.trainee = nn.parallel.DistributedDataParallel(
                self.net, device_ids=[device.index] if device.type == "cuda" else None)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of the (augmented) global batch of the current step."""
        cfg, ctx = self.cfg, self.ctx
        e, b = divmod(self.step, self.per_epoch)
        if self._perm[0] != e:
            self._perm = (e, epoch_permutation(self.n, cfg.seed, e))
        idx = self._perm[1][b * cfg.batch_size:(b + 1) * cfg.batch_size]
        gen = torch.Generator().manual_seed(_seed(cfg.seed, 2, self.step))
        x = augment(self.images[idx].float().div_(255.0), cfg, gen)[ctx.rank::ctx.world_size].to(ctx.device)
        if self.channels_last:
            x = in_format(x, torch.channels_last)
        return x, self.labels[idx][ctx.rank::ctx.world_size].to(ctx.device)

    def train_step(self) -> float:
        """One optimiser step; returns its learning rate."""
        cfg, ctx, step = self.cfg, self.ctx, self.step
        x, y = self._batch()
        torch.manual_seed(_seed(cfg.seed, 3, step, ctx.rank))
        lr = learning_rate(cfg, step, self.total)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.eps = eps_at(cfg, step, self.total)
        x_train = self.method.inputs(self.model, x, y, self.eps, _seed(cfg.seed, 4, step, ctx.rank), self.amp)
        with autocast(ctx.device, self.amp):
            loss, logits = self.method.loss(self.trainee, self.model, x, x_train, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.average is not None:
            self.average.update(self.net, step)
        with torch.no_grad():
            batch = torch.tensor([float(loss) * len(y), float((logits.argmax(1) == y).sum()), len(y)],
                                 dtype=torch.float64)
            self.running += batch
            self.epoch_running += batch
        self.step += 1
        return lr

    def after_step(self, lr: float) -> None:
        """Log (every ``log_every`` steps and at each epoch's end, with validation) and checkpoint."""
        step, ctx = self.step, self.ctx
        epoch_end = step % self.per_epoch == 0
        if (self.log_every and step % self.log_every == 0) or epoch_end:
            tot = all_reduce_sum(self.epoch_running if epoch_end else self.running, ctx)
            self.last_metrics = {"step": step, "epoch": step / self.per_epoch, "lr": lr, "eps": self.eps,
                                 "train_loss": float(tot[0] / tot[2]), "train_accuracy": float(tot[1] / tot[2]),
                                 "seconds": round(time.perf_counter() - self.t0, 2),
                                 "seconds_total": round(self.seconds_before + time.perf_counter() - self.t0, 2)}
            self.running.zero_()
            if epoch_end:
                self.epoch_running.zero_()
            if epoch_end and self.val is not None:
                with self.averaged():
                    self.last_metrics.update(_validate(self.model, self.val, self.cfg, self.val_robust, ctx))
                self.model.train()
            if ctx.is_main:
                _log(self.log_path, {**self.last_metrics, "kind": "epoch" if epoch_end else "step"})
        if epoch_end or (self.checkpoint_every and step % self.checkpoint_every == 0):
            sums = all_reduce_sum(self.running, ctx).tolist(), all_reduce_sum(self.epoch_running, ctx).tolist()
            if ctx.is_main:
                meta = {**self.base_meta, "step": step, "epoch": step // self.per_epoch,
                        "scheduler": {"step": step, "lr": lr}, "metrics": self.last_metrics,
                        "running": sums[0], "epoch_running": sums[1],
                        "seconds_total": round(self.seconds_before + time.perf_counter() - self.t0, 2)}
                extra = self.average.state_tensors() if self.average is not None else None
                save_checkpoint(self.ckpt_path, self.net, self.opt, meta, extra=extra)
                if self.snapshot is not None:
                    save_checkpoint(self.snapshot, self.net, self.opt, meta, compact=True, extra=extra)
                    if self.log_path.is_file():
                        shutil.copyfile(self.log_path, _snapshot_log(self.snapshot))
            barrier(ctx)

    def finish(self, start: int) -> TrainResult:
        """The final weights (``out/model.safetensors``) when every step ran; with ``--ema`` the network then
        holds the average, as the file does."""
        self.model.eval()
        model_path = None
        done = self.step >= self.total
        if done and self.average is not None:
            self.average.copy_to(self.net)
        if done and self.ctx.is_main:
            model_path = save_weights(self.net.state_dict(), self.out / "model.safetensors",
                                      {**self.base_meta, "format": "robustlens-weights/1",
                                       "metrics": self.last_metrics, "preprocess": self.model.config.to_dict(),
                                       "class_wnids": list(getattr(self.model, "class_wnids", []) or []) or None,
                                       "weights_are": f"exponential moving average, decay {self.cfg.ema}"
                                       if self.average else "the last step"})
        barrier(self.ctx)
        return TrainResult(steps=self.step, epochs=self.step // self.per_epoch, seconds=time.perf_counter() - self.t0,
                           resumed_from=self.resumed_from, final=self.last_metrics, model_path=model_path)


def _validate(model: Classifier, val: tuple[torch.Tensor, torch.Tensor], cfg: TrainConfig, val_robust: int,
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
