"""Success criteria: what "the attack worked" means, and the loss that pursues it, from one place.

The engine's early stop and best-iterate choice, the 8-bit re-check and every report judge success with the
same criterion object (as Foolbox's ``Misclassification`` / ``TargetedMisclassification``):

- :class:`Targeted` ``(classes)``: top-1 == the target;
- :class:`Untargeted` ``(labels)``: top-1 != the label.

``classes`` has one entry per example of the whole batch (or one for all); the engine passes
:class:`~robustlens.optim.objectives.Outputs` whose ``index`` says which examples are present.
"""

from __future__ import annotations

import torch

from robustlens.errors import UserError
from robustlens.optim.objectives import CWMargin, LogProb, NegLogProb, Objective, Outputs

LOSSES = ("ce", "cw")


class Criterion:
    """Base class: ``classes`` (N,) long; ``targeted``; ``__call__(outputs) -> (N,) bool``."""

    targeted: bool = False

    def __init__(self, classes: int | list[int] | torch.Tensor):
        self.classes = torch.as_tensor(classes, dtype=torch.long).reshape(-1)
        if self.classes.numel() == 0:
            raise UserError(f"{type(self).__name__} needs at least one class")

    def __call__(self, out: Outputs) -> torch.Tensor:
        return self.judge(out.logits, out.select(self.classes.to(out.logits.device)))

    def judge(self, logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """(N,) bool from logits (N, K) and the (N,) classes of these rows."""
        raise NotImplementedError

    def on(self, logits: torch.Tensor) -> torch.Tensor:
        """Success of a whole batch's ``logits`` (N, K) (e.g. a final forward pass of the returned images)."""
        c = self.classes.to(logits.device)
        return self.judge(logits, c.expand(logits.shape[0]) if c.numel() == 1 else c)

    def objective(self, loss: str = "ce") -> Objective:
        """The loss to minimise: ``"ce"`` (cross-entropy towards the target / away from the label) or ``"cw"``
        (Carlini-Wagner logit margin)."""
        if loss == "ce":
            return NegLogProb(self.classes) if self.targeted else LogProb(self.classes)
        if loss == "cw":
            return CWMargin(self.classes, targeted=self.targeted)
        raise UserError(f"unknown loss {loss!r}; use one of {', '.join(LOSSES)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.classes.tolist()})"


class Targeted(Criterion):
    """Success: the top-1 class is the target.

    Example:

    ```pycon
    >>> import torch
    >>> from robustlens.optim import Targeted
    >>> criterion = Targeted([1, 2])
    >>> logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 1.0]])
    >>> criterion.on(logits).tolist()  # per example: is the top-1 the target?
    [True, False]

    ```
    """

    targeted = True

    def judge(self, logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return logits.argmax(1) == classes


class Untargeted(Criterion):
    """Success: the top-1 class is not the label.

    Example:

    ```pycon
    >>> import torch
    >>> from robustlens.optim import Untargeted
    >>> criterion = Untargeted([1, 2])
    >>> logits = torch.tensor([[0.0, 5.0, 1.0], [3.0, 0.0, 1.0]])
    >>> criterion.on(logits).tolist()  # per example: is the top-1 no longer the true class?
    [False, True]

    ```
    """

    def judge(self, logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        return logits.argmax(1) != classes
