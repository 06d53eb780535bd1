"""IC-LoRA control: the pipeline against a plain loop over the official transformer, control tokens that never move,
per-pass controls (multi-scale, detailer), control media handling and the Canny preprocessor."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ltxv.conditioning.control import canny
from ltxv.conditioning.state import ControlItem, EncodedItem, build_state
from ltxv.model.patchify import latent_grid, patchify, pixel_positions
from ltxv.pipelines.denoise import TransformerCall
from ltxv.pipelines.generate import Pipeline, load_pipeline
from ltxv.pipelines.request import (
    ConditioningMedia,
    ControlVideo,
    GenerationRequest,
    PassSettings,
    Recipe,
    RequestError,
)
from ltxv.sampling.latent_ops import adain
from ltxv.sampling.samplers import sample_rectified_flow
from ltxv.testing.checkpoints import write_tiny_kit

H, W, F = 64, 96, 17
BASE = Recipe(first_pass=PassSettings(num_inference_steps=3))
MULTI = Recipe(
    pipeline_type="multi-scale",
    first_pass=PassSettings(timesteps=(1.0, 0.9)),
    second_pass=PassSettings(timesteps=(0.9, 0.5)),
)
TOL = 1e-5


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory):
    return write_tiny_kit(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def pipe(kit) -> Pipeline:
    return load_pipeline(kit.checkpoint, upsampler=kit.upsampler, text_encoder=kit.text_encoder, dtype=torch.float32)


def _video(seed: int, frames: int = F, h: int = H, w: int = W) -> torch.Tensor:
    """(3, F, H, W) in [-1, 1]: smooth moving colour fields, so the VAE sees structure."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, frames, 3, 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(frames, h, w), mode="trilinear")[0]


def _request(recipe: Recipe = BASE, conditioning: tuple = (), **kw: object) -> GenerationRequest:
    kw = {"image_cond_noise_scale": 0.15, **kw}
    return GenerationRequest(
        "a dancer", height=H, width=W, num_frames=F, seed=11, recipe=recipe, conditioning=conditioning, **kw
    )


# --- the pipeline against a plain loop over the official transformer -------------------------------------------------


@pytest.fixture(scope="module")
def official(kit):
    ref_t3d = pytest.importorskip("ltx_video.models.transformers.transformer3d")
    from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
    from ltx_video.models.autoencoders.vae_encode import normalize_latents

    transformer = ref_t3d.Transformer3DModel.from_pretrained(str(kit.checkpoint)).float().eval()
    vae = CausalVideoAutoencoder.from_pretrained(str(kit.checkpoint)).float().eval()

    def encode(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        dist = vae.encode(x.unsqueeze(0)).latent_dist
        z = dist.mode() if generator is None else dist.sample(generator=generator)
        return normalize_latents(z, vae, vae_per_channel_normalize=True)

    return transformer, encode


def _reference_loop(
    pipe: Pipeline, official, req: GenerationRequest, control: torch.Tensor, image=None
) -> torch.Tensor:
    """Euler over the official transformer with the control latents appended as tokens: the video's positions
    duplicated, timestep 0, never updated, cropped at the end. ``image``: hard at frame 0, with the reference's
    per-step conditioning noise on its tokens (and none on the control's)."""
    transformer, encode = official
    cfg = pipe.models.transformer.cfg
    f, h, w = (F - 1) // 8 + 1, H // 32, W // 32
    n = f * h * w
    noise_gen, aux = torch.Generator().manual_seed(req.seed), torch.Generator().manual_seed(req.seed)
    x = torch.randn((1, n, cfg.in_channels), generator=noise_gen)  # token layout, as the reference draws it
    strength = torch.zeros(1, n)
    if image is not None:
        z_img = encode(image.unsqueeze(1), aux)  # (1, C, 1, h, w), the posterior sample, as the pipeline's
        lat = x.transpose(1, 2).reshape(1, -1, f, h, w)
        lat[:, :, :1] = torch.lerp(lat[:, :, :1], z_img, 1.0)
        x = patchify(lat)
        strength[:, : h * w] = 1.0
    ctrl = patchify(encode(control))  # (1, n, C), the posterior mean
    clean = x.clone()
    pos = pixel_positions(latent_grid(f, h, w, 1), causal_fix=cfg.causal_temporal_positioning, frame_rate=1.0)
    pos = torch.cat([pos, pos], dim=2).float()
    pos[:, 0] = pos[:, 0] * (1.0 / req.frame_rate)
    text, mask = pipe.text_encoder.encode([req.prompt])
    ts = pipe.pass_timesteps(req, 0, H, W, False)
    hard = (strength > 0.5).unsqueeze(-1)
    for i, t in enumerate(ts):
        if image is not None:
            eps = torch.randn((1, 2 * n, cfg.in_channels), generator=noise_gen)[:, :n]
            x = torch.where(hard, clean + req.image_cond_noise_scale * eps * t**2, x)
        t_tok = torch.cat([torch.min(t, 1.0 - strength), torch.zeros(1, n)], dim=1)
        with torch.no_grad():
            v = transformer(
                torch.cat([x, ctrl], dim=1),
                indices_grid=pos,
                encoder_hidden_states=text,
                encoder_attention_mask=mask,
                timestep=t_tok,
                return_dict=False,
            )[0][:, :n]
        nxt = ts[i + 1] if i + 1 < len(ts) else torch.tensor(0.0)
        x = torch.where(hard, x, x - (t - nxt) * v)
    return x


@pytest.mark.parametrize("with_image", [False, True], ids=["control", "control+image"])
def test_latents_equal_a_plain_loop_over_the_official_transformer(pipe, official, with_image: bool) -> None:
    control = _video(1)
    image = _video(2, frames=1)[:, 0]
    items = (ControlVideo(control),) + ((ConditioningMedia(image, 0, 1.0),) if with_image else ())
    req = _request(conditioning=items)
    result = pipe.generate(req)
    assert result.video.shape == (F, H, W, 3)
    assert result.latents.shape == (1, 16, (F - 1) // 8 + 1, H // 32, W // 32)
    want = _reference_loop(pipe, official, req, control, image if with_image else None)
    diff = (patchify(result.latents) - want).abs().max().item()
    print(f"max |ltxv - plain loop| = {diff:.2e}")
    assert diff <= TOL
    # Not vacuous: the control steers the result.
    other = pipe.generate(_request(conditioning=(ControlVideo(_video(3)), *items[1:])))
    assert (other.latents - result.latents).abs().max() > 1e-3


# --- control tokens never move ----------------------------------------------------------------------------------------


class Recorder:
    """A ``transformer_call`` hook that records what every transformer call saw."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (pass, tokens, timesteps)

    def hook(self, request: GenerationRequest, pass_index: int):
        def call(c: TransformerCall) -> torch.Tensor:
            self.calls.append((pass_index, c.tokens.clone(), c.timesteps.clone()))
            return c.run()

        return call


def _recording(pipe: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(pipe, "transformer_call", rec.hook)
    return rec


def test_hard_control_tokens_never_change_and_sit_at_t0(pipe, monkeypatch) -> None:
    rec = _recording(pipe, monkeypatch)
    image = _video(2, frames=1)[:, 0]
    pipe.generate(_request(conditioning=(ControlVideo(_video(1)), ConditioningMedia(image, 0, 1.0))))
    n = ((F - 1) // 8 + 1) * (H // 32) * (W // 32)
    first = rec.calls[0][1][:, n:]
    assert first.shape[1] == n
    image_tokens = [c[1][:, : (H // 32) * (W // 32)] for c in rec.calls]
    for _, tokens, t in rec.calls:
        assert torch.equal(tokens[:, n:], first)  # bit for bit, although image_cond_noise_scale = 0.15
        assert bool((t[:, n:] == 0).all())
    assert not torch.equal(image_tokens[0], image_tokens[1])  # the image's hard tokens do get the reference's noise


def test_sampler_keeps_keep_clean_tokens_and_noises_the_other_hard_ones() -> None:
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 2, 2, 3, generator=g)
    image = EncodedItem(torch.randn(1, 16, 1, 2, 3, generator=g), 0, 1.0)
    control = ControlItem(torch.randn(1, 16, 2, 2, 3, generator=g), 1.0)
    soft = ControlItem(torch.randn(1, 16, 2, 2, 3, generator=g), 0.5)
    state = build_state(latents, [image, control, soft], generator=g, causal_fix=True)
    n = 12
    assert state.latents.shape[1] == 3 * n and state.num_control == 2 * n and state.video == slice(0, n)
    assert torch.equal(state.positions[:, :, n : 2 * n], state.positions[:, :, :n])  # shared positions
    assert torch.equal(state.positions[:, :, 2 * n :], state.positions[:, :, :n])
    assert torch.equal(state.latents[:, n : 2 * n], patchify(control.latents))  # hard: exactly the latents
    seen = []

    def velocity(i: int, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append((x.clone(), t.clone()))
        return torch.randn(x.shape, generator=g)

    ts = torch.tensor([1.0, 0.75, 0.4, 0.2])
    out = sample_rectified_flow(
        velocity,
        state.latents,
        ts,
        strength=state.strength,
        clean=state.clean,
        image_cond_noise_scale=0.15,
        keep_clean=state.keep_clean,
        noise=g,
    )
    for x, t in seen:
        assert torch.equal(x[:, n : 2 * n], state.clean[:, n : 2 * n])
        assert bool((t[:, n : 2 * n] == 0).all()) and bool((t[:, 2 * n :] <= 0.5).all())
    assert not torch.equal(seen[1][0][:, :6], state.clean[:, :6])  # the image's tokens are noised
    assert torch.equal(out[:, n : 2 * n], state.clean[:, n : 2 * n])
    assert not torch.equal(out[:, 2 * n :], state.latents[:, 2 * n :])  # a soft control moves once t < 1 - s


# --- multi-scale: control in the first pass, a detailer in the second -------------------------------------------------


def test_multiscale_control_in_pass_one_and_detailer_guided_by_the_upsampled_latents(pipe, monkeypatch) -> None:
    rec = _recording(pipe, monkeypatch)
    low: list[torch.Tensor] = []

    def keep_low(e) -> None:
        if e.stage == "denoise" and e.pass_index == 0 and e.done == e.total:
            low.append(e.latents)

    items = (ControlVideo(_video(1)), ControlVideo(None, passes=(1,)))
    pipe.generate(_request(MULTI, items), callback=keep_low)
    tokens = {p: [c[1] for c in rec.calls if c[0] == p] for p in (0, 1)}
    (h1, w1), (h2, w2) = pipe.pass_sizes(_request(MULTI))
    f = (F - 1) // 8 + 1
    assert tokens[0][0].shape[1] == 2 * f * (h1 // 32) * (w1 // 32)
    n2 = f * (h2 // 32) * (w2 // 32)
    assert tokens[1][0].shape[1] == 2 * n2
    up = adain(pipe.models.upsampler(low[0]), low[0])
    for t in tokens[1]:
        assert torch.equal(t[:, n2:], patchify(up))  # the detailer reads the upsampled first pass, clean


def test_control_passes_are_checked() -> None:
    with pytest.raises(RequestError, match="passes"):
        _request(BASE, (ControlVideo(_video(1), passes=(1,)),)).validate()
    with pytest.raises(RequestError, match="starts from noise"):
        _request(BASE, (ControlVideo(None),)).validate()
    with pytest.raises(RequestError, match="strength"):
        _request(BASE, (ControlVideo(_video(1), strength=0.0),)).validate()
    with pytest.raises(RequestError, match="preprocess"):
        _request(BASE, (ControlVideo(_video(1), preprocess="depth"),)).validate()
    _request(MULTI, (ControlVideo(_video(1), passes=(0, 1)), ControlVideo(None, passes=(1,)))).validate()


# --- control media: length, size, files, canny ------------------------------------------------------------------------


def test_control_length_and_size(pipe, caplog, monkeypatch) -> None:
    with pytest.raises(RequestError, match="ask for 9 frames or fewer"):
        pipe.generate(_request(conditioning=(ControlVideo(_video(1, frames=12)),)))
    rec = _recording(pipe, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="ltxv"):
        long = pipe.generate(_request(conditioning=(ControlVideo(_video(1, frames=F + 8)),))).latents
    assert any("first 17 of its 25 frames" in r.message for r in caplog.records)
    assert torch.equal(
        long, pipe.generate(_request(conditioning=(ControlVideo(_video(1, frames=F + 8)[:, :F]),))).latents
    )
    small = _video(1, h=32, w=48)  # resized to the pass's size
    out = pipe.generate(_request(conditioning=(ControlVideo(small),)))
    assert out.video.shape == (F, H, W, 3)
    assert rec.calls[-1][1].shape[1] == 2 * ((F - 1) // 8 + 1) * (H // 32) * (W // 32)


def test_canny_matches_opencv_on_the_frames() -> None:
    cv2 = pytest.importorskip("cv2")
    video = -torch.ones(1, 3, 2, 40, 60)
    video[:, :, 0, 10:30, 15:45] = 1.0  # a white box on black
    video[:, 1, 1] = torch.linspace(-1, 1, 60)  # a green ramp: weak gradients, no edges at 100/200
    edges = canny(video)
    assert edges.shape == video.shape and set(edges.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(edges[:, 0], edges[:, 1]) and torch.equal(edges[:, 0], edges[:, 2])
    for k in range(2):
        u8 = ((video[0, :, k] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        want = cv2.Canny(cv2.cvtColor(u8, cv2.COLOR_RGB2GRAY), 100, 200)
        assert torch.equal((edges[0, 0, k] > 0), torch.from_numpy(want > 0))
    box = edges[0, 0, 0] > 0
    assert box[10:30, 15:45].any() and not box[:5].any() and not box[12:28, 18:42].any()


def test_control_from_a_file_with_canny(pipe, tmp_path: Path) -> None:
    from ltxv.io.video import write_mp4

    frames = ((_video(4, frames=F, h=80, w=120).permute(1, 2, 3, 0) + 1) * 127.5).round().to(torch.uint8)
    path = write_mp4(tmp_path / "source.mp4", frames, fps=24)  # (F, H, W, 3) uint8
    out = pipe.generate(_request(conditioning=(ControlVideo(str(path), preprocess="canny"),)))
    assert out.video.shape == (F, H, W, 3)
    from ltxv.pipelines.media import load_request_media

    req = _request(conditioning=(ControlVideo(str(path), preprocess="canny"),))
    (control,) = load_request_media(req, H, W, F).control
    assert control.media.shape == (1, 3, F, H, W)
    assert set(control.media.unique().tolist()) <= {-1.0, 1.0}  # an edge video, at the requested size


def test_memory_estimate_counts_the_control_tokens(pipe) -> None:
    plain = pipe.memory_estimate(_request())
    controlled = pipe.memory_estimate(_request(conditioning=(ControlVideo(_video(1)),)))
    plain_work, controlled_work = (next(s.working for s in e.stages if s.name == "pass1") for e in (plain, controlled))
    assert controlled_work > plain_work


def test_control_composes_with_a_keyframe(pipe, monkeypatch) -> None:
    rec = _recording(pipe, monkeypatch)
    key = _video(5, frames=1)[:, 0]
    req = _request(conditioning=(ConditioningMedia(key, 8, 1.0), ControlVideo(_video(1))))
    pipe.generate(replace(req, image_cond_noise_scale=0.0))
    hw = (H // 32) * (W // 32)
    n = ((F - 1) // 8 + 1) * hw
    tokens = rec.calls[0][1]
    assert tokens.shape[1] == hw + n + n  # keyframe tokens first, then the video, then the control
