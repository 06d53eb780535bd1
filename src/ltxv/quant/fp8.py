"""FP8 (float8_e4m3fn) linear layers for the transformer blocks: a module swap, not a patch.

What the official ``-fp8`` checkpoints hold (Lightricks' ``LTX-Video-Q8-Kernels/scripts/convert_weights.py``): under
``transformer_blocks``, every 2-D ``weight`` of an ``attn*`` or ``ff.`` module is a plain ``.to(float8_e4m3fn)`` cast
of the bf16 weight, no scale tensor stored; biases, q/k norms, scale-shift tables and everything outside the blocks
stay bf16. So a block's ``attn1``/``attn2`` ``to_q``, ``to_k``, ``to_v``, ``to_out.0`` and ``ff.net.0.proj``,
``ff.net.2`` are the fp8 linears (:data:`FP8_LINEAR_PATTERN`).

:class:`Fp8Linear` keeps the checkpoint's key names (``weight`` in fp8, ``bias`` in the compute dtype) plus a
per-tensor ``weight_scale``: a non-persistent constant 1 for the official plain casts, a persistent float32 scalar
when ltxv quantised the weight itself (:func:`quantize_fp8`, absmax) or the file stores one. The real weight is
``weight.float() * weight_scale``.

Build on the meta device, :func:`swap_to_fp8`, then load the state dict with ``assign=True`` (gpt-fast's
``quantize.py`` pattern); or :func:`quantize_` an already loaded model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8).max)  # 448
SCALE = "weight_scale"

# Module names (no ``model.diffusion_model.`` prefix) of the linears the official fp8 files store in fp8.
FP8_LINEAR_PATTERN = re.compile(
    r"transformer_blocks\.\d+\.(?:attn[12]\.(?:to_q|to_k|to_v|to_out\.0)|ff\.net\.(?:0\.proj|2))"
)
# torch._scaled_mm (cuBLASLt) wants both matrix dims of the weight to be multiples of 16.
_MM_ALIGN = 16


def is_fp8_linear_name(name: str) -> bool:
    """Whether ``name`` (a module name inside the transformer) is one of the block linears fp8 files quantise."""
    return FP8_LINEAR_PATTERN.fullmatch(name) is not None


def quantize_fp8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor absmax quantisation: (fp8 weight, float32 scalar scale) with ``w ~= q.float() * scale``.

    The largest magnitude maps to 448 (the e4m3 maximum), so nothing saturates and the relative rounding error of a
    normal value is at most 2^-4. An all-zero tensor gets scale 1. Computed in float32, one tensor at a time."""
    w32 = w.detach().float()
    amax = w32.abs().amax()
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    q = (w32 / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


def _quantize_activation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic per-tensor scaling of the input -> (fp8 x, float32 scale), on the device (no host sync).

    bf16/fp32 inputs are scaled in their own dtype (no float32 copy of the activations); the scale returned is the
    exact inverse of the multiplier actually applied, so the rounding of that multiplier does not bias the result."""
    work = x if x.dtype in (torch.bfloat16, torch.float32) else x.float()  # fp16 could overflow 448 / amax
    amax = torch.linalg.vector_norm(work, float("inf")).float().clamp(min=1e-12)
    inv = (FP8_MAX / amax).to(work.dtype)
    return (work * inv).clamp(-FP8_MAX, FP8_MAX).to(FP8), inv.float().reciprocal()


def scaled_mm_linear(
    x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``x @ (weight * weight_scale).T + bias`` on fp8 tensor cores: x is quantised per tensor on the fly.

    x (..., K) in bf16/fp16/fp32, weight (N, K) fp8 with K, N multiples of 16 -> (..., N) in x's dtype."""
    shape = x.shape
    xq, x_scale = _quantize_activation(x.reshape(-1, shape[-1]))  # (M, K)
    # cuBLASLt takes a bias only in the 16-bit output dtype (or bf16 for fp32 output); add any other one afterwards.
    fused = bias is not None and bias.dtype == x.dtype and x.dtype in (torch.bfloat16, torch.float16)
    out = torch._scaled_mm(
        xq,
        weight.t(),  # (K, N) column-major, as cuBLASLt wants the second operand
        scale_a=x_scale,
        scale_b=weight_scale.float(),
        bias=bias if fused else None,
        out_dtype=x.dtype,
    )
    if bias is not None and not fused:
        out = out + bias.to(out.dtype)
    return out.view(*shape[:-1], weight.shape[0])


_CAPABLE: dict[int, bool] = {}


def _has_fp8_matmul(device: torch.device) -> bool:
    """CUDA compute capability >= 8.9 (Ada, Hopper, Blackwell); cached per device, queried on first use only."""
    if device.type != "cuda":
        return False
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _CAPABLE:
        _CAPABLE[index] = torch.cuda.get_device_capability(index) >= (8, 9)
    return _CAPABLE[index]


class Fp8Linear(nn.Module):
    """A linear layer with a float8_e4m3fn weight and a per-tensor float32 scale (module docstring).

    Forward: ``torch._scaled_mm`` with a dynamic per-tensor input scale on CUDA GPUs with fp8 tensor cores (compute
    capability >= 8.9), when ``use_scaled_mm`` and the shapes allow; otherwise the weight is upcast to the input's
    dtype, scaled, and used by ``F.linear`` (weight-only fp8: the matmul runs in the input's precision).
    """

    use_scaled_mm: bool = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        scaled: bool = False,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.scaled = in_features, out_features, scaled
        self.weight = nn.Parameter(
            torch.empty(out_features, in_features, dtype=FP8, device=device), requires_grad=False
        )
        self.bias = (
            nn.Parameter(torch.empty(out_features, dtype=dtype, device=device), requires_grad=False) if bias else None
        )
        if scaled:
            self.register_buffer(SCALE, torch.ones((), dtype=torch.float32, device=device))
        else:
            # The constant 1 of a plain cast is no checkpoint state, so no state dict fills it: never leave it on the
            # meta device the loader builds on (the loader's final .to(device) moves it with the rest).
            where = torch.device(device) if device is not None else torch.get_default_device()
            where = torch.device("cpu") if where.type == "meta" else where
            self.register_buffer(SCALE, torch.ones((), dtype=torch.float32, device=where), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if (
            self.use_scaled_mm
            and w.shape[0] % _MM_ALIGN == 0
            and w.shape[1] % _MM_ALIGN == 0
            and _has_fp8_matmul(x.device)
        ):
            return scaled_mm_linear(x, w, self.weight_scale, self.bias)
        w = w.to(x.dtype)
        if self.scaled:
            w = w * self.weight_scale.to(x.dtype)
        return F.linear(x, w, self.bias)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight this layer represents, (out, in) in ``dtype`` (exactly what the upcast forward multiplies)."""
        w = self.weight.to(dtype)
        return w * self.weight_scale.to(dtype) if self.scaled else w

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Fp8Linear:
        # Module.to(dtype) casts every floating tensor, fp8 included: a model-wide .to(torch.bfloat16) would silently
        # upcast the weight. Keep the fp8 weight and the float32 scale in their dtypes; devices still follow ``fn``.
        # One layer's weight is upcast transiently; fp8 -> bf16/fp16/fp32 -> fp8 is exact.
        super()._apply(fn, recurse)
        if self.weight.dtype != FP8:
            self.weight.data = self.weight.data.to(FP8)
        scale = getattr(self, SCALE)
        if scale.dtype != torch.float32:
            setattr(self, SCALE, scale.float())
        return self

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"scaled={self.scaled}"
        )


def fp8_linear_names(model: nn.Module) -> list[str]:
    """Names of the ``nn.Linear`` modules of ``model`` that the official fp8 files store in fp8."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and is_fp8_linear_name(n)]


def _linears(model: nn.Module, include: Iterable[str] | None) -> list[tuple[str, nn.Linear]]:
    names = fp8_linear_names(model) if include is None else list(include)
    modules = dict(model.named_modules())
    out = []
    for name in names:
        m = modules.get(name)
        if not isinstance(m, nn.Linear):
            raise ValueError(f"{name!r} is not an nn.Linear of the model (got {type(m).__name__})")
        out.append((name, m))
    return out


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def swap_to_fp8(model: nn.Module, include: Iterable[str] | None = None, *, scaled: bool = False) -> nn.Module:
    """Replace the linears ``include`` names (default: :func:`fp8_linear_names`) by empty :class:`Fp8Linear` s of the
    same shape, bias dtype and device, in place; meant for the meta-device model before ``load_state_dict(assign=True)``.

    ``scaled``: the layers get a persistent ``weight_scale`` (the state dict then has one per layer)."""
    for name, lin in _linears(model, include):
        bias = lin.bias
        new = Fp8Linear(
            lin.in_features,
            lin.out_features,
            bias is not None,
            scaled=scaled,
            dtype=None if bias is None else bias.dtype,
            device=lin.weight.device,
        )
        _replace(model, name, new)
    return model


@torch.no_grad()
def quantize_(model: nn.Module, include: Iterable[str] | None = None) -> nn.Module:
    """Quantise the linears ``include`` names (default: :func:`fp8_linear_names`) of a loaded model in place:
    per-tensor absmax fp8 (:func:`quantize_fp8`), scale kept as persistent state, bias kept in its dtype."""
    for name, lin in _linears(model, include):
        q, scale = quantize_fp8(lin.weight)
        new = Fp8Linear(lin.in_features, lin.out_features, lin.bias is not None, scaled=True, device="meta")
        new.weight = nn.Parameter(q, requires_grad=False)
        setattr(new, SCALE, scale)
        if lin.bias is not None:
            new.bias = nn.Parameter(lin.bias.detach(), requires_grad=False)
        new.train(lin.training)
        _replace(model, name, new)
    return model


def module_bytes(module: nn.Module) -> int:
    """Bytes held by the module's parameters and buffers (persistent or not; a shared tensor once); works on the meta
    device."""
    tensors = {id(t): t for t in (*module.parameters(), *module.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())
