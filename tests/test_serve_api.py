"""The HTTP API against a live server on 127.0.0.1, with the ``openai`` SDK as the client where it has a call: the
OpenAI wire rules (multipart create, failed jobs are 200, Idempotency-Key, poll pacing), the error envelope, 100
concurrent submissions, cancel racing completion, server-sent events, and the security defaults."""

from __future__ import annotations

import concurrent.futures
import io
import json
import random
import time
from pathlib import Path

import av
import httpx
import numpy as np
import openai
import pytest
from PIL import Image
from serve_support import MODEL, TOKEN, assert_store_consistent, live_server, thread_workers, wait_for

from ltxv import cli
from ltxv.serve.fake import FakeEngine


def png(width: int = 96, height: int = 64, colour: tuple[int, int, int] = (200, 40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return buf.getvalue()


def sdk(url: str, token: str = TOKEN) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=30)


def decode(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


@pytest.fixture
def live(tmp_path: Path):  # type: ignore[no-untyped-def]
    with live_server(tmp_path / "store", token=TOKEN) as server:
        yield server


def test_the_openai_sdk_creates_polls_lists_downloads_and_deletes(live) -> None:  # type: ignore[no-untyped-def]
    client = sdk(live.url)
    with thread_workers(live, 1):
        video = client.videos.create_and_poll(
            prompt="a red kite over green hills",
            size="96x64",  # type: ignore[arg-type]
            input_reference=("../../etc/passwd name.png", png(), "image/png"),
            extra_body={"num_frames": 17, "seed": 11},
            poll_interval_ms=50,
        )
        assert video.status == "completed" and video.progress == 100 and video.size == "96x64"
        assert video.model == MODEL and video.model_extra["ltxv"]["seed"] == 11
        # The upload is stored under the part's name and the sniffed type, never the client's file name.
        assert [p.name for p in live.layout.job_inputs(video.id).iterdir()] == ["input_reference.png"]
        frames = decode(client.videos.download_content(video.id).read())
        assert frames.shape == (17, 64, 96, 3)
        thumb = client.videos.download_content(video.id, variant="thumbnail").read()
        assert Image.open(io.BytesIO(thumb)).size == (96, 64)
        more = [client.videos.create(prompt=f"clip {i}", size="64x64", extra_body={"num_frames": 9}) for i in range(4)]
        ids = [video.id] + [v.id for v in more]
        listed = [v.id for v in client.videos.list(limit=2)]  # auto-paging follows after=last_id
        assert listed == ids[::-1]
        assert [v.id for v in client.videos.list(limit=2, order="asc")] == ids
        for v in more:
            client.videos.poll(v.id, poll_interval_ms=20)
    deleted = client.videos.delete(video.id)
    assert deleted.deleted and deleted.id == video.id
    with pytest.raises(openai.NotFoundError, match="no video with id"):
        client.videos.retrieve(video.id)
    assert not live.layout.job_outputs(video.id).exists() and not live.layout.job_inputs(video.id).exists()
    assert_store_consistent(live.store, live.layout)


def test_a_failed_job_is_a_200_with_status_failed_and_polling_stops(live) -> None:  # type: ignore[no-untyped-def]
    client = sdk(live.url)  # max_retries=0: any 5xx would raise here
    with thread_workers(live, 1):
        video = client.videos.create_and_poll(prompt="[fail] on purpose", size="64x64", poll_interval_ms=20)
    assert video.status == "failed" and video.error.code == "generation_failed"
    assert "asked to fail" in video.error.message
    raw = client.videos.with_raw_response.retrieve(video.id)
    assert raw.http_response.status_code == 200 and raw.parse().status == "failed"


def test_idempotency_key_and_poll_pacing(live) -> None:  # type: ignore[no-untyped-def]
    client = sdk(live.url)
    a = client.videos.create(prompt="once", size="64x64", extra_headers={"Idempotency-Key": "req-1"})
    b = client.videos.create(prompt="once", size="64x64", extra_headers={"Idempotency-Key": "req-1"})
    assert a.id == b.id
    with pytest.raises(openai.BadRequestError, match="different request"):
        client.videos.create(prompt="twice", size="64x64", extra_headers={"Idempotency-Key": "req-1"})
    raw = client.videos.with_raw_response.retrieve(a.id)
    assert raw.headers["openai-poll-after-ms"] == "1000"  # queued
    assert len(live.store.list(limit=10)[0]) == 1


def test_every_error_is_a_4xx_envelope_naming_the_field(live) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(openai.AuthenticationError) as e:
        sdk(live.url, token="wrong").videos.list()
    assert e.value.status_code == 401 and e.value.response.headers["www-authenticate"] == "Bearer"
    assert e.value.body == {
        "message": "a valid bearer token is required",
        "type": "authentication_error",
        "param": None,
        "code": "invalid_api_key",
    }
    with pytest.raises(openai.BadRequestError) as e:
        sdk(live.url).videos.create(prompt="p", size="100x64")
    assert e.value.body["param"] == "size" and "nearest is 96x64" in e.value.body["message"]
    with live.client() as c:
        cases = [
            (c.get("/v1/videos/video_nope"), 404, "video_id"),
            (c.get("/v1/videos/" + "video_" + "0" * 32 + "/content"), 404, "video_id"),
            (c.get("/v1/videos", params={"limit": "0"}), 400, "limit"),
            (c.get("/v1/videos", params={"limit": "many"}), 400, "limit"),
            (c.get("/v1/videos", params={"order": "sideways"}), 400, "order"),
            (c.get("/v1/videos", params={"after": "../x"}), 400, "after"),
            (c.get("/v1/videos", params={"after": "video_" + "a" * 32}), 400, "after"),
            (c.post("/v1/videos", content=b"prompt=x", headers={"content-type": "text/plain"}), 415, None),
            (c.post("/v1/videos", json=["not", "an", "object"]), 400, None),
            (c.post("/v1/videos", json={"prompt": "p", "seed": "7"}), 400, "seed"),
            (
                c.post("/v1/videos", data={"prompt": "p"}, files={"input_reference": ("a.png", b"not an image")}),
                415,
                "input_reference",
            ),
            (c.post("/v1/videos", data={"prompt": "p"}, files={"stray": ("a.png", png())}), 400, "stray"),
            (
                c.post("/v1/videos", data={"prompt": "p", "input_reference": "https://example.com/a.png"}),
                400,
                "input_reference",
            ),
            (
                c.post("/v1/videos", data={"prompt": "p", "seed": "1", "denoise_strength": "0.5"}),
                400,
                "denoise_strength",
            ),
            (c.delete("/v1/nothing"), 404, None),
            (c.put("/v1/videos"), 405, None),
        ]
        for response, status, param in cases:
            body = response.json()
            assert response.status_code == status, (response.request.url, body)
            assert set(body["error"]) == {"message", "type", "param", "code"} and body["error"]["message"]
            assert body["error"]["param"] == param, (response.request.url, body)
    assert live.store.list()[0] == [] and not any(live.layout.inputs.glob("*/*"))


def test_uploads_are_capped_while_reading_and_media_decoded_with_limits(live) -> None:  # type: ignore[no-untyped-def]
    limit = 4 * 2**20

    def chunks():  # no Content-Length: the cap must hold while the body streams in
        yield b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\np\r\n'
        yield b'--b\r\nContent-Disposition: form-data; name="input_reference"; filename="x.png"\r\n\r\n'
        for _ in range(limit // 2**16 + 8):
            yield b"\0" * 2**16

    with live.client() as c:
        r = c.post("/v1/videos", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
        big = c.post("/v1/videos", content=b"x" * (limit + 1), headers={"content-type": "application/json"})
        assert big.status_code == 413
        buf = io.BytesIO()
        Image.new("L", (5000, 5000)).save(buf, format="PNG")  # small file, 25 megapixels decoded
        r = c.post("/v1/videos", data={"prompt": "p"}, files={"input_reference": ("bomb.png", buf.getvalue())})
        assert r.status_code == 400 and "decodes at most" in r.json()["error"]["message"]
    assert live.store.list()[0] == [] and not any(live.layout.inputs.glob("*/*"))


def test_host_and_origin_checks(live) -> None:  # type: ignore[no-untyped-def]
    with live.client() as c:
        assert c.get("/healthz", headers={"host": "attacker.example"}).status_code == 403  # DNS rebinding
        assert c.get("/healthz", headers={"host": "localhost:1234"}).status_code == 200
        cross = {"origin": "https://attacker.example"}
        r = c.post("/v1/videos", data={"prompt": "p"}, headers=cross)
        assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
        assert c.post("/v1/videos", data={"prompt": "p"}, headers={"sec-fetch-site": "cross-site"}).status_code == 403
        assert c.delete("/v1/videos/video_x", headers=cross).status_code == 403
        same = {"origin": live.url}
        assert c.post("/v1/videos", data={"prompt": "p", "size": "64x64"}, headers=same).status_code == 200


def test_serve_refuses_a_public_address_without_a_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--host", "0.0.0.0", "--store", str(tmp_path)]) == 2
    assert "give a token" in capsys.readouterr().err
    assert not (tmp_path / "jobs.sqlite3").exists()


def test_a_hundred_concurrent_submissions_none_lost_or_duplicated(live) -> None:  # type: ignore[no-untyped-def]
    def create(i: int) -> str:
        with live.client() as c:
            r = c.post("/v1/videos", data={"prompt": f"job {i}", "size": "64x64", "num_frames": "9", "seed": str(i)})
            assert r.status_code == 200, r.text
            return r.json()["id"]

    with thread_workers(live, 2):
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(create, range(100)))
        assert len(set(ids)) == 100
        wait_for(lambda: live.store.stats()["completed"] == 100, 120, "100 completed jobs", interval=0.2)
    jobs, more = live.store.list(limit=100)
    assert not more and sorted(j.id for j in jobs) == sorted(ids)
    assert sorted(j.request["seed"] for j in jobs) == list(range(100))
    assert all(j.attempt == 1 for j in jobs)  # none ran twice
    assert_store_consistent(live.store, live.layout)


def test_cancel_racing_completion_ends_in_one_terminal_state(live) -> None:  # type: ignore[no-untyped-def]
    """Cancels land before, during and after the fenced commit; every job ends in exactly one terminal state, and
    its files agree with it. The delays are drawn around a measured job time, so the race goes both ways."""
    rng = random.Random(0)
    outcomes: dict[str, int] = {}
    with thread_workers(live, 2, engine=FakeEngine((MODEL,), step_s=0.01, steps=2)), live.client() as c:

        def submit() -> str:
            return c.post("/v1/videos", data={"prompt": "race", "size": "64x64", "num_frames": "9"}).json()["id"]

        def finished(job_id: str) -> dict | None:
            v = c.get(f"/v1/videos/{job_id}").json()
            return v if v["status"] in ("completed", "failed") else None

        t0 = time.monotonic()
        first = submit()
        wait_for(lambda: finished(first), 30, "a first job")
        typical = time.monotonic() - t0
        for _ in range(30):
            job_id = submit()
            time.sleep(rng.uniform(0, 2 * typical))
            assert c.post(f"/v1/videos/{job_id}/cancel").status_code == 200
            job = wait_for(lambda j=job_id: finished(j), 30, "a terminal state")
            terminal = [e.type for e in live.store.events(job_id) if e.type in ("completed", "failed")]
            assert terminal == [{"completed": "completed", "failed": "failed"}[job["status"]]]
            outcome = job["status"] if job["status"] == "completed" else job["error"]["code"]
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            assert c.get(f"/v1/videos/{job_id}/content").status_code == (200 if outcome == "completed" else 404)
    assert set(outcomes) == {"completed", "cancelled"}, outcomes
    assert_store_consistent(live.store, live.layout)


def test_delete_of_a_running_job_cancels_it_never_409(live) -> None:  # type: ignore[no-untyped-def]
    with thread_workers(live, 1, engine=FakeEngine((MODEL,), step_s=0.05, steps=400)), live.client() as c:
        job_id = c.post("/v1/videos", data={"prompt": "long", "size": "64x64"}).json()["id"]
        wait_for(lambda: c.get(f"/v1/videos/{job_id}").json()["progress"] > 0, 30, "progress")
        r = c.delete(f"/v1/videos/{job_id}")
        assert r.status_code == 200 and r.json() == {"id": job_id, "object": "video.deleted", "deleted": True}
        assert c.get(f"/v1/videos/{job_id}").status_code == 404
        wait_for(lambda: (live.store.reap(), not live.store.exists(job_id))[1], 10, "the worker to stop, the row to go")
    assert_store_consistent(live.store, live.layout)
    assert not live.layout.job_outputs(job_id).exists()


def test_server_sent_events_replay_from_last_event_id(live) -> None:  # type: ignore[no-untyped-def]
    with thread_workers(live, 1), live.client() as c:
        job_id = c.post("/v1/videos", data={"prompt": "watch", "size": "64x64", "num_frames": "9"}).json()["id"]

        def read(last: int | None) -> list[tuple[int, str, dict]]:
            headers = {} if last is None else {"Last-Event-ID": str(last)}
            with c.stream("GET", f"/v1/videos/{job_id}/events", headers=headers) as r:
                assert r.headers["content-type"].startswith("text/event-stream")
                text = "".join(r.iter_text())
            out = []
            for block in text.split("\n\n"):
                fields = dict(
                    line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":")
                )
                if "event" in fields and "id" in fields:
                    out.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
            return out

        everything = read(None)
        kinds = [k for _, k, _ in everything]
        assert kinds[0] == "queued" and kinds[1] == "started" and kinds[-1] == "completed"
        assert {"progress", "preview"} <= set(kinds)
        assert [s for s, _, _ in everything] == list(range(1, len(everything) + 1))
        assert everything[-1][2]["video"]["status"] == "completed"
        progress = [d["progress"] for _, k, d in everything if k == "progress"]
        assert progress == sorted(progress) and progress[-1] < 100
        assert read(3) == everything[3:]
        assert c.get(f"/v1/videos/{job_id}/events", headers={"Last-Event-ID": "x"}).status_code == 400
        preview = c.get(f"/v1/videos/{job_id}/preview")
        assert (
            preview.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(preview.content)).size[1] == 128
        )


def test_health_metrics_and_models(live) -> None:  # type: ignore[no-untyped-def]
    with thread_workers(live, 2), live.client() as c:
        wait_for(lambda: c.get("/healthz").json()["workers"] == 2, 10, "two live workers")
        c.post("/v1/videos", data={"prompt": "m", "size": "64x64", "num_frames": "9"})
        wait_for(lambda: live.store.stats()["completed"] == 1, 30, "the job")
        text = c.get("/metrics").text
        assert "ltxv_jobs_completed_total 1\n" in text and "ltxv_queue_depth 0\n" in text and "ltxv_workers 2\n" in text
        assert "# TYPE ltxv_denoise_step_seconds_total counter" in text
        models = c.get("/v1/models").json()["data"]
        assert [m["id"] for m in models] == [MODEL] and "ltxv-2b-0.9.8-distilled" in models[0]["ltxv"]["presets"]
    assert httpx.get(f"{live.url}/metrics").status_code == 401
    assert httpx.get(f"{live.url}/").status_code == 200  # the page loads without a token, then asks for it
