"""schemathesis over the service's own /openapi.json, in process (ASGI): for generated valid and invalid requests to
every operation, no server error, no status or content type the schema does not document, responses that match
their schemas, auth enforced (401, not ignored), deleted resources gone.

``positive_data_acceptance`` is left out on purpose: the API refuses some values a JSON schema cannot rule out
(a ``denoise_strength`` without ``input_media``, a ``conditioning`` list naming parts that were not uploaded, a size
over the pixel cap) with a 400 that names the field."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402
from serve_support import TOKEN, service_config  # noqa: E402

from ltxv.serve.api import create_app  # noqa: E402
from ltxv.serve.fake import FakeEngine  # noqa: E402
from ltxv.serve.files import StoreDir  # noqa: E402
from ltxv.serve.jobspec import Limits  # noqa: E402
from ltxv.serve.store import SqliteJobStore  # noqa: E402
from ltxv.serve.worker import Worker, WorkerConfig  # noqa: E402


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    layout = StoreDir(tmp_path_factory.mktemp("schema"))
    store = SqliteJobStore(layout.db)
    # As bound to a public address: a token, no loopback Host check (the ASGI client sends Host: testserver).
    # Small caps, so the jobs schemathesis creates (the fake engine renders each one) stay small.
    limits = Limits(max_pixels=128 * 128, max_frames=17, max_upload_bytes=4 * 2**20)
    application = create_app(store, layout, service_config(token=TOKEN, loopback=False, limits=limits))
    stop = threading.Event()  # a fast worker, so event streams of created jobs end
    worker = Worker(
        SqliteJobStore(layout.db), FakeEngine(step_s=0.0, steps=2), layout, WorkerConfig(poll_s=0.01, preview_s=0)
    )
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    yield application
    stop.set()
    thread.join(30)


@pytest.fixture(scope="module")
def quick_schema(app: object) -> object:
    """Generated examples only (the coverage phase's every-combination cases of the create form take minutes)."""
    s = schemathesis.openapi.from_asgi("/openapi.json", app)
    s.config.phases.update(phases=["examples", "fuzzing"])
    return s


@pytest.fixture(scope="module")
def full_schema(app: object) -> object:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("quick_schema")
full = schemathesis.pytest.from_fixture("full_schema")


def check(case: schemathesis.Case) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"}, excluded_checks=[positive_data_acceptance])


@schema.parametrize()
@settings(max_examples=10, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_the_api_matches_its_schema(case: schemathesis.Case) -> None:
    check(case)


@pytest.mark.slow
@full.parametrize()
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_matches_its_schema_at_length(case: schemathesis.Case) -> None:
    check(case)


def test_the_schema_documents_the_create_body_and_auth(app: object) -> None:
    from fastapi.testclient import TestClient

    doc = TestClient(app, base_url="http://127.0.0.1").get("/openapi.json").json()
    create = doc["paths"]["/v1/videos"]["post"]
    assert {"multipart/form-data", "application/json"} <= set(create["requestBody"]["content"])
    form = create["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["input_reference"]["format"] == "binary" and form["required"] == ["prompt"]
    assert {"400", "401", "413", "415", "429"} <= set(create["responses"])
    assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
