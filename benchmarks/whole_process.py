"""The whole process, start to exit: ``ltxv generate`` against the reference's ``inference.py`` steps
(``reference_process.py``), the distilled multi-scale recipe on the mid-sized random model of ``end_to_end.py``,
writing an mp4 each. What a user waits for and what the machine must hold: interpreter start, imports, model
loading, text encoding, both passes, the decode and the mp4.

Each run is a fresh process; wall time from spawn to exit, peak RSS from the kernel's ``ru_maxrss`` of that child.
Runs are interleaved (ltxv, reference, ltxv, ...) and the best of ``--repeat`` is reported with every value kept:
on a shared machine one process's time varies from run to run far more than the difference measured.

    python benchmarks/whole_process.py --dtype float32 -r 3 --json wp32.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from end_to_end import PRESET, PROMPT, recipe, write_model

from ltxv.pipelines.request import DEFAULT_NEGATIVE_PROMPT
from ltxv.runtime import capability

HERE = Path(__file__).resolve().parent
# "reference-passive": the reference with ltxv's OpenMP default (runtime/threads.py), to show what that choice alone
# is worth on this machine; the targets compare with the reference as a user runs it.
IMPLS = ("ltxv", "reference", "reference-passive")
ENV = {"reference-passive": {"OMP_WAIT_POLICY": "PASSIVE"}}


def command(impl: str, kit: dict, request: dict, dtype: str, out: Path) -> list[str]:
    if impl == "ltxv":
        args = [sys.executable, "-m", "ltxv", "generate", "--preset", PRESET, "--dtype", dtype, "--device", "cpu"]
        args += [
            "--checkpoint",
            kit["checkpoint"],
            "--upsampler",
            kit["upsampler"],
            "--text-encoder",
            kit["text_encoder"],
        ]
        for key in ("prompt", "negative_prompt", "height", "width", "num_frames", "frame_rate", "seed"):
            args += [f"--{key.replace('_', '-')}", str(request[key])]
        return [*args, "--out", str(out)]
    r = recipe(None)

    def plain(p: object) -> dict:
        kw = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(p).items()}  # type: ignore[call-overload]
        kw.pop("cache", None)  # ltxv's own key
        return {k: v for k, v in kw.items() if v is not None}

    spec = {
        "kit": kit,
        "request": request,
        "dtype": dtype,
        "out": str(out),
        "recipe": {
            "stg_mode": r.stg_mode,
            "downscale_factor": r.downscale_factor,
            "decode_timestep": r.decode_timestep,
            "decode_noise_scale": r.decode_noise_scale,
            "first_pass": plain(r.first_pass),
            "second_pass": plain(r.second_pass),
        },
    }
    return [sys.executable, str(HERE / "reference_process.py"), json.dumps(spec)]


def run_once(cmd: list[str], env: dict[str, str] | None = None, timeout: float | None = None) -> dict:
    """Wall time and peak RSS of one child process (which must exit 0)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = None if timeout is None else t0 + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if deadline is not None and time.perf_counter() > deadline:
            proc.kill()
            raise subprocess.TimeoutExpired(cmd, timeout)  # type: ignore[arg-type]
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[1:3]} exited {proc.returncode}:\n{err[-3000:]}")
    return {"seconds": wall, "peak_rss": usage.ru_maxrss * 1024, "user": usage.ru_utime, "sys": usage.ru_stime}


def run(
    height: int,
    width: int,
    frames: int,
    *,
    dtype: str,
    repeat: int,
    size: str = "mid",
    seed: int = 42,
    impls: tuple[str, ...] = IMPLS,
) -> dict:
    request = {
        "prompt": PROMPT,
        "negative_prompt": DEFAULT_NEGATIVE_PROMPT,
        "height": height,
        "width": width,
        "num_frames": frames,
        "frame_rate": 25.0,
        "seed": seed,
    }
    res: dict = {
        "config": {
            "preset": PRESET,
            "model": size,
            "request": request,
            "dtype": dtype,
            "cpu": capability.cpu_model(),
            "cores": os.cpu_count(),
            "load_before": os.getloadavg(),
        },
        "runs": {i: [] for i in impls},
    }
    with tempfile.TemporaryDirectory(prefix="ltxv-wp-") as tmp:
        kit = write_model(Path(tmp), size, dtype=getattr(torch, dtype))
        for path in (kit["checkpoint"], kit["upsampler"]):  # the file cache warm for every run alike
            Path(path).read_bytes()
        for k in range(repeat):
            for impl in impls:
                out = Path(tmp) / f"{impl}-{k}.mp4"
                env = {**os.environ, **ENV[impl]} if impl in ENV else None
                res["runs"][impl].append(run_once(command(impl.split("-")[0], kit, request, dtype, out), env))
    best = {i: min(rs, key=lambda r: r["seconds"]) for i, rs in res["runs"].items()}
    res["best"] = best
    res["config"]["load_after"] = os.getloadavg()
    for other in ("reference", "reference-passive"):
        if "ltxv" in best and other in best:
            res[f"ltxv_over_{other}"] = {
                "seconds": best["ltxv"]["seconds"] / best[other]["seconds"],
                "peak_rss": min(r["peak_rss"] for r in res["runs"]["ltxv"])
                / min(r["peak_rss"] for r in res["runs"][other]),
            }
    return res


def print_report(res: dict) -> None:
    c = res["config"]
    q = c["request"]
    print(
        f"whole process: {c['preset']} at {q['width']}x{q['height']}x{q['num_frames']}, {c['dtype']}, CPU {c['cpu']} "
        f"({c['cores']} cores), load average {c['load_before'][0]:.1f} -> {c['load_after'][0]:.1f}"
    )
    for impl, runs in res["runs"].items():
        walls = ", ".join(f"{r['seconds']:.2f}" for r in runs)
        rss = ", ".join(f"{r['peak_rss'] / 2**30:.2f}" for r in runs)
        print(f"  {impl:9s} wall {walls} s; peak RSS {rss} GiB")
    if "ltxv_over_reference" in res:
        r = res["ltxv_over_reference"]
        print(
            f"  ltxv / reference: wall {r['seconds']:.2f} (best of each), peak RSS {r['peak_rss']:.2f} (lowest of each)"
        )


def main(argv: list[str] | None = None) -> dict:
    from measure import add_video_size

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_video_size(p, (320, 512, 49))
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    p.add_argument("--size", choices=["mid", "tiny"], default="mid", help="the model (tiny: a CI-sized smoke run)")
    p.add_argument("-r", "--repeat", type=int, default=3)
    p.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS[:2]))
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    res = run(a.height, a.width, a.frames, dtype=a.dtype, repeat=a.repeat, size=a.size, impls=tuple(a.impls))
    print_report(res)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
