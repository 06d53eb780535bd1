"""Starting the ranks of a sequence-parallel job: from torchrun's environment, or as K local processes.

The backend follows the device: NCCL for CUDA (one GPU per local rank), gloo for the CPU. Nothing here runs at import
time; a process group exists only once :func:`init_from_env` or :func:`run_local` has made it.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def world_size_from_env() -> int:
    """WORLD_SIZE as torchrun sets it (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_device(device: str | None, local_rank: int) -> torch.device:
    """The device of local rank ``local_rank``: its own GPU for CUDA (``cuda`` or None with a GPU present), else the
    CPU."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    d = torch.device(device)
    if d.type == "cuda" and d.index is None:
        d = torch.device("cuda", local_rank)
    return d


def init_group(device: torch.device, rank: int, world_size: int, init_method: str = "env://") -> dist.ProcessGroup:
    """The default process group for ``device``'s backend (NCCL on CUDA, gloo on the CPU)."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", init_method=init_method, rank=rank, world_size=world_size, device_id=device)
    else:
        dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=world_size)
    return dist.group.WORLD  # type: ignore[return-value]


def init_from_env(device: str | None) -> tuple[dist.ProcessGroup | None, torch.device]:
    """Under torchrun (or any launcher that sets RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT): the default process
    group and this rank's device. Already initialised: that group. Launched alone: (None, the device)."""
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        return dist.group.WORLD, rank_device(device, local)  # type: ignore[return-value]
    if world_size_from_env() <= 1:
        return None, rank_device(device, 0) if device is None else torch.device(device)
    missing = [k for k in _TORCHRUN_VARS if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE is set but {', '.join(missing)} not: launch the ranks with torchrun")
    d = rank_device(device, local)
    return init_group(d, int(os.environ["RANK"]), world_size_from_env()), d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RankFn = Callable[..., Any]  # (group, *args) -> a picklable result


def run_local(
    fn: RankFn,
    ranks: int,
    *args: Any,
    device: str = "cpu",
    threads: int | None = None,
    timeout: float | None = None,
) -> list[Any]:
    """Run ``fn(group, *args)`` on ``ranks`` fresh local processes joined in one process group on loopback (gloo on
    the CPU, NCCL with one GPU each for ``device="cuda"``) and return each rank's result, in rank order.

    ``fn`` must be importable by name (a module-level function) and return tensors, numbers, strings, lists and dicts
    of them (read back with ``weights_only``). ``threads``: torch threads per rank (default: the
    cores shared out). A rank that raises stops them all and the error is raised here; past ``timeout`` seconds every
    rank is terminated and TimeoutError raised."""
    threads = threads or max(1, (os.cpu_count() or 1) // ranks)
    with tempfile.TemporaryDirectory(prefix="ltxv-ranks-") as tmp:
        init = f"tcp://127.0.0.1:{free_port()}"
        ctx = mp.start_processes(
            _rank_main,
            args=(fn, ranks, init, device, threads, tmp, args),
            nprocs=ranks,
            join=False,
            start_method="spawn",
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        while not ctx.join(timeout=1.0):  # raises ProcessRaisedException / ProcessExitedException on a failed rank
            if deadline is not None and time.monotonic() > deadline:
                for p in ctx.processes:
                    p.terminate()
                for p in ctx.processes:
                    p.join(10)
                    if p.is_alive():
                        p.kill()
                raise TimeoutError(f"{ranks} ranks of {fn.__name__} did not finish within {timeout} s")
        return [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=True) for r in range(ranks)]


def _rank_main(
    rank: int, fn: RankFn, ranks: int, init: str, device: str, threads: int, tmp: str, args: tuple[Any, ...]
) -> None:
    torch.set_num_threads(threads)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(ranks), LOCAL_WORLD_SIZE=str(ranks))
    group = init_group(rank_device(device, rank), rank, ranks, init)
    try:
        result = fn(group, *args)
        torch.save(result, Path(tmp) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_command(argv: list[str], ranks: int, device: str | None) -> int:
    """``ltxv generate ... --parallel K``: the same command on K fresh local ranks (each finds its process group
    already made, as under torchrun; rank 0 writes the output). Returns the worst exit status."""
    from ltxv.pipelines.request import RequestError

    if ranks < 1:
        raise RequestError(f"--parallel must be at least 1, got {ranks}")
    cuda = device.startswith("cuda") if device else torch.cuda.is_available()
    if cuda and torch.cuda.device_count() < ranks:
        raise RequestError(f"--parallel {ranks} needs {ranks} GPUs, this machine has {torch.cuda.device_count()}")
    return max(run_local(_command_rank, ranks, argv, device="cuda" if cuda else "cpu"))


def _command_rank(group: dist.ProcessGroup, argv: list[str]) -> int:
    from ltxv.cli import main

    return main(argv)


def rank() -> int:
    """This process's rank in the default group (0 when there is none)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
