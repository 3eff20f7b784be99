"""The audit's figures for one model, from its journalled units (:mod:`.runner`): the AutoAttack evaluation
exactly as :func:`robustlens.robust.autoattack.evaluation.evaluate_autoattack` summarises it (worst case over
smaller ε, breakdown, per-example attack, flags), Wilson 95% intervals on every accuracy, calibration clean and
under attack, PGD, and the cost."""

from __future__ import annotations

import torch

from robustlens.robust.audit.journal import Journal
from robustlens.robust.audit.runner import AuditPlan
from robustlens.robust.audit.stats import accuracy, calibration
from robustlens.robust.autoattack.evaluation import COUNT_KEYS, _summarise
from robustlens.robust.distributed import Context
from robustlens.robust.evaluate import batches_of


class Records:
    """The journalled records of model ``key`` on the batches of a dataset of ``n`` examples."""

    def __init__(self, journal: Journal, key: str, n: int, p: AuditPlan):
        self.journal, self.key, self.p = journal, key, p
        self.batches = batches_of(n, p.batch_size)
        self.n = n

    def get(self, unit: str, b: int, attack: str | None = None, i: int | None = None) -> dict:
        key = f"{self.key}/{unit}/b{b}" if attack is None else f"{self.key}/aa/e{i}/b{b}/{attack}"
        record = self.journal.read(key)
        if record is None:
            raise RuntimeError(f"audit unit {key} is missing from the journal")
        return record


def _codes(r: Records, labels: torch.Tensor) -> tuple[torch.Tensor, list[list[float]], list[list[bool]]]:
    """Per-ε example codes as evaluate_autoattack's (1 robust, 2 clean-wrong, 3+j broken by attack j), and per ε
    the confidence and correctness at the AutoAttack point of that ε (the breaking point, else the clean image)."""
    eps, names = r.p.eps, [a for a, _ in r.p.attacks]
    codes = torch.ones(len(eps), r.n, dtype=torch.float64)
    conf = [[0.0] * r.n for _ in eps]
    ok = [[False] * r.n for _ in eps]
    for b, ids in enumerate(r.batches):
        clean = r.get("clean", b)
        for i in range(len(eps)):
            for k, g in enumerate(ids):
                conf[i][g], ok[i][g] = clean["conf"][k], clean["pred"][k] == int(labels[g])
                if not ok[i][g]:
                    codes[i, g] = 2.0
            for j, name in enumerate(names):
                rec = r.get("aa", b, name, i)
                for row, c in zip(rec["broke"], rec["conf"]):
                    codes[i, ids[row]] = 3.0 + j
                    conf[i][ids[row]], ok[i][ids[row]] = c, False
    return codes, conf, ok


def _cost(r: Records) -> dict:
    """Seconds and passes summed over the journalled units (so a resumed run reports the whole work)."""
    names = [a for a, _ in r.p.attacks]
    per: dict[str, dict] = {k: {"seconds": 0.0, "forward": 0, "backward": 0, "incremental": 0}
                            for k in ["clean", *names, "pgd", "checks"]}

    def add(part: str, rec: dict) -> None:
        per[part]["seconds"] += rec["seconds"]
        per[part]["forward"] += rec["passes"]["forward"]
        per[part]["backward"] += rec["passes"]["backward"]
        per[part]["incremental"] += rec["passes"].get("incremental", 0)  # journals before this count: none

    for b in range(len(r.batches)):
        for part in ("clean", "pgd", "checks"):
            add(part, r.get(part, b))
        for i in range(len(r.p.eps)):
            for name in names:
                add(name, r.get("aa", b, name, i))
    aa = sum(per[a]["seconds"] for a in names)
    total = {k: sum(v[k] for v in per.values()) for k in ("seconds", "forward", "backward", "incremental")}
    return {"parts": per, "total": total, "autoattack_seconds": aa,
            "autoattack_images_per_second": r.n * len(r.p.eps) / aa if aa > 0 else None}


def summarise(journal: Journal, key: str, dataset, p: AuditPlan, *, training: bool, manifest: dict) -> dict:
    """Every figure of one model (JSON-ready)."""
    n = len(dataset)
    r = Records(journal, key, n, p)
    labels = torch.as_tensor([int(v) for v in dataset.labels])
    codes, conf, ok = _codes(r, labels)
    counts = {k: 0 for k in COUNT_KEYS}
    for b in range(len(r.batches)):
        rec = r.get("checks", b)
        for k in COUNT_KEYS:
            counts[k] += int(rec[k])
    names = [a for a, _ in p.attacks]
    ev = _summarise(codes, counts, eps=p.eps, names=names, norm=p.norm, training=training, seconds=0.0,
                    ctx=Context(), dataset=dataset, manifest=manifest)
    out = ev.to_dict()
    out.pop("seconds")
    out["clean"] = accuracy(ev.clean_correct, n)
    out["autoattack"] = [{"eps": e, "robust": accuracy(rc, n),
                          "after": {a: accuracy(c, n) for a, c in ra.items()}}
                         for e, rc, ra in zip(p.eps, ev.robust_correct, ev.robust_after)]
    pgd = [sum(r.get("pgd", b)["robust"][i] for b in range(len(r.batches))) for i in range(len(p.eps))]
    out["pgd"] = {"steps": p.pgd_steps, "step_size": p.pgd_step_sizes(), "restarts": p.pgd_restarts,
                  "start": p.pgd_start, "random_start": p.pgd_start == "random",
                  "robust": [{"eps": e, **accuracy(c, n)} for e, c in zip(p.eps, pgd)]}
    clean_conf = [c for b in range(len(r.batches)) for c in r.get("clean", b)["conf"]]
    clean_ok = [bool(v) for v in (codes[0] != 2).tolist()]
    out["calibration"] = {"bins": 15, "clean": calibration(clean_conf, clean_ok),
                          "under_attack": [{"eps": e, **calibration(conf[i], ok[i])} for i, e in enumerate(p.eps)]}
    out["cost"] = _cost(r)
    return out
