"""Threading defaults of the ``ltxv`` process, set before torch starts its OpenMP runtime (which reads them once).

``OMP_WAIT_POLICY=PASSIVE``: an OpenMP thread that waits at the end of a parallel region sleeps instead of spinning.
torch's default (libgomp spinning for a while) is right on an idle machine, and badly wrong on a busy one: a worker
thread that the scheduler has taken away makes the others spin at every barrier, on cores that other processes need.
Measured on a shared 2-core AMD EPYC at load 14, mid VAE decode (384x640x49, float32, two threads): 30-52 s one shot
and 18-28 s streamed with PASSIVE, against 12-20 s and 30-35 s at 192x320x25 without it (4.6 s and 4.1 s with it).
The cost where the machine is idle is a futex wake-up per parallel region, microseconds against operations that take
milliseconds. A value the user set is kept.
"""

from __future__ import annotations

import os

DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def process_defaults() -> None:
    """Set :data:`DEFAULTS` where the environment leaves them unset. Call before ``import torch`` (a process that has
    imported torch already keeps what its OpenMP runtime read)."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
