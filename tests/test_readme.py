"""The README's code blocks, run as a reader would run them: the quick start on the demo model shipped in the package,
the rest on the tiny model, through a Hugging Face cache holding the tiny kit under the released names (``ltxv.testing.hub``) stands in for the downloads, so every name resolves through the
real lookup, offline. A few values are swapped for ones a 2-core CPU runs in seconds (:data:`SUBSTITUTIONS`); each
must still be found in the README, so the test breaks when the README changes under it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import torch

from ltxv import cli
from ltxv.testing import scenes

README = Path(__file__).resolve().parents[1] / "README.md"
# (block language, README text, what the test runs instead)
SUBSTITUTIONS = (
    ("python", 'device="cuda"', 'device="cpu"'),
    ("python", "compile=True", "compile=False"),  # torch.compile takes minutes on two cores; tested elsewhere
    ("python", "height=480, width=704, num_frames=97", "height=64, width=96, num_frames=9"),
    ("bash", "--height 480 --width 704 --num-frames 97", "--height 64 --width 96 --num-frames 9"),
    # the long-video example: 12 s (289 frames, four windows) of the tiny model, on the demo's own input image
    (
        "bash",
        "--seconds 60 --frame-rate 24 --height 512 --width 768",
        "--seconds 12 --frame-rate 24 --height 64 --width 96",
    ),
    ("bash", "fox.png", "ltxv-demo/i2v-input.png"),
)
SKIPPED = ("pip install", "bash scripts/test.sh")  # installing, and this very suite


SERVING = "## Serving"  # that section's blocks talk to a live server: test_readme_serving_examples_run runs them


def blocks(lang: str, *, serving: bool = False) -> list[str]:
    """The README's ``lang`` blocks outside the serving section (or, with ``serving``, in it)."""
    sections = re.split(r"^(?=## )", README.read_text(), flags=re.M)
    text = "".join(s for s in sections if s.startswith(SERVING) == serving)
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


def substituted(lang: str, code: str, used: set[int]) -> str:
    for i, (kind, old, new) in enumerate(SUBSTITUTIONS):
        if kind == lang and old in code:
            code, _ = code.replace(old, new), used.add(i)
    return code


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ltxv.testing.checkpoints import write_tiny_kit
    from ltxv.testing.hub import write_hub_cache

    root = tmp_path_factory.mktemp("hub")
    return write_hub_cache(root / "hf-cache", write_tiny_kit(root / "kit"))


@pytest.fixture
def offline_hub(hub_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants

    cache = hub_cache
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    _write_readme_loras(work)
    return work


def _write_readme_loras(folder: Path) -> None:
    """The LoRA files the README's LoRA example loads, at the tiny model's shapes."""
    import torch

    from ltxv.lora import linear_shapes
    from ltxv.model.transformer import Transformer
    from ltxv.testing.configs import TINY_2B
    from ltxv.testing.loras import block_targets, random_factors, write_lora

    with torch.device("meta"):
        shapes = linear_shapes(Transformer(TINY_2B))
    for seed, name in enumerate(("style", "squish")):
        write_lora(folder / f"{name}.safetensors", random_factors(shapes, block_targets(shapes), 4, seed=seed))


def _decode(path: Path) -> torch.Tensor:
    from ltxv.io.video import read_video

    return read_video(path)[0]


def _read_mp4(path: Path) -> tuple[int, int, int]:
    import av

    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
        return len(frames), frames[0].height, frames[0].width


def test_readme_python_blocks_run(offline_hub: Path) -> None:
    used: set[int] = set()
    namespace: dict[str, Any] = {}
    code = blocks("python")
    assert len(code) >= 3
    for block in code:  # one namespace, in order, as a reader pastes them
        exec(compile(substituted("python", block, used), str(README), "exec"), namespace)
    assert namespace["video"].shape == (9, 64, 96, 3) and float(namespace["video"].min()) >= 0  # the last request
    assert namespace["z2"].shape[-2:] == tuple(2 * s for s in namespace["z"].shape[-2:])
    assert {i for i, s in enumerate(SUBSTITUTIONS) if s[0] == "python"} <= used, "a substitution no longer applies"


def test_readme_commands_run(offline_hub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    used: set[int] = set()
    ran = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            for command in (c.strip() for c in line.split("&&")):
                if not command or command.startswith(SKIPPED):
                    continue
                argv = shlex.split(substituted("bash", command, used))
                assert argv[0] == "ltxv", command
                assert cli.main(argv[1:]) == 0, (command, capsys.readouterr().err)
                ran.append(argv[1])
    assert ran == ["demo", "generate", "generate", "generate", "generate"]  # the quick start (2), long video, hybrid
    assert {i for i, s in enumerate(SUBSTITUTIONS) if s[0] == "bash"} <= used, "a substitution no longer applies"
    # The quick start runs the shipped demo model: real video of what its prompts say.
    clips = {"t2v": ("red", "right"), "i2v": ("cyan", "left"), "square": ("blue", "up")}
    for name, (colour, motion) in clips.items():
        path = offline_hub / ("square.mp4" if name == "square" else f"ltxv-demo/{name}.mp4")
        video = _decode(path)
        assert tuple(video.shape) == (25, 128, 128, 3), name
        assert (scenes.dominant_colour(video), scenes.motion_of(video)) == (colour, motion), name
    assert _read_mp4(offline_hub / "fox.mp4") == (9, 64, 96)
    assert _read_mp4(offline_hub / "fox-60s.mp4") == (289, 64, 96)
    assert _read_mp4(offline_hub / "hybrid.mp4") == (9, 64, 96)
    err = capsys.readouterr().err
    assert "denoise pass 1/2" in err and "denoise pass 2/2" in err  # labelled bars
    assert "Loading weights" not in err and "LOAD REPORT" not in err  # transformers' own noise, silenced


def test_readme_serving_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The serving section's curl lines and SDK example against a live API (a fast stand-in engine behind it); the
    ``ltxv serve`` / ``ltxv worker`` commands themselves are run by tests/test_serve_*.py."""
    import json
    import subprocess
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from serve_support import live_server, thread_workers, wait_for

    from ltxv.io.video import write_png

    bash, python = blocks("bash", serving=True), blocks("python", serving=True)
    assert bash and python
    monkeypatch.chdir(tmp_path)
    write_png(tmp_path / "first-frame.png", torch.rand(64, 96, 3))
    with live_server(tmp_path / "store") as live, thread_workers(live, 1):
        host = live.url.removeprefix("http://")
        curl = [
            line.split("#")[0].strip()
            for block in bash
            for line in block.replace("\\\n", " ").splitlines()
            if line.startswith("curl")
        ]
        assert len(curl) >= 4
        first_id = ""
        for command in curl:
            command = command.replace("localhost:8000", host).replace("127.0.0.1:8000", host)
            command = command.replace("video_...", first_id)
            out = subprocess.run(shlex.split(command), cwd=tmp_path, capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, (command, out.stderr)
            if not first_id:  # the create: wait for it, so the later lines see a finished job
                first_id = json.loads(out.stdout)["id"]
                wait_for(lambda i=first_id: live.store.get(i).state == "completed", 60, "the curl job")  # type: ignore[union-attr]
        namespace: dict[str, Any] = {}
        for block in python:
            exec(compile(block.replace("http://127.0.0.1:8000", live.url), str(README), "exec"), namespace)
    assert namespace["video"].status == "completed" and (tmp_path / "out.mp4").stat().st_size > 0
