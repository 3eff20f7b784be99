"""Published robust checkpoints: MadryLab's robust ImageNet ResNet-50s and a few RobustBench models, each
downloaded once into the torch hub cache, checked, converted to safetensors and loaded on the CPU.

Each entry is also a model name (``create_model("madry_l2_3")``) and a weights name
(``create_model("resnet50", "madry_l2_3")``), so every command's ``--model``/``--weights`` and the report's
``--robust-model`` take it. ``ROBUSTLENS_PUBLISHED_URL`` (a base URL) replaces the hosts, for mirrors and tests:
the file is then fetched from ``<base>/<filename>``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from robustlens.errors import UserError, unknown
from robustlens.models._registry import register_model
from robustlens.models.architecture import build_architecture
from robustlens.models.classifier import Classifier, Normalize
from robustlens.models.foreign import convert_checkpoint
from robustlens.models.hub import digest_record, download, hub_checkpoints, offline, where_to_put
from robustlens.models.preprocess import IMAGENET_MEAN, IMAGENET_STD

BASE_URL_ENV = "ROBUSTLENS_PUBLISHED_URL"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
NO_NORMALISATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

_MADRY_CITATION = ("Engstrom, Ilyas, Salman, Santurkar, Tsipras. Robustness (Python library), 2019. "
                   "https://github.com/MadryLab/robustness")
_MADRY_LICENCE = "MIT (MadryLab/robustness repository, which publishes the checkpoints)"
_RB_CITATION = "Croce et al. RobustBench: a standardized adversarial robustness benchmark. NeurIPS 2021 D&B. " \
               "arXiv:2010.09670"


def _gdrive(file_id: str) -> str:
    return f"https://drive.usercontent.google.com/download?id={file_id}&export=download&confirm=t"


@dataclass(frozen=True)
class Published:
    """One published checkpoint: where it is (``url``, cached as ``filename``), what it is (``arch``: a zoo
    name; ``dataset``, ``threat``), how inputs in [0, 1] are normalised (``mean``/``std``), its ``licence``,
    ``citation``, ``url_source`` (where the URL was taken from) and ``sha256`` (None where it cannot be known
    before the first download)."""

    name: str
    arch: str
    url: str
    filename: str
    dataset: str
    threat: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    licence: str
    citation: str
    page: str
    url_source: str
    sha256: str | None = None

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}


def _madry(name: str, file_id: str, filename: str, threat: str) -> Published:
    return Published(name=name, arch="resnet50", url=f"https://www.dropbox.com/s/{file_id}/{filename}?dl=1",
                     filename=filename, dataset="imagenet", threat=threat, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                     licence=_MADRY_LICENCE, citation=_MADRY_CITATION,
                     page="https://github.com/MadryLab/robustness#pretrained-models",
                     url_source=f"MadryLab/robustness README.rst, 'Pretrained models' (Dropbox link to {filename}, "
                                "?dl=0 there; ?dl=1 gives the file)")


def _robustbench(name: str, arch: str, file_id: str, dataset: str, threat: str, mean, std, cite: str,
                 repo: str) -> Published:
    licence = f"the authors' ({repo}; not verified here); RobustBench code MIT"
    zoo = "imagenet" if dataset == "imagenet" else "cifar10"
    return Published(name=name, arch=arch, url=_gdrive(file_id), filename=f"robustbench_{name}.pt", dataset=dataset,
                     threat=threat, mean=tuple(mean), std=tuple(std), licence=licence,
                     citation=f"{cite}; via {_RB_CITATION}", page="https://github.com/RobustBench/robustbench",
                     url_source=f"RobustBench robustbench/model_zoo/{zoo}.py, Linf, {name}: 'gdrive_id' {file_id} "
                                "(Google Drive download URL)")


PUBLISHED: dict[str, Published] = {p.name: p for p in [
    _madry("madry_l2_3", "knf4uimlqsi1yz8", "imagenet_l2_3_0.pt", "L2 eps=3.0"),
    _madry("madry_linf_4", "axfuary2w1cnyrg", "imagenet_linf_4.pt", "Linf eps=4/255"),
    _madry("madry_linf_8", "yxn15a9zklz3s8q", "imagenet_linf_8.pt", "Linf eps=8/255"),
    _robustbench("Salman2020Do_R50", "resnet50", "1TmT5oGa1UvVjM3d-XeSj_XmKqBNRUg8r", "imagenet", "Linf eps=4/255",
                 IMAGENET_MEAN, IMAGENET_STD, "Salman et al. Do Adversarially Robust ImageNet Models Transfer Better? "
                 "NeurIPS 2020", "microsoft/robust-models-transfer"),
    _robustbench("Carmon2019Unlabeled", "cifar_wrn28_10", "15tUx-gkZMYx7BfEOw1GY5OKC-jECIsPQ", "cifar10",
                 "Linf eps=8/255", *NO_NORMALISATION, "Carmon et al. Unlabeled Data Improves Adversarial Robustness. "
                 "NeurIPS 2019", "yaircarmon/semisup-adv"),
    _robustbench("Wong2020Fast", "cifar_preactresnet18_rb", "1Re--_lf3jCEw9bnQqGkjw3J7v2tSZKrv", "cifar10",
                 "Linf eps=8/255", CIFAR10_MEAN, CIFAR10_STD, "Wong, Rice, Kolter. Fast is better than free: "
                 "Revisiting adversarial training. ICLR 2020", "locuslab/fast_adversarial"),
]}


def published(name: str) -> Published | None:
    """The entry called ``name`` (exact), or None."""
    return PUBLISHED.get(name)


def standard_counterpart(name: str) -> tuple[str, str] | None:
    """``(model, weights)`` of the standard model to set beside published checkpoint ``name`` (Problem 4(e)(f)):
    torchvision's ImageNet weights of the same architecture for ImageNet entries; None otherwise."""
    p = published(name)
    return (p.arch, "imagenet") if p is not None and p.dataset == "imagenet" else None


def list_published() -> list[dict]:
    """Every entry as a dict (for ``robustlens models --published``), with its cache path and state."""
    import json

    rows = []
    mirror = os.environ.get(BASE_URL_ENV, "")
    for p in PUBLISHED.values():
        raw, converted = _paths(p)
        state = "converted" if converted.is_file() else ("downloaded" if raw.is_file() else "not downloaded")
        record = digest_record(raw)
        recorded = json.loads(record.read_text(encoding="utf-8")).get("sha256") if record.is_file() else None
        rows.append({**p.to_dict(), "cache": str(raw), "state": state, "fetch_url": source_url(p),
                     "fetch_url_source": f"${BASE_URL_ENV} (a mirror)" if mirror else p.url_source,
                     "sha256_recorded": recorded})
    return rows


def source_url(p: Published, base_url: str | None = None) -> str:
    """``p.url``, or ``<base>/<filename>`` when a base URL is given (argument, else ``$ROBUSTLENS_PUBLISHED_URL``)."""
    base = base_url or os.environ.get(BASE_URL_ENV, "")
    return f"{base.rstrip('/')}/{p.filename}" if base else p.url


def _paths(p: Published) -> tuple[Path, Path]:
    raw = hub_checkpoints() / p.filename
    return raw, raw.with_name(Path(p.filename).stem + ".robustlens.safetensors")


def fetch_published(name: str, *, base_url: str | None = None, progress: bool = True) -> Path:
    """The safetensors file of published checkpoint ``name``: downloaded into the torch hub cache (progress bar,
    resumed if interrupted, SHA-256 checked — against the published digest, else the one recorded at the first
    download), then converted once without unpickling code. UserError (one line) offline or on failure."""
    p = published(name)
    if p is None:
        raise unknown("published checkpoint", name, PUBLISHED)
    raw, converted = _paths(p)
    if converted.is_file() and not (raw.is_file() and raw.stat().st_mtime_ns > converted.stat().st_mtime_ns):
        return converted  # (a raw file newer than its conversion is checked and converted again)
    url = source_url(p, base_url)
    if offline() and not raw.is_file():
        raise UserError(f"published checkpoint {name} is not in the torch hub cache and downloads are off: "
                        f"{where_to_put(url, raw)}")
    got = download(url, raw, what=f"published checkpoint {name}", sha256=p.sha256, progress=progress)
    if got.check == "first":
        import sys

        print(f"note: {name} has no published SHA-256; recorded {got.sha256} (first download) in "
              f"{raw.name}.sha256.json and checked from now on", file=sys.stderr)
    try:
        return convert_checkpoint(raw, converted, {"published": name, "url": url, "sha256": got.sha256,
                                                   "arch": p.arch, "mean": list(p.mean), "std": list(p.std)})
    except UserError as e:
        if got.check != "first":
            raise
        raw.unlink()  # a file that is not a checkpoint must not become the trusted first download
        digest_record(raw).unlink(missing_ok=True)
        raise UserError(f"{e}; the download was removed from the cache") from None


def load_published(name: str, arch: str | None = None, *, base_url: str | None = None) -> Classifier:
    """The :class:`Classifier` of published checkpoint ``name`` on the CPU, in eval mode; ``arch`` (if given)
    must be the entry's architecture. Its normalisation is the entry's (so inputs stay in [0, 1])."""
    p = published(name)
    if p is None:
        raise unknown("published checkpoint", name, PUBLISHED)
    if arch is not None and arch != p.arch:
        raise UserError(f"published weights {name} are for the architecture {p.arch}, not {arch}: use "
                        f"--model {p.arch} --weights {name} or --model {name}")
    path = fetch_published(name, base_url=base_url)
    model = build_architecture(p.arch, str(path), 0)
    model.normalize = Normalize(p.mean, p.std)
    model.config = replace(model.config, mean=p.mean, std=p.std)
    model.name, model.weights = name, f"{name} ({p.threat}, {p.dataset}; {p.url})"
    return model.eval()


def _register(p: Published) -> None:
    def builder(weights: str, seed: int) -> Classifier:
        if weights == "published":
            return load_published(p.name)
        return build_architecture(p.arch, weights, seed)

    register_model(p.name, f"published {p.dataset} {p.threat} {p.arch} (downloaded on first use)",
                   default_weights="published")(builder)


for _entry in PUBLISHED.values():
    _register(_entry)
