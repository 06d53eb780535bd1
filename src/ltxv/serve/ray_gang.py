"""One worker on K devices of one node: every job runs on all K ranks, its video tokens split over them
(:mod:`ltxv.parallel`). Rank 0 runs the worker loop; ranks 1..K-1 follow it.

The ranks stay in lockstep through the process group itself (broadcasts from rank 0): before each job rank 0 sends
the request, and at every progress event of ``Pipeline.generate`` (text, every denoising step, upsample, every
decoded block: the same points on every rank, since every rank runs the same pipeline on the same request) it sends
whether to go on. So when the worker loop stops a job at an event (cancelled, lease lost, the service stopping),
every rank stops at that same event, and no rank is left waiting in a collective the others never enter. A rank that
fails on its own (a device fault) breaks the group: the supervisor (:class:`ltxv.serve.ray_workers.RayWorkers`)
then restarts the whole gang, and the job comes back through its lease.
"""

from __future__ import annotations

import logging
from typing import Any

import torch.distributed as dist

log = logging.getLogger(__name__)


class _Abort(Exception):
    """Rank 0 stopped the job at this event."""


def _send(group: dist.ProcessGroup, obj: Any) -> None:
    dist.broadcast_object_list([obj], group=group, group_src=0)


def _recv(group: dist.ProcessGroup) -> Any:
    box: list[Any] = [None]
    dist.broadcast_object_list(box, group=group, group_src=0)
    return box[0]


class GangPipeline:
    """Rank 0's pipeline: :meth:`generate` runs the request on every rank; everything else is the pipeline's."""

    def __init__(self, pipe: Any, group: dist.ProcessGroup) -> None:
        self.pipe, self.group = pipe, group

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)

    def generate(self, request: Any, *, callback: Any = None) -> Any:
        _send(self.group, ("run", request))

        def step(event: Any) -> None:
            try:
                if callback is not None:
                    callback(event)
            except BaseException:
                _send(self.group, False)  # the followers stop at this event too
                raise
            _send(self.group, True)

        return self.pipe.generate(request, callback=step)

    def stop(self) -> None:
        """Release the followers (their :func:`follow` returns)."""
        _send(self.group, ("stop", None))


def follow(pipe: Any, group: dist.ProcessGroup) -> int:
    """A follower rank: run every request rank 0 sends, in lockstep, until it says stop; returns how many ran."""
    ran = 0
    while True:
        kind, request = _recv(group)
        if kind == "stop":
            return ran

        def step(event: Any) -> None:
            if not _recv(group):
                raise _Abort

        try:
            pipe.generate(request, callback=step)
        except _Abort:
            pass
        except Exception:  # the same request fails the same way on rank 0, which reports it for the job
            log.exception("rank %d: the job failed", dist.get_rank(group))
        ran += 1
