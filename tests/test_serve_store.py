"""The job store's lease, fence and state rules, on a controllable clock; the wire-to-request translation (strict
where the CLI pads, the CLI's messages); the sweeper; the worker loop against the store, in process."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ltxv import cli
from ltxv.cli.generate import build_request
from ltxv.pipelines.presets import get_preset
from ltxv.pipelines.request import RequestError
from ltxv.serve.admission import check_request, parse_bytes
from ltxv.serve.fake import FakeEngine
from ltxv.serve.files import StoreDir, new_job_id, publish, sweep
from ltxv.serve.jobspec import FieldError, Limits, frames_for_seconds, param_of, parse_fields, to_request
from ltxv.serve.store import Clock, IdempotencyConflict, QueueFull, SqliteJobStore
from ltxv.serve.worker import Progress, Step, Worker, WorkerConfig

SPEC = {"prompt": "p", "width": 96, "height": 64, "num_frames": 17, "fps": 30.0, "seed": 1}


class FakeClock(Clock):
    def __init__(self) -> None:
        self.epoch, self.t = "boot-1", 1000.0

    def now(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> SqliteJobStore:
    return SqliteJobStore(tmp_path / "jobs.sqlite3", clock=clock)


def submit(store: SqliteJobStore, **kw: Any) -> str:
    job, created = store.submit(new_job_id(), "m", dict(SPEC), **kw)
    assert created
    return job.id


# --- leases, attempts and fencing ---------------------------------------------------------------------------------


def test_an_expired_lease_is_claimed_again_and_the_stale_worker_commits_nothing(
    store: SqliteJobStore, clock: FakeClock
) -> None:
    job_id = submit(store)
    a = store.claim("worker-a", lease_s=10)
    assert a is not None and a.attempt == 1 and store.get(job_id).state == "running"
    assert store.claim("worker-b", lease_s=10) is None  # held
    clock.t += 9
    assert store.heartbeat(a, 10, progress=40) == "ok"  # renewed to t + 10
    clock.t += 9
    assert store.claim("worker-b", lease_s=10) is None
    clock.t += 2  # expired
    b = store.claim("worker-b", lease_s=10)
    assert b is not None and b.attempt == 2 and b.job.id == job_id
    assert store.heartbeat(a, 10) == "lost" and store.check(a) == "lost"
    assert store.complete(a, {"video": "a1.mp4"}) == "lost"
    assert store.fail(a, {"code": "x", "message": "m"}) == "lost"
    assert store.get(job_id).state == "running" and store.get(job_id).output is None
    assert store.complete(b, {"video": "a2.mp4"}) == "completed"
    assert store.complete(b, {"video": "again.mp4"}) == "lost"  # a commit happens once
    job = store.get(job_id)
    assert (job.state, job.output, job.progress, job.attempt) == ("completed", {"video": "a2.mp4"}, 100, 2)
    types = [e.type for e in store.events(job_id)]
    assert types == ["queued", "started", "started", "completed"]
    assert store.events(job_id)[2].data["reclaimed"] is True


def test_a_job_that_kills_its_worker_max_attempts_times_fails_with_worker_lost(
    store: SqliteJobStore, clock: FakeClock
) -> None:
    job_id = submit(store, max_attempts=3)
    for attempt in (1, 2, 3):
        claim = store.claim(f"w{attempt}", lease_s=1)
        assert claim is not None and claim.attempt == attempt
        clock.t += 2  # the worker died: its lease runs out
    assert store.claim("w4", lease_s=1) is None
    job = store.get(job_id)
    assert job.state == "failed" and job.error["code"] == "worker_lost" and "3 times" in job.error["message"]
    assert store.stats()["failed"] == 1


def test_a_released_job_runs_again_at_once_and_does_not_count_as_lost(store: SqliteJobStore, clock: FakeClock) -> None:
    job_id = submit(store, max_attempts=1)
    claim = store.claim("w1", lease_s=100)
    assert store.release(claim) and store.get(job_id).state == "queued"
    again = store.claim("w2", lease_s=100)
    assert again is not None and again.attempt == 2  # attempts count claims; only expiries count as lost
    assert store.complete(again, {"video": "a2.mp4"}) == "completed"


def test_a_lease_from_another_boot_is_expired(store: SqliteJobStore, clock: FakeClock) -> None:
    submit(store)
    store.claim("w1", lease_s=10_000)
    clock.epoch = "boot-2"  # the machine rebooted: the monotonic clock restarted, the old lease means nothing
    assert store.claim("w2", lease_s=10).attempt == 2


def test_progress_is_monotonic_and_reaches_100_only_when_committed(store: SqliteJobStore, clock: FakeClock) -> None:
    job_id = submit(store)
    claim = store.claim("w", lease_s=10)
    store.heartbeat(claim, 10, progress=50)
    store.heartbeat(claim, 10, progress=30)
    assert store.get(job_id).progress == 50
    store.heartbeat(claim, 10, progress=100)
    assert store.get(job_id).progress == 99
    clock.t += 20
    second = store.claim("w2", lease_s=10)  # a new attempt starts from 0, the job's progress does not go back
    store.heartbeat(second, 10, progress=10)
    assert store.get(job_id).progress == 99
    store.complete(second, {"video": "a2.mp4"})
    assert store.get(job_id).progress == 100


# --- cancel, delete, idempotency, the queue cap, listing -----------------------------------------------------------


def test_cancel_queued_running_and_finished(store: SqliteJobStore) -> None:
    queued = submit(store)
    assert store.cancel(queued).error["code"] == "cancelled"
    assert store.claim("w", lease_s=10) is None  # a cancelled job never runs
    running = submit(store)
    claim = store.claim("w", lease_s=10)
    job = store.cancel(running)
    assert job.state == "running" and job.cancel_requested
    assert store.check(claim) == "cancel" and store.heartbeat(claim, 10) == "cancel"
    assert store.complete(claim, {"video": "a1.mp4"}) == "cancelled"  # a recorded cancel wins over the commit
    job = store.get(running)
    assert job.state == "failed" and job.error["code"] == "cancelled" and job.output is None
    assert store.cancel(running).state == "failed"  # idempotent
    assert store.cancel("video_" + "0" * 32) is None


def test_delete_a_running_job_hides_it_and_its_row_goes_when_the_worker_stops(store: SqliteJobStore) -> None:
    job_id = submit(store, idempotency_key="k")
    claim = store.claim("w", lease_s=10)
    assert store.delete(job_id)
    assert store.get(job_id) is None and store.exists(job_id) and store.check(claim) == "cancel"
    assert not store.delete(job_id)
    assert store.fail(claim, {"code": "cancelled", "message": "m"}) == "cancelled"
    store.reap()
    assert not store.exists(job_id) and store.events(job_id) == []
    assert store.submit(new_job_id(), "m", dict(SPEC), idempotency_key="k")[1]  # the key is free again


def test_idempotency_key_returns_the_first_job(store: SqliteJobStore) -> None:
    first, created = store.submit(new_job_id(), "m", dict(SPEC), idempotency_key="k", fingerprint="f1")
    again, created_again = store.submit(new_job_id(), "m", dict(SPEC), idempotency_key="k", fingerprint="f1")
    assert created and not created_again and again.id == first.id
    with pytest.raises(IdempotencyConflict):
        store.submit(new_job_id(), "m", {**SPEC, "prompt": "q"}, idempotency_key="k", fingerprint="f2")
    assert len(store.list(limit=100)[0]) == 1


def test_the_queue_cap(store: SqliteJobStore) -> None:
    submit(store, max_queue=2)
    submit(store, max_queue=2)
    with pytest.raises(QueueFull, match="limit is 2"):
        submit(store, max_queue=2)
    store.claim("w", lease_s=10)  # a running job no longer waits in the queue
    submit(store, max_queue=2)


def test_list_pages_through_every_job_in_both_orders(store: SqliteJobStore) -> None:
    ids = [submit(store) for _ in range(7)]
    for order, expected in (("asc", ids), ("desc", ids[::-1])):
        seen, after = [], None
        while True:
            page, more = store.list(after=after, limit=3, order=order)
            seen += [j.id for j in page]
            if not more:
                break
            after = page[-1].id
        assert seen == expected
    with pytest.raises(KeyError):
        store.list(after="video_" + "f" * 32)


def test_jobs_and_events_survive_reopening_and_are_json(tmp_path: Path, store: SqliteJobStore) -> None:
    job_id = submit(store)
    claim = store.claim("w", lease_s=10)
    store.heartbeat(claim, 10, progress=12, status={"stage": "denoise"}, event=("progress", {"progress": 12}))
    again = SqliteJobStore(tmp_path / "jobs.sqlite3")
    job = again.get(job_id)
    assert (job.state, job.progress, job.status) == ("running", 12, {"stage": "denoise"})
    assert [e.seq for e in again.events(job_id)] == [1, 2, 3]
    assert [e.type for e in again.events(job_id, after_seq=2)] == ["progress"]
    con = sqlite3.connect(tmp_path / "jobs.sqlite3")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    for request, status in con.execute("SELECT request, status FROM jobs"):
        assert json.loads(request) == SPEC and json.loads(status) == {"stage": "denoise"}


def test_a_writer_holding_the_lock_makes_others_wait_not_fail(tmp_path: Path) -> None:
    """Case 9 of the kill matrix: another connection holds the write lock for a while; a submit waits for it
    (busy_timeout) and succeeds; nobody sees "database is locked"."""
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    holder = sqlite3.connect(tmp_path / "jobs.sqlite3", isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    released = threading.Timer(0.5, lambda: holder.execute("COMMIT"))
    released.start()
    t0 = time.monotonic()
    submit(store)
    assert time.monotonic() - t0 >= 0.4
    released.join()


# --- the sweeper and atomic outputs ---------------------------------------------------------------------------------


def test_sweep_removes_unreferenced_files_and_folders_only(tmp_path: Path, store: SqliteJobStore) -> None:
    layout = StoreDir(tmp_path)
    done, running = submit(store), submit(store)
    a = store.claim("w", lease_s=10)
    b = store.claim("w", lease_s=10)
    for job_id, attempt in ((done, 1), (done, 2), (running, 1)):
        publish(layout.job_outputs(job_id) / f"a{attempt}.mp4", lambda p: p.write_bytes(b"x"))
    (layout.job_outputs(done) / ".tmp-dead-a3.mp4").write_bytes(b"half")
    assert store.complete(a, {"video": "a2.mp4"}) == "completed"
    orphan = layout.job_outputs(new_job_id())
    orphan.mkdir(parents=True)
    young = layout.job_inputs(new_job_id())  # an upload whose job row is not written yet
    young.mkdir(parents=True)
    removed = {p.name for p in sweep(store, layout, grace_s=60)}
    assert removed == {"a1.mp4", ".tmp-dead-a3.mp4", orphan.name}
    assert {p.name for p in layout.job_outputs(done).iterdir()} == {"a2.mp4"}
    assert (layout.job_outputs(running) / "a1.mp4").exists() and young.exists() and b is not None
    assert {p.name for p in sweep(store, layout, grace_s=0)} == {young.name}


def test_publish_leaves_nothing_when_the_writer_fails(tmp_path: Path) -> None:
    def broken(p: Path) -> None:
        p.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        publish(tmp_path / "out" / "a1.mp4", broken)
    assert list((tmp_path / "out").iterdir()) == []


# --- the wire format -> GenerationRequest ---------------------------------------------------------------------------


def parse(fields: dict[str, Any], files: set[str] = frozenset(), form: bool = True, **kw: Any) -> dict[str, Any]:
    return parse_fields(
        dict(fields), set(files), models=("m",), limits=kw.pop("limits", Limits()), default_seed=7, form=form
    )


@pytest.mark.parametrize(
    ("fields", "param", "message"),
    [
        ({"size": "100x64"}, "size", "multiples of 32; the nearest is 96x64"),
        ({"size": "1280x720"}, "size", "multiples of 32; the nearest is 1280x736"),  # a tie: up, as the CLI pads
        ({"size": "1290x700"}, "size", "multiples of 32; the nearest is 1280x704"),
        ({"size": "wide"}, "size", "WIDTHxHEIGHT"),
        ({"num_frames": "20"}, "num_frames", "not 8n+1; the nearest valid value is 17"),
        ({"num_frames": "24"}, "num_frames", "the nearest valid value is 25"),
        ({"num_frames": "17", "seconds": "2"}, "seconds", "not both"),
        ({"seed": "-1"}, "seed", "in [0,"),
        ({"model": "sora-2"}, "model", "this server serves m"),
        ({"preset": "../../etc/passwd"}, "preset", "unknown preset"),
        ({"bogus": "1"}, "bogus", "unknown field 'bogus'"),
        ({"prompt": "   "}, "prompt", "must not be empty"),
        ({"prompt": "x" * 2001}, "prompt", "at most 2000"),
        ({"size": "1920x1920"}, "size", "limit is 2088960"),
        ({}, "size", "1216x704 (the default) has 856064 pixels; this server's limit is 65536"),
        ({"num_frames": "265"}, "num_frames", "limit is 257"),
        ({"conditioning": '[{"part": "img"}]'}, "conditioning", "'img', which was not uploaded"),
        ({"conditioning": "not json"}, "conditioning", "JSON list"),
    ],
)
def test_the_api_is_strict_and_names_the_field(fields: dict[str, Any], param: str, message: str) -> None:
    limits = Limits(max_pixels=65536) if not fields else Limits()
    with pytest.raises(FieldError, match=re.escape(message)) as e:
        parse({"prompt": "p", **fields}, limits=limits)
    assert e.value.param == param


def test_seconds_convert_to_the_nearest_8n_plus_1_frames() -> None:
    assert frames_for_seconds(4, 24) == 97 and frames_for_seconds(4, 30) == 121 and frames_for_seconds(0.1, 30) == 1
    assert parse({"prompt": "p", "seconds": "4", "fps": "24"})["num_frames"] == 97


def test_json_values_are_typed_strictly_form_values_are_strings() -> None:
    assert parse({"prompt": "p", "seed": "5"})["seed"] == 5
    assert parse({"prompt": "p", "seed": 5}, form=False)["seed"] == 5
    with pytest.raises(FieldError, match="seed must be an integer"):
        parse({"prompt": "p", "seed": "5"}, form=False)
    with pytest.raises(FieldError, match="media_preprocess must be true or false"):
        parse({"prompt": "p", "media_preprocess": "true"}, form=False)


def test_defaults_are_the_cli_defaults_and_the_request_is_the_clis(tmp_path: Path) -> None:
    """The same flags through the CLI and the same fields through the API build the same GenerationRequest."""
    image = tmp_path / "reference.png"
    from PIL import Image

    Image.new("RGB", (96, 64), (200, 30, 40)).save(image)
    fields = {
        "prompt": "a fox",
        "size": "96x64",
        "num_frames": "17",
        "seed": "3",
        "conditioning": '[{"part": "reference", "frame": 8, "strength": 0.5}]',
    }
    spec = parse(fields, {"reference"})
    spec["conditioning"][0]["file"] = "reference.png"
    ours = to_request(spec, tmp_path, get_preset(cli.DEFAULT_PRESET))
    flags = ["generate", "--prompt", "a fox", "--width", "96", "--height", "64", "--num-frames", "17", "--seed", "3"]
    flags += ["--conditioning-media-paths", str(image), "--conditioning-start-frames", "8"]
    flags += ["--conditioning-strengths", "0.5"]
    theirs = build_request(cli.build_parser().parse_args(flags))
    assert ours == theirs
    defaults = to_request(parse({"prompt": "a fox"}), tmp_path, get_preset(cli.DEFAULT_PRESET))
    plain = build_request(cli.build_parser().parse_args(["generate", "--prompt", "a fox", "--seed", "7"]))
    assert defaults == plain


@pytest.mark.parametrize(
    ("fields", "flags"),
    [
        ({"denoise_strength": "0.5"}, ["--denoise-strength", "0.5"]),
        ({"conditioning": '[{"part": "ref", "strength": 1.5}]'}, ["--conditioning-strengths", "1.5"]),
        ({"conditioning": '[{"part": "ref", "frame": 40}]'}, ["--conditioning-start-frames", "40"]),
        ({"image_cond_noise_scale": "-1"}, ["--image-cond-noise-scale", "-1"]),
    ],
)
def test_the_api_reports_the_clis_messages(tmp_path: Path, fields: dict[str, Any], flags: list[str]) -> None:
    image = tmp_path / "ref.png"
    from PIL import Image

    Image.new("RGB", (96, 64)).save(image)
    files = {"ref"} if "conditioning" in fields else set()
    spec = parse({"prompt": "p", "size": "96x64", "num_frames": "17", **fields}, files)
    for c in spec["conditioning"]:
        c["file"] = "ref.png"
    with pytest.raises(RequestError) as api_error:
        check_request(to_request(spec, tmp_path, get_preset(cli.DEFAULT_PRESET)))
    base = ["generate", "--prompt", "p", "--width", "96", "--height", "64", "--num-frames", "17"]
    if "conditioning" in fields:
        base += ["--conditioning-media-paths", str(image)]
        base += [] if "--conditioning-start-frames" in flags else ["--conditioning-start-frames", "0"]
    with pytest.raises(RequestError) as cli_error:
        build_request(cli.build_parser().parse_args(base + flags))
    assert str(api_error.value) == str(cli_error.value)
    assert param_of(api_error.value) == next(iter(fields))


def test_parse_bytes() -> None:
    assert parse_bytes("24GiB") == 24 * 2**30 and parse_bytes("512 MB") == 512 * 10**6 and parse_bytes("100") == 100
    with pytest.raises(ValueError):
        parse_bytes("lots")


# --- the worker loop, in process --------------------------------------------------------------------------------------


def test_progress_weights_passes_by_cost_and_stays_below_100() -> None:
    p = Progress([(2, 1.0), (2, 4.0)], tail=0.0)
    assert [p.step(Step(i, 2, s, 2, 0.5)) for i in range(2) for s in range(2)] == [10, 20, 60, 99]


def test_the_worker_runs_cancels_and_reports_failures(tmp_path: Path) -> None:
    layout = StoreDir(tmp_path)
    store = SqliteJobStore(layout.db)
    spec = parse({"prompt": "p", "size": "64x64", "num_frames": "9"})
    model = spec.pop("model")
    ok = store.submit(new_job_id(), model, spec)[0].id
    bad = store.submit(new_job_id(), model, {**spec, "prompt": "[fail] please"})[0].id
    invalid = store.submit(new_job_id(), model, {**spec, "denoise_strength": 0.5})[0].id
    engine = FakeEngine(("m",), step_s=0.0, steps=3)
    worker = Worker(store, engine, layout, WorkerConfig(poll_s=0.01, progress_s=0, preview_s=0))
    assert worker.run(threading.Event(), max_jobs=3) == 3
    assert store.get(ok).state == "completed" and (layout.job_outputs(ok) / "a1.mp4").stat().st_size > 0
    assert store.get(bad).error == {
        "code": "generation_failed",
        "message": "the fake engine was asked to fail",
        "param": None,
    }
    assert (
        store.get(invalid).error["code"] == "invalid_request"
        and store.get(invalid).error["param"] == "denoise_strength"
    )
    events = [e.type for e in store.events(ok)]
    assert events[:2] == ["queued", "started"] and events[-1] == "completed"
    assert events.count("progress") == 3 and events.count("preview") == 3
    # A cancel recorded while the job runs stops it within one step.
    slow = FakeEngine(("m",), step_s=0.05, steps=200)
    job = store.submit(new_job_id(), model, spec)[0].id
    worker = Worker(store, slow, layout, WorkerConfig(poll_s=0.01, progress_s=0, preview_s=10))
    thread = threading.Thread(target=worker.run, args=(threading.Event(),), kwargs={"max_jobs": 1})
    thread.start()
    while store.get(job).progress < 2:
        time.sleep(0.01)
    store.cancel(job)
    t0 = time.monotonic()
    thread.join(30)
    assert time.monotonic() - t0 < 5 and store.get(job).error["code"] == "cancelled"
    steps_after = [e for e in store.events(job) if e.type == "progress"]
    assert len(steps_after) < 150  # it stopped long before the 200 steps


def test_a_full_disk_fails_the_job_with_a_clear_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Case 7: the output cannot be written: the job fails with ``output_write_failed``, nothing half-written."""
    import ltxv.io.video

    def full(*args: Any, **kw: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ltxv.io.video, "write_mp4", full)
    layout = StoreDir(tmp_path)
    store = SqliteJobStore(layout.db)
    spec = parse({"prompt": "p", "size": "64x64", "num_frames": "9"})
    job = store.submit(new_job_id(), spec.pop("model"), spec)[0].id
    Worker(store, FakeEngine(("m",), step_s=0), layout, WorkerConfig(preview_s=10)).run(threading.Event(), max_jobs=1)
    error = store.get(job).error
    assert error["code"] == "output_write_failed" and "No space left on device" in error["message"]
    assert {p.name for p in layout.job_outputs(job).iterdir()} <= {"preview.jpg"}  # no video, whole or half
