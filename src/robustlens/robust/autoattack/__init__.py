"""AutoAttack (Croce & Hein 2020): APGD-CE, APGD-T (targeted DLR), FAB-T and Square, the per-example worst
case over them, and flags for evaluations that gradient masking may fool."""

from robustlens.robust.autoattack.apgd import APGDStep, apgd_ce, apgd_t
from robustlens.robust.autoattack.fab import fab_t
from robustlens.robust.autoattack.flags import Flag
from robustlens.robust.autoattack.losses import DLR, TargetedDLR, dlr_loss, dlr_loss_targeted
from robustlens.robust.autoattack.runner import AutoAttackResult, autoattack, plan
from robustlens.robust.autoattack.square import square

__all__ = ["APGDStep", "AutoAttackResult", "DLR", "Flag", "TargetedDLR", "apgd_ce", "apgd_t", "autoattack",
           "dlr_loss", "dlr_loss_targeted", "fab_t", "plan", "square"]
