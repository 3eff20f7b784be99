"""The one engine: optimise an input of a fixed model (:func:`optimize`), with its pieces — threat models,
objectives, parameterisations, transforms and speed settings."""

from robustlens.optim.engine import OptimizeResult, optimize
from robustlens.optim.speed import Speed
from robustlens.optim.threat import ThreatModel, make_threat

__all__ = ["OptimizeResult", "Speed", "ThreatModel", "make_threat", "optimize"]
