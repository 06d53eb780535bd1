"""Admission control: what is refused at submission, before a job is queued.

The size and frame caps are checked while the fields are parsed (:class:`ltxv.serve.jobspec.Limits`). Then the
request is checked as the CLI checks it, by one function, :func:`check_request`: today the request's own
``validate``; with the pipeline's preflight (``ltxv.pipelines.preflight``, built once from the model files' headers,
nothing loaded), ``Preflight.check``, which adds the checks against the models and the device-memory estimate against
``--max-memory`` or the device. Either raises :class:`RequestError` with the CLI's message, which the API answers as
a 400 naming the field.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from ltxv.pipelines.request import GenerationRequest

log = logging.getLogger(__name__)

Check = Callable[[GenerationRequest], None]
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20}
_UNITS |= {"g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """ "24GiB", "24 GB", "512m", "1073741824" -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    if not m or m[2].lower() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (e.g. 24GiB, 512MiB)")
    return int(float(m[1]) * _UNITS[m[2].lower()])


def check_request(request: GenerationRequest) -> None:
    """The CLI's validation of a request; raises :class:`RequestError`."""
    request.validate()


def request_check(models: dict[str, Any], max_memory: int | None) -> Check:
    """The check for requests to ``models`` (``load_pipeline``'s file and placement arguments): the preflight's when
    ``ltxv.pipelines.preflight`` exists, else :func:`check_request` (no memory check: logged once)."""
    try:
        from ltxv.pipelines.preflight import Preflight  # type: ignore[import-not-found]
    except ImportError:
        log.info("admission: the request checks and size caps only (no ltxv.pipelines.preflight for memory)")
        return check_request
    log.info("admission: the preflight's checks (request, media, recipe vs model, memory) on every create")
    pf = Preflight.from_files(
        models["checkpoint"],
        models.get("upsampler"),
        models.get("text_encoder"),
        dtype=models["dtype"],
        device=models["device"],
        residency=models["residency"],
        quantize=models.get("quantize"),
        max_memory=max_memory,
        hybrid=list(models.get("hybrid") or ()),
    )
    return pf.check
