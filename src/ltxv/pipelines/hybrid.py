"""Hybrid generation: several transformers sharing one VAE, T5, upsampler and latent space (the 2B and 13B 0.9.8
distilled do), and a *transformer schedule* saying which one runs which denoising step.

Transformers are named by labels: ``LABEL=PATH`` names a file explicitly; otherwise the size token of the file name
(``2b`` in ``ltxv-2b-0.9.8-distilled.safetensors``, ``13b``), else ``main`` for the pipeline's checkpoint and
``hybrid`` for another one.

Two schedule forms (control-long.md §6):

- ``"13b:4,2b"``, counted over the whole trajectory, pass 1's steps then pass 2's: an entry is ``LABEL:COUNT``,
  ``LABEL:SHARE`` (a number with a decimal point: ``int(share * all steps)`` steps) or a bare ``LABEL``; the last entry
  takes whatever steps remain.
- The modelled system's JSON form ``[["13B", 4], ["2B", 9999]]``: integer counts (``int(count)``, so ``0.7`` is 0)
  laid end to end over *pass-local* step numbers. Its step callback swaps the model after step i when an entry starts
  at i + 1 (the first such entry), before pass 1 it sets the first entry's model, and in pass 2 the numbering
  restarts at 0 while the model that ended pass 1 carries on. So ``[["13B", 4], ["2B", 9999]]`` runs 13B for steps
  0-3 of pass 1 and 2B for the rest, and ``[["13B", 2], ["2B", 2], ["13B", 3]]`` runs 13, 13, 2, 2, 13, 13, 13 in
  pass 1 and 13, 13, 2 in pass 2. Its names match labels case-insensitively (the modelled system maps any name
  containing "13" to its 13B and everything else to its 2B; an unknown name is an error here).

Without a schedule a pipeline with several transformers runs the modelled system's default: the first
``int(0.7 n)`` of pass 1's n steps on the widest transformer, everything after on the narrowest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ltxv.pipelines.request import RequestError

if TYPE_CHECKING:
    from ltxv.config import TransformerConfig

Count = int | float | None  # steps, a share of all steps, or the rest

_SIZE = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?b)(?![a-z0-9])")
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
DEFAULT_SHARE = 0.7  # the modelled system's default: 70 % of pass 1 on the large model


# What two transformers must share to run one trajectory: the latent and text spaces, and the positions.
SHARED = ("in_channels", "out_channels", "caption_channels", "causal_temporal_positioning")


def check_compatible(main: TransformerConfig, other: TransformerConfig, label: str) -> None:
    """Raise a RequestError naming the first of :data:`SHARED` the two configs differ in."""
    for key in SHARED:
        if getattr(other, key) != getattr(main, key):
            raise RequestError(
                f"transformer {label!r} has {key}={getattr(other, key)}, the main one {getattr(main, key)}: "
                "they do not share a latent space",
                param="hybrid",
            )


def step_labels(spec: str | None, pass_steps: Sequence[int], widths: Mapping[str, int]) -> list[list[str]]:
    """The label that runs each step of each pass (``pass_steps`` steps each) among transformers of ``widths`` (label
    -> inner width, the main one first): by ``spec``, else the main one throughout when it is the only one, else
    :func:`default_schedule`."""
    labels = list(widths)
    if spec is None and len(labels) == 1:
        return [[labels[0]] * n for n in pass_steps]
    try:
        schedule = default_schedule(widths, pass_steps[0]) if spec is None else parse_schedule(spec)
        return resolve(schedule, pass_steps, labels)
    except ValueError as e:
        raise RequestError(f"transformer_schedule: {e}", param="transformer_schedule") from None


def label_for(path: str | Path, fallback: str) -> str:
    """The size token of a checkpoint's file name (``2b``, ``13b``), else ``fallback``."""
    found = _SIZE.findall(Path(path).name.lower())
    return found[0] if len(found) == 1 else fallback


def split_label(spec: str) -> tuple[str | None, str]:
    """``LABEL=PATH`` -> (label, path); a plain path -> (None, path)."""
    label, eq, path = spec.partition("=")
    if eq and _LABEL.fullmatch(label) and path:
        return label, path
    return None, spec


@dataclass(frozen=True)
class Schedule:
    """A parsed transformer schedule: (label, count) entries; ``per_pass``: the modelled system's JSON form."""

    entries: tuple[tuple[str, Count], ...]
    per_pass: bool = False

    def labels(self) -> tuple[str, ...]:
        return tuple(label for label, _ in self.entries)


def parse_schedule(spec: str | Sequence[Sequence[object]]) -> Schedule:
    """``"13b:4,2b"`` or ``'[["13B", 4], ["2B", 9999]]'`` (or that list itself) -> :class:`Schedule`. Raises
    ValueError naming the bad entry."""
    if not isinstance(spec, str) or spec.lstrip().startswith("["):
        return _parse_json(spec)
    entries: list[tuple[str, Count]] = []
    parts = [p.strip() for p in spec.split(",")]
    for i, part in enumerate(parts):
        label, colon, count = (x.strip() for x in part.partition(":"))
        if not _LABEL.fullmatch(label):
            raise ValueError(f"entry {part!r}: expected LABEL, LABEL:COUNT or LABEL:SHARE")
        if not colon:
            if i != len(parts) - 1:
                raise ValueError(f"entry {part!r}: only the last entry may leave out its count (it takes the rest)")
            entries.append((label, None))
            continue
        try:
            value: Count = float(count) if "." in count else int(count)
        except ValueError:
            raise ValueError(f"entry {part!r}: {count!r} is neither a step count nor a share like 0.7") from None
        if value < 0 or (isinstance(value, float) and value > 1.0):
            raise ValueError(f"entry {part!r}: a count must be >= 0 and a share in [0, 1]")
        entries.append((label, value))
    return Schedule(tuple(entries))


def _parse_json(spec: str | Sequence[Sequence[object]]) -> Schedule:
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as e:
            raise ValueError(f"not valid JSON ({e.msg})") from None
    if not isinstance(spec, Sequence) or isinstance(spec, str) or not spec:
        raise ValueError("the JSON form is a non-empty list of [name, steps] pairs")
    entries: list[tuple[str, Count]] = []
    for entry in spec:
        ok = isinstance(entry, Sequence) and not isinstance(entry, str) and len(entry) == 2
        if (
            not ok
            or not isinstance(entry[0], str)
            or isinstance(entry[1], bool)
            or not isinstance(entry[1], int | float)
        ):
            raise ValueError(f"entry {entry!r}: expected [name, steps]")
        if entry[1] < 0:
            raise ValueError(f"entry {entry!r}: a step count must be >= 0")
        entries.append((entry[0], int(entry[1])))  # the modelled system's int(count): 0.7 -> 0
    return Schedule(tuple(entries), per_pass=True)


def _match(name: str, labels: Sequence[str]) -> str:
    for label in labels:
        if label.lower() == name.lower():
            return label
    raise ValueError(f"the schedule names {name!r}, but the pipeline's transformers are {', '.join(labels)}")


def resolve(schedule: Schedule, pass_steps: Sequence[int], labels: Sequence[str]) -> list[list[str]]:
    """The label of every step of every pass (``pass_steps`` steps each)."""
    names = [_match(name, labels) for name in schedule.labels()]
    if schedule.per_pass:
        return _resolve_per_pass(names, [int(c or 0) for _, c in schedule.entries], pass_steps)
    total = sum(pass_steps)
    flat: list[str] = []
    for name, (_, count) in zip(names, schedule.entries):
        n = total if count is None else int(count * total) if isinstance(count, float) else count
        flat += [name] * max(0, min(n, total - len(flat)))
    flat += [names[-1]] * (total - len(flat))  # the last entry takes the rest
    out, start = [], 0
    for n in pass_steps:
        out.append(flat[start : start + n])
        start += n
    return out


def _resolve_per_pass(names: list[str], counts: list[int], pass_steps: Sequence[int]) -> list[list[str]]:
    starts, running = [], 0
    for c in counts:
        starts.append(running)
        running += c
    current, out = names[0], []
    for n in pass_steps:
        labels = []
        for i in range(n):
            labels.append(current)
            nxt = next((k for k, s in enumerate(starts) if s == i + 1), None)  # the first entry starting next
            if nxt is not None:
                current = names[nxt]
        out.append(labels)
    return out


def default_schedule(widths: Mapping[str, int], first_pass_steps: int) -> Schedule:
    """The modelled system's default over transformers of the given widths: ``int(0.7 n)`` steps of pass 1 on the
    widest, then the narrowest for the rest of pass 1 and for pass 2 (its JSON semantics)."""
    wide = max(widths, key=lambda k: widths[k])
    narrow = min(widths, key=lambda k: widths[k])
    big = int(first_pass_steps * DEFAULT_SHARE)
    return Schedule(((wide, big), (narrow, first_pass_steps - big)), per_pass=True)
