"""``robustlens audit``: how robust a model really is, in one resumable run (AutoAttack with its flags, PGD,
intervals, calibration, gradient alignment and the randomisation check, cost, manifest)."""

from robustlens.robust.audit.journal import Journal
from robustlens.robust.audit.runner import AuditPlan, audit_batches
from robustlens.robust.audit.stats import calibration, wilson
from robustlens.robust.audit.summary import summarise

__all__ = ["AuditPlan", "Journal", "audit_batches", "calibration", "summarise", "wilson"]
