"""Process settings that must be in place before torch is loaded: OpenMP threads that sleep while they wait.

With the OpenMP default (threads spin on the cores between parallel regions), a second busy program on the
same cores slows torch down many times over: the issue measured one 20-step ``robustlens attack`` at 111 s
under a 2-thread load against 15 s with ``OMP_WAIT_POLICY=PASSIVE`` (``benchmarks/busy_machine.py``
measures it again). ``import robustlens`` (the CLI, the API, the report and the app all pass through it)
therefore sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already names a policy — a user's own
setting always wins — and only if torch is not loaded yet (the OpenMP runtime reads it once, when it loads).

The glibc allocator: by default glibc hands every freed block above its mmap threshold (a few MB, adapting)
back to the kernel and trims the heap top above 128 kB, so each forward/backward pass of a small model maps,
faults in and unmaps its activation buffers again; up to ~45% of CPU time went to the kernel. Raising both
thresholds to 1 GiB keeps those buffers in the heap for reuse: a LeNet-5 input-gradient step on 1000 MNIST
digits went from 1.9 s to 0.9 s (one thread). The environment variables ``MALLOC_MMAP_THRESHOLD_`` /
``MALLOC_TRIM_THRESHOLD_`` do this but are read only at process start; ``mallopt`` sets the same two
parameters at run time, so :func:`tune_allocator` calls it (glibc only) unless the environment already sets
either variable or ``ROBUSTLENS_MALLOPT=0``. The cost: up to 1 GiB of freed memory may stay with the process
instead of going back to the system (``docs/performance.md``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
MALLOC_THRESHOLD = 1 << 30  # bytes, for both the mmap and the trim threshold
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
allocator_tuned = False  # set by tune_allocator (recorded by the benchmarks' machine description)


def apply_defaults(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set every entry of :data:`DEFAULTS` the environment does not set yet, if torch is not loaded; returns
    what was set."""
    env = os.environ if environ is None else environ
    if "torch" in sys.modules:
        return {}
    applied = {k: v for k, v in DEFAULTS.items() if k not in env}
    env.update(applied)
    return applied


def tune_allocator(environ: MutableMapping[str, str] | None = None) -> bool:
    """Raise glibc's mmap and trim thresholds to :data:`MALLOC_THRESHOLD` with ``mallopt`` (see the module doc);
    returns whether it did. Does nothing off glibc, when the environment sets ``MALLOC_MMAP_THRESHOLD_`` or
    ``MALLOC_TRIM_THRESHOLD_`` (the user's choice wins), or when ``ROBUSTLENS_MALLOPT=0``."""
    env = os.environ if environ is None else environ
    if env.get("ROBUSTLENS_MALLOPT", "1") == "0" or "MALLOC_MMAP_THRESHOLD_" in env or "MALLOC_TRIM_THRESHOLD_" in env:
        return False
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    global allocator_tuned
    try:
        libc = ctypes.CDLL("libc.so.6")
        allocator_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_THRESHOLD)) and \
            bool(libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_THRESHOLD))
    except (OSError, AttributeError):
        return False
    return allocator_tuned
