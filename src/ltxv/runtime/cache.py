"""Step caching: reuse the transformer's work on the steps of a pass where its output barely changes.

A :class:`StepCache` is a ``CallTransformer`` (:class:`ltxv.pipelines.denoise.TransformerCall` -> velocity): it wraps
the transformer call of the denoise loop, never the model, and is made anew for every pass
(``Pipeline.transformer_call``), so no state crosses a pass (or the upsampler). Its state is kept per
(network label, guidance branch): the batch is branch-major (``call.branches``, ``call.batch`` rows each), and every
branch reuses only its own earlier work, so a guidance batch that changes between steps (CFG and STG switching per
step: batch 1 -> 3 -> 2) never mixes branches or broadcasts one branch's cache onto another. A branch with nothing
cached yet computes. Branches that compute run the remaining blocks as one sub-batch; the others reuse.

Methods (``../shared/reference/caching.md``):

* ``fbc`` (First Block Cache): block 0 always runs; its residual ``r = B0(h) - h`` is compared with the one of the
  branch's last fully computed step, ``d = mean|r - r_ref| / mean|r_ref|``; the rest of the network is reused
  (``out0 + R``, ``R = out_{L-1} - out0`` of the last computed step) while ``d < threshold``. Guards: ``warmup``
  first steps computed, the last step computed (``force_last``), at most ``max_skips`` reused steps in a row.
  ``diffusers=True`` is diffusers' ``FirstBlockCacheConfig`` exactly: one decision for the whole batch, computed iff
  ``d > threshold`` (d over every row), no guards; it exists to test against diffusers. (diffusers takes the means
  in the model's dtype, ltxv sums in float32: the same decisions away from exact ties.)
* ``static``: a fixed schedule with the modelled system's ``cache_start_step / cache_end_step / cache_interval``:
  step s is computed when it lies outside [start, end] or ``(s - start) % interval == 0``; the other steps reuse the
  residual of the whole stack, ``R = out_{L-1} - h`` (h = the embedded tokens, every block skipped), where the
  modelled system reuses the last guided velocity unchanged.

Off is off: a threshold of 0 or an interval of 1 computes every step with the plain call, bit-identical to no cache.
A computed step is the plain forward in exact parts (``Transformer.embed / run_blocks / head``), so it is bit-identical
to the plain call too; only reused steps differ.

Composition: the steps the cache leaves whole (and those whose internals no later step reads) go to ``inner``, the
call it wraps; the steps it runs in parts go through ``call.model``'s ``embed / run_blocks / head``. So a wrapper that
changes how the network runs composes either way round: outside the cache it hands it a call whose model runs that way
(sequence parallelism: each rank's token shard, with a model whose ``run_blocks`` uses the parallel attention core,
and ``reduce`` summing the indicator over the ranks so that every rank decides alike); inside, as ``inner``, it runs
the whole steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, Protocol

import torch

if TYPE_CHECKING:
    from ltxv.model.transformer import PreparedText
    from ltxv.pipelines.denoise import TransformerCall

METHODS = ("fbc", "static")
# A block's multiply-accumulates per token: 14 D^2 in the projections and the MLP (q, k, v, out; cross q, out; 8 D^2
# MLP), 2 N D for self-attention over N tokens, 2 L D for cross-attention over L text tokens (caching.md §6.1).
_PROJ_MACS = 14


class CacheSpecError(ValueError):
    """A cache specification that cannot be parsed or makes no sense."""


@dataclass(frozen=True)
class CacheConfig:
    """One pass's caching policy; :func:`parse_cache` reads it from ``fbc:0.1`` / ``static:2,20,3``."""

    method: Literal["fbc", "static"]
    threshold: float = 0.0  # fbc: reuse while the first block's residual changes by less than this (relative L1)
    warmup: int = 2  # fbc: the first steps are always computed
    max_skips: int = 3  # fbc: at most this many reused steps in a row per branch (0: no cap)
    force_last: bool = True  # fbc: the pass's last step is always computed
    diffusers: bool = False  # fbc: exactly diffusers' FirstBlockCacheConfig (joint decision, strict >, no guards)
    start: int = 0  # static: first step of the cached range
    end: int | None = None  # static: last step of the cached range (None: to the end of the pass)
    interval: int = 1  # static: inside the range, every interval-th step from start is computed

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CacheSpecError(f"unknown cache method {self.method!r}; known: {', '.join(METHODS)}")
        if self.method == "fbc":
            if not (math.isfinite(self.threshold) and self.threshold >= 0):
                raise CacheSpecError(f"fbc threshold must be a number >= 0, got {self.threshold}")
            if self.warmup < 0 or self.max_skips < 0:
                raise CacheSpecError(f"fbc warmup and max_skips must be >= 0, got {self.warmup}, {self.max_skips}")
        else:
            if self.interval < 1 or self.start < 0:
                raise CacheSpecError(f"static needs start >= 0 and interval >= 1, got {self.start}, {self.interval}")
            if self.end is not None and self.end < self.start:
                raise CacheSpecError(f"static end {self.end} is before its start {self.start}")

    @property
    def spec(self) -> str:
        """The canonical spelling, which :func:`parse_cache` reads back to this config."""
        if self.method == "static":
            return f"static:{self.start},{'' if self.end is None else self.end},{self.interval}"
        if self.diffusers:
            return f"fbc:{self.threshold:g},diffusers"
        last = "" if self.force_last else ",force_last=0"
        return f"fbc:{self.threshold:g},warmup={self.warmup},max_skips={self.max_skips}{last}"

    @property
    def reuses(self) -> bool:
        """False when the policy can never reuse anything (threshold 0, interval 1): then it is the plain call."""
        return self.threshold > 0 if self.method == "fbc" else self.interval > 1

    def static_computes(self, step: int) -> bool:
        inside = step >= self.start and (self.end is None or step <= self.end)
        return not inside or (step - self.start) % self.interval == 0


def parse_cache(spec: str | CacheConfig | None) -> CacheConfig | None:
    """``None``, ``""``, ``"off"`` or ``"none"``: no caching. ``fbc:THRESHOLD[,warmup=N][,max_skips=N]
    [,force_last=0|1][,diffusers]``; ``static:START,END,INTERVAL`` (END empty: to the end of the pass)."""
    if spec is None or isinstance(spec, CacheConfig):
        return spec
    if not isinstance(spec, str):
        raise CacheSpecError(f"a cache spec is a string such as 'fbc:0.1' or 'static:2,20,3', got {spec!r}")
    text = spec.strip().lower()
    if text in ("", "off", "none"):
        return None
    method, _, args = text.partition(":")
    parts = [p.strip() for p in args.split(",")] if args else []
    try:
        if method == "static":
            if len(parts) != 3:
                raise CacheSpecError(f"{spec!r}: static takes START,END,INTERVAL, e.g. static:2,20,3")
            end = None if parts[1] in ("", "-", "none") else int(parts[1])
            return CacheConfig("static", start=int(parts[0]), end=end, interval=int(parts[2]))
        if method == "fbc":
            if not parts:
                raise CacheSpecError(f"{spec!r}: fbc takes a threshold, e.g. fbc:0.1")
            kw: dict[str, object] = {"threshold": float(parts[0])}
            for opt in parts[1:]:
                key, eq, value = opt.partition("=")
                if key == "diffusers" and not eq:
                    kw["diffusers"] = True
                elif key in ("warmup", "max_skips") and eq:
                    kw[key] = int(value)
                elif key == "force_last" and value in ("0", "1"):
                    kw[key] = value == "1"
                else:
                    raise CacheSpecError(
                        f"unknown fbc option {opt!r} (warmup=N, max_skips=N, force_last=0|1, diffusers)"
                    )
            return CacheConfig("fbc", **kw)  # type: ignore[arg-type]
    except ValueError as e:
        if isinstance(e, CacheSpecError):
            raise
        raise CacheSpecError(f"{spec!r}: expected numbers ({e})") from None
    raise CacheSpecError(f"{spec!r}: unknown method {method!r}; use fbc:THRESHOLD or static:START,END,INTERVAL")


# --------------------------------------------------------------------------------------------------------------------
# What happened: one record per transformer call, a report per pass and per request
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepRecord:
    """One transformer call of a pass: per guidance branch whether it was reused, and the decision's indicator."""

    step: int
    label: str
    branches: tuple[str, ...]
    reused: tuple[bool, ...]  # per branch
    indicator: tuple[float | None, ...]  # per branch (fbc: the relative change of block 0's residual), None if unused
    blocks: int  # the network's depth L
    blocks_reused: int  # blocks a reused branch skips: L - 1 (fbc: block 0 runs) or L (static)
    block_macs: float  # multiply-accumulates of one block on one row of the batch (all tokens)
    batch: int  # rows per branch

    @property
    def macs(self) -> float:
        return self.block_macs * self.blocks * self.batch * len(self.branches)

    @property
    def macs_saved(self) -> float:
        return self.block_macs * self.blocks_reused * self.batch * sum(self.reused)


@dataclass(frozen=True)
class PassCacheReport:
    pass_index: int
    spec: str
    steps: tuple[StepRecord, ...]

    @property
    def full_steps(self) -> tuple[int, ...]:
        """Steps every branch of which ran the whole network."""
        return tuple(r.step for r in self.steps if not any(r.reused))

    @property
    def reused_steps(self) -> tuple[int, ...]:
        """Steps every branch of which reused cached work."""
        return tuple(r.step for r in self.steps if all(r.reused))

    @property
    def partial_steps(self) -> tuple[int, ...]:
        """Steps where some branches ran in full and others reused."""
        return tuple(r.step for r in self.steps if any(r.reused) and not all(r.reused))

    @property
    def compute_saved(self) -> float:
        total = sum(r.macs for r in self.steps)
        return sum(r.macs_saved for r in self.steps) / total if total else 0.0


@dataclass(frozen=True)
class CacheReport:
    """What step caching did in one request: per pass, and the share of the transformer's block compute saved
    (multiply-accumulates, weighted by each call's batch and token count)."""

    passes: tuple[PassCacheReport, ...]

    @property
    def compute_saved(self) -> float:
        steps = [r for p in self.passes for r in p.steps]
        total = sum(r.macs for r in steps)
        return sum(r.macs_saved for r in steps) / total if total else 0.0

    @property
    def ideal_speedup(self) -> float:
        """The transformer speed-up if time were proportional to block compute: 1 / (1 - saved)."""
        return 1.0 / (1.0 - self.compute_saved) if self.compute_saved < 1 else math.inf

    def summary(self) -> str:
        parts = []
        for p in self.passes:
            n = len(p.steps)
            parts.append(
                f"pass {p.pass_index + 1} {p.spec}: {len(p.full_steps)}/{n} steps in full, reused {list(p.reused_steps)}"
                + (f", partly {list(p.partial_steps)}" if p.partial_steps else "")
            )
        return f"step cache: {'; '.join(parts)}; block compute saved {100 * self.compute_saved:.0f}%"


class CacheReporting(Protocol):
    """A transformer call that says what it cached (:class:`StepCache`, or a wrapper around one that passes it on);
    ``Pipeline.generate`` gathers these into :attr:`GenerationResult.cache`."""

    def report(self) -> PassCacheReport: ...


# --------------------------------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class _Branch:
    """One (network, guidance branch)'s cache: the residual to reuse and, for fbc, block 0's residual then."""

    residual: torch.Tensor | None = None  # (B, N, D)
    first: torch.Tensor | None = None  # fbc: block 0's residual at the last computed step, (B, N, D)
    skips: int = 0  # reused steps in a row
    seen: int = -2  # the last step this branch was called at


@dataclass
class _Rows:
    """Rows of the branch-major batch: a slice where they are contiguous (views, no copies), else an index."""

    index: slice | torch.Tensor

    @classmethod
    def of(cls, branches: list[int], batch: int, device: torch.device) -> _Rows:
        if branches == list(range(branches[0], branches[-1] + 1)):
            return cls(slice(branches[0] * batch, (branches[-1] + 1) * batch))
        rows = [k * batch + i for k in branches for i in range(batch)]
        return cls(torch.tensor(rows, device=device))

    def covers(self, n: int) -> bool:
        return isinstance(self.index, slice) and self.index == slice(0, n)

    def take(self, t: torch.Tensor, dim: int = 0) -> torch.Tensor:
        if isinstance(self.index, slice):
            return t[(slice(None),) * dim + (self.index,)]
        return t.index_select(dim, self.index)


def _take_text(text: PreparedText, rows: _Rows) -> PreparedText:
    kv = tuple((rows.take(k), rows.take(v)) for k, v in text.kv)
    return replace(text, kv=kv, bias=None if text.bias is None else rows.take(text.bias))


class StepCache:
    """The ``CallTransformer`` of one pass with step caching (module docstring).

    ``num_steps``: the pass's steps (for the forced last step); ``inner``: the call the cache wraps (default
    :meth:`TransformerCall.run`), which runs every step the cache leaves whole; ``reduce``: applied to the fbc
    indicator's partial sums (K, 2) before the decision (identity; a sequence-parallel caller sums over its ranks).
    A branch that was not in the previous step's batch starts over (computes): its
    cached work would be older than one step. :attr:`records` holds one :class:`StepRecord` per call."""

    def __init__(
        self,
        config: CacheConfig,
        num_steps: int,
        *,
        pass_index: int = 0,
        inner: Callable[[TransformerCall], torch.Tensor] | None = None,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.config = config
        self.num_steps = num_steps
        self.pass_index = pass_index
        self.inner = inner or _run
        self.reduce = reduce or (lambda t: t)
        self.records: list[StepRecord] = []
        self._state: dict[tuple[str, str], _Branch] = {}
        self._batch_key: tuple[str, tuple[str, ...]] | None = None

    def report(self) -> PassCacheReport:
        return PassCacheReport(self.pass_index, self.config.spec, tuple(self.records))

    def __call__(self, call: TransformerCall) -> torch.Tensor:
        c, step = self.config, call.step
        states = [self._state.setdefault((call.label, b), _Branch()) for b in call.branches]
        for s in states:
            if s.seen != step - 1:
                s.residual = s.first = None
                s.skips = 0
            s.seen = step
        if c.diffusers and (call.label, call.branches) != self._batch_key:
            # diffusers keeps one state for the whole batch and would broadcast it onto a new one: start over.
            for s in states:
                s.residual = s.first = None
            self._batch_key = (call.label, call.branches)
        if not c.reuses:
            return self._plain(call, len(states))
        if c.method == "static":
            return self._static(call, states)
        if not c.diffusers and self._forced(step) and not (step + 1 < self.num_steps and not self._forced(step + 1)):
            return self._plain(call, len(states))  # computes, and nothing reads what it would cache
        return self._fbc(call, states)

    def _forced(self, step: int) -> bool:
        """fbc: the steps that compute whatever the indicator says."""
        c = self.config
        return step < c.warmup or (c.force_last and step == self.num_steps - 1)

    def _plain(self, call: TransformerCall, n: int) -> torch.Tensor:
        self._record(call, [False] * n, [None] * n, 0)
        return self.inner(call)

    def _static(self, call: TransformerCall, states: list[_Branch]) -> torch.Tensor:
        c, step, b = self.config, call.step, call.batch
        reuse = [not c.static_computes(step) and s.residual is not None for s in states]
        if not any(reuse) and not (step + 1 < self.num_steps and not c.static_computes(step + 1)):
            return self._plain(call, len(states))
        m = call.model
        x, modulation, embedded = m.embed(call.tokens, call.timesteps)
        compute = [k for k, r in enumerate(reuse) if not r]
        if compute:
            after, before = self._run_rows(call, x, modulation, _Rows.of(compute, b, x.device), 0)
            for j, k in enumerate(compute):
                states[k].residual = _branch(after, j, b) - _branch(before, j, b)
        for k, r in enumerate(reuse):
            if r:
                _branch(x, k, b).add_(states[k].residual)
        self._record(call, reuse, [None] * len(reuse), len(m.transformer_blocks))
        return m.head(x, embedded)

    def _fbc(self, call: TransformerCall, states: list[_Branch]) -> torch.Tensor:
        c, m, b = self.config, call.model, call.batch
        x, modulation, embedded = m.embed(call.tokens, call.timesteps)
        skips = m.skip_masks(call.skip_mask, x.shape[0], x.dtype)
        h = x.clone()
        x = m.run_blocks(x, call.text, modulation, call.rope, skips, call.skip_strategy, start=0, stop=1)
        first = x - h  # (nB, N, D): block 0's residual
        del h
        indicator: list[float | None] = [None] * len(states)
        ready = [s.first is not None and s.residual is not None for s in states]
        if c.diffusers:  # one decision over the whole batch, computed iff d > threshold
            ask = list(range(len(states))) if all(ready) else []
        else:
            ask = [] if self._forced(call.step) else [k for k, r in enumerate(ready) if r]
        if ask:
            # Sums of |r - r_ref| and |r_ref| per branch, in float32, reduced by ``reduce`` (a sequence-parallel
            # wrapper sums them over its ranks, so every rank decides alike); one host sync for every branch.
            stats = torch.stack(
                [
                    torch.stack(
                        [
                            (_branch(first, k, b) - states[k].first).abs().sum(dtype=torch.float32),
                            states[k].first.abs().sum(dtype=torch.float32),  # type: ignore[union-attr]
                        ]
                    )
                    for k in ask
                ]
            )
            sums = self.reduce(stats).tolist()
            if c.diffusers:
                num, den = sum(s[0] for s in sums), sum(s[1] for s in sums)
                for k in ask:
                    indicator[k] = num / den if den > 0 else math.inf
            else:
                for k, (num, den) in zip(ask, sums):
                    indicator[k] = num / den if den > 0 else math.inf
        if c.diffusers:
            reuse = [v is not None and not v > c.threshold for v in indicator]
        else:
            cap = c.max_skips or math.inf
            reuse = [v is not None and v < c.threshold and s.skips < cap for v, s in zip(indicator, states)]
        compute = [k for k, r in enumerate(reuse) if not r]
        if compute:
            rows = _Rows.of(compute, b, x.device)
            after, before = self._run_rows(call, x, modulation, rows, 1, skips)
            first_rows = rows.take(first)
            for j, k in enumerate(compute):
                s = states[k]
                s.residual = _branch(after, j, b) - _branch(before, j, b)
                s.first, s.skips = _branch(first_rows, j, b), 0
        for k, r in enumerate(reuse):
            if r:
                _branch(x, k, b).add_(states[k].residual)
                states[k].skips += 1
        self._record(call, reuse, indicator, len(m.transformer_blocks) - 1)
        return m.head(x, embedded)

    def _run_rows(
        self,
        call: TransformerCall,
        x: torch.Tensor,
        modulation: torch.Tensor,
        rows: _Rows,
        start: int,
        skips: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Blocks ``start``.. on ``rows`` of x (written back into x); returns those rows after and before."""
        m = call.model
        if start == 0:
            skips = m.skip_masks(call.skip_mask, x.shape[0], x.dtype)
        sub = rows.take(x)
        before = sub.clone()
        if rows.covers(x.shape[0]):
            text, mod, rope, sk = call.text, modulation, call.rope, skips
        else:
            text, mod = _take_text(call.text, rows), rows.take(modulation)
            cos, sin = call.rope
            rope = (cos, sin) if cos.shape[0] == 1 else (rows.take(cos), rows.take(sin))
            sk = None if skips is None else rows.take(skips, dim=1)
        sub = m.run_blocks(sub, text, mod, rope, sk, call.skip_strategy, start=start)
        if not isinstance(rows.index, slice):  # a copy: write the rows back (a slice's view was updated in place)
            x.index_copy_(0, rows.index, sub)
        return sub, before

    def _record(
        self, call: TransformerCall, reused: list[bool], indicator: list[float | None], blocks_reused: int
    ) -> None:
        d = call.model.cfg.inner_dim
        n = call.tokens.shape[1]
        text = call.text.kv[0][0].shape[1]
        self.records.append(
            StepRecord(
                step=call.step,
                label=call.label,
                branches=tuple(call.branches),
                reused=tuple(reused),
                indicator=tuple(indicator),
                blocks=len(call.model.transformer_blocks),
                blocks_reused=blocks_reused,
                block_macs=float(n * (_PROJ_MACS * d * d + 2 * n * d + 2 * text * d)),
                batch=call.batch,
            )
        )


def _run(call: TransformerCall) -> torch.Tensor:
    return call.run()


def _branch(t: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    """Branch ``k``'s rows of a branch-major tensor (a view)."""
    return t[k * batch : (k + 1) * batch]
