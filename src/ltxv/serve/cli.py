"""``ltxv serve`` (the HTTP API and N worker processes on one store) and ``ltxv worker`` (one more worker on a store).

``ltxv.cli`` registers both with :func:`add_parsers` and gives them the model flags of ``ltxv generate`` (checkpoint,
upsampler, text encoder, dtype, device, residency, quantize, compile, seed, ``--preset`` / ``--pipeline-config``):
they say what the workers load and the jobs' default recipe and seed. With no checkpoint, the offline model of
``ltxv demo`` is served (:func:`offline_model`).

``serve`` restarts a worker that dies (a worker that exits with status 2, a configuration error such as a missing
model file, stops the service instead) and stops every worker on SIGINT/SIGTERM; workers also get SIGTERM if the
service process dies.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ltxv.pipelines.request import RequestError

log = logging.getLogger(__name__)
DEMO_MODEL = "ltxv-demo"
_SERVE_ONLY = ("host", "port", "workers", "token", "max_pixels", "max_frames", "max_queue", "max_upload")
_SERVE_ONLY += ("max_attempts", "sweep_grace_s", "ray", "shared_outputs", "parallel")
_NOT_FLAGS = ("command", "run", "store", "lease_s", "argv")  # argv: set by ltxv.cli.main for --parallel ranks


def add_parsers(sub: Any) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The ``serve`` and ``worker`` subcommands (their own flags; the caller adds the model flags)."""
    s = sub.add_parser("serve", help="the job API (OpenAI /v1/videos) and warm workers; a web page at /")
    s.add_argument("--host", default="127.0.0.1", help="bind address (anything but loopback needs --token)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--workers", type=int, default=1, help="worker processes to run (0: the API alone)")
    s.add_argument("--token", help="bearer token clients must send (default $LTXV_TOKEN)")
    s.add_argument("--max-pixels", type=int, help="largest width x height accepted (default 1920x1088)")
    s.add_argument("--max-frames", type=int, help="most frames accepted (default 257)")
    s.add_argument("--max-upload", help="largest request body, e.g. 100MiB (default)")
    s.add_argument("--max-queue", type=int, default=1000, help="queued jobs before create answers 429")
    s.add_argument("--max-attempts", type=int, default=3, help="worker deaths a job may cause before worker_lost")
    s.add_argument("--sweep-grace-s", type=float, default=3600.0, help=argparse.SUPPRESS)
    s.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help="run the workers as Ray actors: 'auto' or host:port of a cluster, no value: a local Ray instance",
    )
    s.add_argument("--shared-outputs", action="store_true", help="with --ray: every node mounts --store at that path")
    s.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="K",
        help="with --ray: each worker runs every job on K GPUs of a node",
    )
    w = sub.add_parser("worker", help="one worker process on a job store (any number may share one)")
    for p in (s, w):
        p.add_argument("--store", default="ltxv-store", required=p is w, help="the job store folder")
        p.add_argument("--lease-s", type=float, default=30.0, help="a dead worker's job is retried after this")
        p.add_argument(
            "--lora-dir", metavar="DIR", help="LoRAs jobs may name (loras: [{name, scale}]): NAME.safetensors"
        )
    s.set_defaults(run=cmd_serve)
    w.set_defaults(run=cmd_worker)
    return s, w


def register(sub: Any) -> None:
    """``ltxv serve`` and ``ltxv worker`` with the model flags every model-running command shares."""
    from ltxv.cli.flags import add_model_flags

    for p in add_parsers(sub):
        add_model_flags(p)


def offline_model(folder: Path) -> tuple[str, str, str]:
    """(checkpoint, upsampler, text encoder) of the offline model ``ltxv demo`` uses: the demo model shipped with
    ltxv (preset ``ltxv-demo``); where the package lacks its files, the tiny random kit, written into ``folder`` once."""
    from ltxv.pipelines.presets import DEMO_PRESET, get_preset
    from ltxv.testing.checkpoints import CHECKPOINT_NAME, TEXT_ENCODER_DIR, UPSAMPLER_NAME, write_tiny_kit

    demo = get_preset(DEMO_PRESET)
    shipped = (demo.checkpoint_path, demo.spatial_upscaler_model_path, demo.text_encoder_model_name_or_path)
    if all(p is not None and Path(p).exists() for p in shipped):
        return shipped  # type: ignore[return-value]
    paths = folder / CHECKPOINT_NAME, folder / UPSAMPLER_NAME, folder / TEXT_ENCODER_DIR
    if not folder.is_dir():  # written whole, then renamed into place: never half a model
        tmp = folder.with_name(f".{folder.name}.{os.getpid()}")
        write_tiny_kit(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process got there first
            shutil.rmtree(tmp, ignore_errors=True)
    return str(paths[0]), str(paths[1]), str(paths[2])


def _models(a: argparse.Namespace, store: Path) -> tuple[dict[str, Any], str, Any, str | None]:
    """(load_pipeline arguments, model id, default recipe, its preset name) from the model flags."""
    from ltxv.cli import DEFAULT_PRESET
    from ltxv.pipelines.presets import PRESETS, load_recipe, pipeline_args

    name = a.preset or a.pipeline_config or (DEMO_MODEL if a.checkpoint is None else DEFAULT_PRESET)
    recipe = load_recipe(name)
    model_id = None
    if a.checkpoint is None:
        a.checkpoint, up, text = offline_model(store / "offline-model")
        a.upsampler, a.text_encoder = a.upsampler or up, a.text_encoder or text
        model_id = DEMO_MODEL
    args = pipeline_args(
        recipe, **{k: getattr(a, k) for k in ("checkpoint", "upsampler", "text_encoder", "dtype", "device")}
    )
    args["residency"] = a.residency or "resident"
    args |= {"quantize": a.quantize, "compile": a.compile, "hybrid": tuple(a.hybrid or ())}
    model_id = model_id or Path(str(args["checkpoint"])).name.removesuffix(".safetensors")
    return args, model_id, recipe, name if name in PRESETS else None


def cmd_worker(a: argparse.Namespace) -> None:
    from ltxv.serve.engine import load_engine
    from ltxv.serve.files import StoreDir
    from ltxv.serve.store import SqliteJobStore
    from ltxv.serve.worker import Worker, WorkerConfig

    layout = StoreDir(a.store)
    args, model_id, recipe, _ = _models(a, layout.root)
    engine = load_engine(
        args,
        names=(model_id,),
        default_recipe=recipe,
        preview_cache=layout.root / "preview-maps",
        lora_dir=a.lora_dir,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("worker %d serving %s from %s", os.getpid(), model_id, layout.root)
    Worker(SqliteJobStore(layout.db), engine, layout, WorkerConfig(lease_s=a.lease_s)).run(stop)


def worker_argv(a: argparse.Namespace) -> list[str]:
    """The ``ltxv worker`` flags that load what ``serve`` was asked to serve."""
    out = ["--store", str(a.store), "--lease-s", str(a.lease_s)]
    for k, v in vars(a).items():
        if k in _SERVE_ONLY or k in _NOT_FLAGS or v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        if v is True:
            out.append(flag)
        else:  # a repeatable flag (--hybrid) once per value
            out += [x for item in (v if isinstance(v, list) else [v]) for x in (flag, str(item))]
    return out


def cmd_serve(a: argparse.Namespace) -> None:
    import uvicorn

    from ltxv.pipelines.loras import LoraRegistry
    from ltxv.pipelines.presets import NATIVE_SIZES
    from ltxv.serve.admission import parse_bytes, request_check
    from ltxv.serve.api import ServiceConfig, create_app
    from ltxv.serve.files import StoreDir
    from ltxv.serve.jobspec import Limits
    from ltxv.serve.security import is_loopback
    from ltxv.serve.store import SqliteJobStore

    token = a.token or os.environ.get("LTXV_TOKEN") or None
    if not is_loopback(a.host) and token is None:
        raise RequestError(f"--host {a.host} is reachable from other machines: give a token (--token or LTXV_TOKEN)")
    if a.workers < 0:
        raise RequestError(f"--workers must be >= 0, got {a.workers}")
    if a.parallel < 1 or (a.parallel > 1 and a.ray is None):
        raise RequestError(f"--parallel {a.parallel}: a worker on K > 1 devices runs on Ray (add --ray)")
    layout = StoreDir(a.store)
    argv = worker_argv(a)  # before _models fills in the offline model's paths: each worker resolves them itself
    args, model_id, recipe, preset = _models(a, layout.root)
    if a.ray is None:
        store = SqliteJobStore(layout.db)
        supervisor = Supervisor([sys.executable, "-m", "ltxv.serve.cli", "worker", *argv], a.workers)
    else:
        from ltxv.serve.ray_workers import ActorSpec, ray_service
        from ltxv.serve.worker import WorkerConfig

        offline = model_id == DEMO_MODEL  # each node writes its own copy
        spec = ActorSpec(
            load=args,
            names=(model_id,),
            recipe=recipe,
            config=WorkerConfig(lease_s=a.lease_s),
            offline=offline,
            shared_root=str(layout.root) if a.shared_outputs else None,
            ranks=a.parallel,
            lora_dir=a.lora_dir,
        )
        store, supervisor = ray_service(a.ray, layout, spec, a.workers, device=args.get("device"))
    try:
        lim = {"max_pixels": a.max_pixels, "max_frames": a.max_frames}
        lim["max_upload_bytes"] = None if a.max_upload is None else parse_bytes(a.max_upload)
        limits = Limits(**{k: v for k, v in lim.items() if v is not None})
    except ValueError as e:
        raise RequestError(str(e)) from None
    h, w, f = NATIVE_SIZES[DEMO_MODEL]
    small = model_id == DEMO_MODEL
    config = ServiceConfig(
        models=(model_id,),
        default_recipe=recipe,
        default_preset=preset,
        default_seed=a.seed,
        limits=limits,
        token=token,
        loopback=is_loopback(a.host),
        max_queue=a.max_queue,
        max_attempts=a.max_attempts,
        check=request_check(args, a.max_memory),
        sweep_grace_s=a.sweep_grace_s,
        suggested={"size": f"{w}x{h}", "num_frames": f} if small else {"size": "704x480", "num_frames": 97},
        loras=None if a.lora_dir is None else LoraRegistry(a.lora_dir),
    )
    app = create_app(store, layout, config)  # type: ignore[arg-type]

    class _Server(uvicorn.Server):
        """uvicorn re-raises SIGINT/SIGTERM once it has shut down, which would end this process before its workers
        are stopped: here the signal only stops the server, then the workers are stopped and serve returns."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

    server = _Server(uvicorn.Config(app, host=a.host, port=a.port, log_level="info", timeout_graceful_shutdown=5))
    supervisor.on_fatal = lambda: setattr(server, "should_exit", True)
    supervisor.start()
    log.info("serving %s on http://%s:%d with %d worker(s); store %s", model_id, a.host, a.port, a.workers, layout.root)
    try:
        server.run()
    finally:
        supervisor.stop()
    if supervisor.fatal:
        raise RequestError(supervisor.fatal)


class Supervisor:
    """Keeps ``n`` worker processes running (restarting one that dies, with a backoff), stops them on ``stop``."""

    def __init__(self, argv: list[str], n: int) -> None:
        self.argv, self.n = argv, n
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n
        self.fatal: str | None = None
        self.on_fatal = lambda: None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv, preexec_fn=_die_with_parent, stderr=None)

    def _run(self) -> None:
        backoff = [1.0] * self.n
        started = [0.0] * self.n
        while not self._stop.is_set():
            for i, p in enumerate(self.procs):
                if p is None or p.poll() is not None:
                    if p is not None:
                        if p.returncode == 2:
                            self.fatal = "a worker could not start (its error is above); stopping"
                            self.on_fatal()
                            return
                        log.warning(
                            "worker %d exited with status %s; restarting in %.0f s", p.pid, p.returncode, backoff[i]
                        )
                        if self._stop.wait(backoff[i]):
                            return
                        fast = time.monotonic() - started[i] < 60
                        backoff[i] = min(30.0, backoff[i] * 2) if fast else 1.0
                    started[i] = time.monotonic()
                    self.procs[i] = self._spawn()
            self._stop.wait(0.5)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join()
        live = [p for p in self.procs if p is not None and p.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for p in live:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _die_with_parent() -> None:
    """In the child: SIGTERM when the service process dies (Linux prctl PR_SET_PDEATHSIG; elsewhere nothing)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    """``python -m ltxv.serve.cli worker ...``: how ``serve`` starts its workers (the same parser as ``ltxv``)."""
    from ltxv.cli import main as ltxv_main

    return ltxv_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
