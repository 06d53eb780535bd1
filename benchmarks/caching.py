"""Step caching: transformer time saved against quality lost, on one model, per cache setting.

For every (prompt, seed) the uncached video is the reference; each cache setting runs the same request and reports:

* ``speedup``: transformer time uncached / cached (every transformer call timed, the cache's own work included);
* ``ideal``: 1 / (1 - the block compute saved), what the speed-up would be if time followed the skipped blocks;
* ``psnr``: the decoded video against the uncached one, per frame on [0, 1], averaged (TeaCache's protocol), and
  the worst frame; ``latent_err``: ||z - z_ref|| / ||z_ref|| of the final latents;
* ``fewer_steps_psnr``: the equal-compute baseline: the uncached recipe with the cached run's full-compute share of
  the steps (dev recipes: ``round(N * (1 - saved))`` steps; fixed schedules: the reused steps dropped), against the
  same reference. A cache setting that does not beat it is not worth having.

Recipes: ``dev`` (one pass, ``--steps`` steps, CFG ``--cfg``: where caching pays) and ``distilled`` (the 0.9.8
distilled multi-scale recipe, 7 + 3 steps). Models: a checkpoint (``--checkpoint`` and friends; the trained demo model
makes the quality numbers mean something) or ``--model mid|tiny`` (random weights: mechanics and timings only).

    python benchmarks/caching.py --model mid --recipe dev --specs fbc:0.1 fbc:0.2 static:2,27,2 --json c.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ltxv.pipelines.generate import Pipeline, load_pipeline
from ltxv.pipelines.presets import get_preset
from ltxv.pipelines.request import DEFAULT_NEGATIVE_PROMPT, GenerationRequest, PassSettings, Recipe
from ltxv.runtime import capability

DEV_SPECS = ("fbc:0.05", "fbc:0.1", "fbc:0.15", "fbc:0.2", "static:3,26,2", "static:3,26,3")
DISTILLED_SPECS = ("static:1,4,2", "static:1,4,4", "fbc:0.05,warmup=1", "fbc:0.1,warmup=1")
PROMPTS = ("a red circle moving left", "a blue square standing still")


def recipe(kind: str, steps: int, cfg: float, base: Recipe | None) -> Recipe:
    """``dev``: one pass of ``steps`` steps with CFG (no STG: the constant-batch case); ``distilled``: the 0.9.8
    distilled preset without its STG block list (its scale is 0, and block 42 is not in a small model)."""
    if kind == "distilled":
        r = get_preset("ltxv-2b-0.9.8-distilled")
        strip = lambda p: dataclasses.replace(p, skip_block_list=None)  # noqa: E731
        return dataclasses.replace(r, first_pass=strip(r.first_pass), second_pass=strip(r.second_pass))
    first = PassSettings(num_inference_steps=steps, guidance_scale=cfg, stg_scale=0.0, rescaling_scale=1.0)
    base = base or Recipe(decode_timestep=0.05, decode_noise_scale=0.025)
    return dataclasses.replace(base, pipeline_type="base", first_pass=first, second_pass=None)


class TimedCalls:
    """Times every transformer call of ``pipe`` (the cache included), per request; the cache's report passes on."""

    def __init__(self, pipe: Pipeline) -> None:
        self.seconds = 0.0
        self.calls = 0
        original = pipe.transformer_call

        def transformer_call(request: GenerationRequest, i: int) -> Callable[..., torch.Tensor]:
            inner = original(request, i)
            return _Timed(self, inner)

        pipe.transformer_call = transformer_call  # type: ignore[method-assign]

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0


class _Timed:
    def __init__(self, clock: TimedCalls, inner: Any) -> None:
        self.clock, self.inner = clock, inner
        if inner is not None and callable(getattr(inner, "report", None)):
            self.report = inner.report

    def __call__(self, call: Any) -> torch.Tensor:
        _sync(call.tokens.device)
        t0 = time.perf_counter()
        out = call.run() if self.inner is None else self.inner(call)
        _sync(out.device)
        self.clock.seconds += time.perf_counter() - t0
        self.clock.calls += 1
        return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def psnr_frames(video: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(mean, min) over frames of 20 log10(1 / rmse) on [0, 1]; 100 dB for an exact frame."""
    mse = (video.float() - ref.float()).pow(2).flatten(1).mean(1)
    db = [100.0 if m < 1e-10 else 10 * math.log10(1.0 / m) for m in mse.tolist()]
    return sum(db) / len(db), min(db)


def fewer_steps(r: Recipe, report: Any) -> Recipe:
    """The equal-compute baseline of a cached run: per pass, the uncached recipe with the reused share of its steps
    removed (a fixed schedule loses the reused steps; a step count shrinks by the saved share)."""
    passes = []
    for p, rep in zip(r.passes, report.passes):
        if p.timesteps is not None:
            drop = set(rep.reused_steps)
            passes.append(
                dataclasses.replace(p, timesteps=tuple(t for i, t in enumerate(p.timesteps) if i not in drop))
            )
        else:
            n = max(1, round(p.num_inference_steps * (1 - rep.compute_saved)))
            passes.append(dataclasses.replace(p, num_inference_steps=n))
    return dataclasses.replace(r, first_pass=passes[0], second_pass=passes[1] if len(passes) > 1 else None)


def run(
    pipe: Pipeline,
    r: Recipe,
    specs: tuple[str, ...],
    *,
    size: tuple[int, int, int],
    prompts: tuple[str, ...],
    seeds: tuple[int, ...],
    repeat: int = 1,
) -> dict:
    """Every spec on every (prompt, seed); times are best of ``repeat`` (uncached and cached runs interleaved)."""
    clock = TimedCalls(pipe)
    h, w, f = size
    rows: dict[str, list[dict]] = {spec: [] for spec in specs}
    base_times = []
    for prompt in prompts:
        for seed in seeds:
            request = GenerationRequest(
                prompt, DEFAULT_NEGATIVE_PROMPT, height=h, width=w, num_frames=f, seed=seed, frame_rate=25.0, recipe=r
            )

            def timed(req: GenerationRequest) -> tuple[Any, float]:
                clock.reset()
                out = pipe.generate(req)
                return out, clock.seconds

            ref, t_ref = timed(request)
            t_refs = [t_ref]
            for spec in specs:
                cached_req = dataclasses.replace(request, cache=spec)
                out, t = timed(cached_req)
                ts = [t]
                for _ in range(repeat - 1):  # interleaved: uncached, cached, uncached, ...
                    t_refs.append(timed(request)[1])
                    ts.append(timed(cached_req)[1])
                mean, worst = psnr_frames(out.video, ref.video)
                baseline = pipe.generate(dataclasses.replace(request, recipe=fewer_steps(r, out.cache)))
                rows[spec].append(
                    {
                        "prompt": prompt,
                        "seed": seed,
                        "seconds": min(ts),
                        "uncached_seconds": min(t_refs),
                        "speedup": min(t_refs) / min(ts),
                        "saved": out.cache.compute_saved,
                        "ideal": out.cache.ideal_speedup,
                        "psnr": mean,
                        "psnr_min": worst,
                        "latent_err": float((out.latents - ref.latents).norm() / ref.latents.norm()),
                        "fewer_steps_psnr": psnr_frames(baseline.video, ref.video)[0],
                        "fewer_steps": [
                            len(p.timesteps) if p.timesteps else p.num_inference_steps
                            for p in fewer_steps(r, out.cache).passes
                        ],
                        "reused": [list(p.reused_steps) for p in out.cache.passes],
                        "partial": [list(p.partial_steps) for p in out.cache.passes],
                    }
                )
            base_times.append(min(t_refs))
    summary = {}
    for spec, rs in rows.items():
        summary[spec] = {
            k: (sum(x[k] for x in rs) / len(rs)) for k in ("speedup", "ideal", "saved", "psnr", "fewer_steps_psnr")
        } | {"psnr_worst": min(x["psnr_min"] for x in rs), "speedup_worst": min(x["speedup"] for x in rs)}
    return {"rows": rows, "summary": summary, "uncached_seconds": base_times}


def print_report(res: dict) -> None:
    c = res["config"]
    print(f"step caching: {c['recipe']} recipe, {c['model']}, {c['size']}, {c['dtype']}, CPU {c['cpu']}")
    print(
        f"  {'spec':26s} {'speedup':>8s} {'ideal':>6s} {'saved':>6s} {'PSNR':>6s} {'worst':>6s} {'fewer-steps PSNR':>17s}"
    )
    for spec, s in res["summary"].items():
        print(
            f"  {spec:26s} {s['speedup']:8.2f} {s['ideal']:6.2f} {100 * s['saved']:5.0f}% {s['psnr']:6.1f}"
            f" {s['psnr_worst']:6.1f} {s['fewer_steps_psnr']:17.1f}"
        )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["mid", "tiny"], help="random weights (mechanics only) instead of a checkpoint")
    p.add_argument("--checkpoint")
    p.add_argument("--upsampler")
    p.add_argument("--text-encoder")
    p.add_argument("--recipe", choices=["dev", "distilled"], default="dev")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--cfg", type=float, default=3.0)
    p.add_argument("--specs", nargs="+")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--frames", type=int, default=25)
    p.add_argument("--prompts", nargs="+", default=list(PROMPTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("-r", "--repeat", type=int, default=1, help="timed runs per arm, interleaved; the best is kept")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    dtype = getattr(torch, a.dtype)
    specs = tuple(a.specs or (DEV_SPECS if a.recipe == "dev" else DISTILLED_SPECS))
    with tempfile.TemporaryDirectory(prefix="ltxv-cache-") as tmp:
        if a.model:
            from end_to_end import write_model

            kit = write_model(Path(tmp), a.model, dtype=dtype)
            checkpoint, upsampler, text = kit["checkpoint"], kit["upsampler"], kit["text_encoder"]
        else:
            checkpoint, upsampler, text = a.checkpoint, a.upsampler, a.text_encoder
        pipe = load_pipeline(checkpoint, upsampler=upsampler, text_encoder=text, dtype=dtype)
        r = recipe(a.recipe, a.steps, a.cfg, None)
        res = run(
            pipe,
            r,
            specs,
            size=(a.height, a.width, a.frames),
            prompts=tuple(a.prompts),
            seeds=tuple(a.seeds),
            repeat=a.repeat,
        )
    res["config"] = {
        "recipe": a.recipe if a.recipe == "distilled" else f"dev ({a.steps} steps, CFG {a.cfg})",
        "model": a.model or checkpoint,
        "size": f"{a.width}x{a.height}x{a.frames}",
        "dtype": a.dtype,
        "cpu": capability.cpu_model(),
        "threads": torch.get_num_threads(),
    }
    print_report(res)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
