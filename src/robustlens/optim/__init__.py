"""The one engine: optimise an input of a fixed model (:func:`optimize`), and its named pieces — threat models,
objectives, step rules and schedules, starts, success criteria, best-iterate tracking, model preparation,
parameterisations, transforms and speed settings."""

from robustlens.optim.criteria import Criterion, Targeted, Untargeted
from robustlens.optim.engine import OptimizeResult, optimize
from robustlens.optim.speed import Speed
from robustlens.optim.starts import AtInput, AtTensor, RandomInThreat
from robustlens.optim.steps import Adam, Constant, Cosine, SteepestStep, madry_step_size
from robustlens.optim.threat import ThreatModel, make_threat

__all__ = ["Adam", "AtInput", "AtTensor", "Constant", "Cosine", "Criterion", "OptimizeResult", "RandomInThreat",
           "Speed", "SteepestStep", "Targeted", "ThreatModel", "Untargeted", "madry_step_size", "make_threat",
           "optimize"]
