"""Process settings that must be in place before torch is loaded: OpenMP threads that sleep while they wait.

With the OpenMP default (threads spin on the cores between parallel regions), a second busy program on the
same cores slows torch down many times over: the issue measured one 20-step ``robustlens attack`` at 111 s
under a 2-thread load against 15 s with ``OMP_WAIT_POLICY=PASSIVE`` (``benchmarks/busy_machine.py``
measures it again). ``import robustlens`` (the CLI, the API, the report and the app all pass through it)
therefore sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already names a policy — a user's own
setting always wins — and only if torch is not loaded yet (the OpenMP runtime reads it once, when it loads).

The glibc allocator variables (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``) are read when the
process starts, so they could only be applied by re-executing the interpreter; they are not set here (see
docs/performance.md and ``benchmarks/busy_machine.py --variants``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def apply_defaults(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set every entry of :data:`DEFAULTS` the environment does not set yet, if torch is not loaded; returns
    what was set."""
    env = os.environ if environ is None else environ
    if "torch" in sys.modules:
        return {}
    applied = {k: v for k, v in DEFAULTS.items() if k not in env}
    env.update(applied)
    return applied
