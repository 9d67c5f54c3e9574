"""The latent cache: complete, reused when fresh, recomputed when stale or corrupted, and safe
against a full disk and a second job.

The clips are written here (not by curation) so the cache is tested on its own contract: a
manifest of rows with `id`, `path`, `bucket`, `caption`, `split`, `fps`, `has_audio`.
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from safetensors.torch import save as serialize

from ltx.config import ModelConfig
from ltx.loading import ensure_model
from ltx.sampling import Clip, write_clip
from stagekit.errors import UserError
from stagekit.files import read_jsonl, write_jsonl
from stagekit.hashing import sha256_file
from tests.integration.train_job import LINEAGE
from trainer import cache_index as cache_module
from trainer.cache import (
    EMPTY_PROMPT,
    INDEX,
    JOURNAL_PREFIX,
    CacheLock,
    build_cache,
    load_entry,
    text_inputs,
)
from trainer.config import LoraConfig, PreprocessConfig, TrainerConfig
from trainer.data import collate, load_split
from trainer.runtime import check_cache
from trainer.text_encoder import TEXT_PARTS

TINY = ModelConfig(name="ltx2-tiny", source="tiny", seed=0)
FPS = 24.0
FRAMES = 17
# (width, height, with audio): two buckets, clips with and without sound
CLIPS = [(64, 64, True), (96, 64, True), (64, 64, False), (96, 64, True), (64, 64, True)]


def synthetic_clip(seed: int, width: int, height: int, audio: bool) -> Clip:
    """A moving colour gradient (h264 keeps it close) and a stereo tone pair, 17 frames."""
    t = np.arange(FRAMES)[:, None, None]
    y, x = np.mgrid[0:height, 0:width]
    phase = seed * 0.7
    channels = [
        np.sin(x / (7 + seed) + t / 3 + phase),
        np.cos(y / (5 + seed) - t / 4),
        np.sin((x + y) / 11 + phase + 0 * t),
    ]
    video = (np.stack(channels, axis=-1) * 100 + 128).clip(0, 255).astype(np.uint8)
    if not audio:
        return Clip(video, FPS)
    n = round(FRAMES / FPS * 16000)
    s = np.arange(n) / 16000
    wave = np.stack([np.sin(2 * np.pi * (220 + 40 * seed) * s), np.sin(2 * np.pi * 330 * s)])
    return Clip(video, FPS, (0.3 * wave).astype(np.float32), 16000)


def make_dataset(root: Path, clips: list[tuple[int, int, bool]] = CLIPS) -> Path:
    """Write clips under root/curated/clips and a manifest; returns the manifest path."""
    rows = []
    for i, (width, height, audio) in enumerate(clips):
        clip_id = f"clip{i:02d}"
        write_clip(
            root / "curated" / "clips" / f"{clip_id}.mp4", synthetic_clip(i, width, height, audio)
        )
        rows.append(
            {
                "id": clip_id,
                "path": f"clips/{clip_id}.mp4",
                "bucket": [width, height, FRAMES],
                "caption": f"mascot clip {i % 3}",  # shared captions: text is encoded once each
                "split": "validation" if i == 0 else "train",
                "fps": FPS,
                "has_audio": audio,
            }
        )
    write_jsonl(root / "manifest.jsonl", rows)
    return root / "manifest.jsonl"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_model(TINY, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The manifest; clips are beside it in `curated/`."""
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def reference_cache(dataset: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """A complete cache built once in one process: what every other run must reproduce."""
    cache = tmp_path_factory.mktemp("ref") / "cache"
    summary = build(dataset, cache, tiny_model)
    return cache, summary


def build(manifest: Path, cache: Path, model: Path, **cfg) -> dict:
    return build_cache(
        manifest, manifest.parent / "curated", cache, model, TINY, PreprocessConfig(**cfg),
        progress=False,
    )  # fmt: skip


@pytest.fixture
def copy(reference_cache, dataset: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the cache and of the dataset, so a test may damage either."""
    shutil.copytree(dataset.parent / "curated", tmp_path / "curated")
    shutil.copy(dataset, tmp_path / "manifest.jsonl")
    shutil.copytree(reference_cache[0], tmp_path / "cache")
    return tmp_path / "manifest.jsonl", tmp_path / "cache"


def index_of(cache: Path) -> dict:
    return json.loads((cache / INDEX).read_text())


def shard_tensors(cache: Path, clip_id: str) -> dict[str, torch.Tensor]:
    return load_file(cache / f"{clip_id}.safetensors")


def same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def leftovers(cache: Path) -> list[str]:
    """Temporary files and journals a finished run must not leave behind."""
    return sorted(p.name for p in cache.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------- contents


def test_every_clip_has_a_shard_with_its_fingerprint(reference_cache, dataset: Path) -> None:
    cache, summary = reference_cache
    rows = {r["id"]: r for r in read_jsonl(dataset)}
    index = index_of(cache)
    assert summary["encoded"] == summary["entries"] == len(rows) and not summary["skipped"]
    assert set(index["entries"]) == set(rows) and leftovers(cache) == []
    for clip_id, entry in index["entries"].items():
        row = rows[clip_id]
        assert {k: entry[k] for k in ("split", "bucket", "caption", "fps")} == {
            k: row[k] for k in ("split", "bucket", "caption", "fps")
        }
        with safe_open(cache / entry["file"], "pt") as f:
            assert f.metadata()["fingerprint"] == entry["fingerprint"]
            assert f.metadata()["ltx_version"] == "2.0"
            keys, video = set(f.keys()), f.get_tensor("video")
        assert ("audio" in keys) == row["has_audio"]
        assert {"text.prompt_features", "text_pad.prompt_features", "text_length"} <= keys
        assert "text.prompt_attention_mask" not in keys  # compact: only the attended tokens
        w, h, frames = entry["bucket"]
        assert video.shape == (8, (frames - 1) // 2 + 1, h // 8, w // 8)  # tiny VAE: x2, x8


def test_audio_latents_are_25_per_second(reference_cache) -> None:
    audio = shard_tensors(reference_cache[0], "clip01")["audio"]
    assert audio.shape == (2, round(FRAMES / FPS * 25), 4)


def test_shard_bytes_are_what_the_model_spec_says(reference_cache) -> None:
    """The spec arithmetic docs/models.md uses for real sizes, checked on real tiny shards,
    and the shard is smaller than the same tensors in the padded layout (format 2)."""
    from ltx.specs import TINY as TINY_SPEC
    from ltx.specs import cache_bytes

    cache = reference_cache[0]
    tensors = shard_tensors(cache, "clip01")  # 96x64, with audio
    tokens = tensors["text.prompt_features"].shape[1]
    expected = cache_bytes(TINY_SPEC, FRAMES, 64, 96, FPS, value_bytes=4, text_tokens=tokens)
    assert sum(t.nbytes for t in tensors.values()) == expected["total"]
    assert tensors["video"].nbytes == expected["video"]
    padded = padded_layout(tensors)
    text_bytes = sum(t.nbytes for k, t in padded.items() if k.startswith("text."))
    assert text_bytes == expected["text_padded"]
    compact_text = sum(t.nbytes for k, t in tensors.items() if k.startswith("text"))
    assert compact_text < text_bytes / 4
    assert (cache / "clip01.safetensors").stat().st_size < len(
        serialize(padded)
    ) - 3 * text_bytes / 4


def padded_layout(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A shard's tensors as cache format 2 stored them: text padded, with its int64 mask."""
    rest = {k: v for k, v in tensors.items() if not k.startswith("text")}
    return rest | {f"text.{k}": v for k, v in text_inputs(tensors).items()}


def test_one_phase_of_weights_is_resident_at_a_time(reference_cache, tiny_model: Path) -> None:
    """Peak = the larger of (text encoder + connectors) and (VAE + audio VAE), not their sum."""
    from ltx.loading import load_components, weight_bytes

    _, summary = reference_cache
    names = [*TEXT_PARTS, "vae", "audio_vae"]
    size = {n: weight_bytes(c) for n, c in load_components(tiny_model, names).items()}
    text = size["text_encoder"] + size["connectors"]
    vaes = size["vae"] + size["audio_vae"]
    assert summary["peak_weight_bytes"] == max(text, vaes)
    assert summary["all_weight_bytes"] == text + vaes


# ------------------------------------------------------------------------ compact text layout


def test_text_repads_to_exactly_what_encode_prompts_gives(reference_cache, tiny_model) -> None:
    """Every shard, and the empty prompt (caption dropout), stores only the attended tokens;
    re-padded, they are the padded tensors bit for bit."""
    from ltx.encode import encode_prompts
    from ltx.loading import load_components

    cache = reference_cache[0]
    parts = load_components(tiny_model, TEXT_PARTS)
    index = index_of(cache)
    entries = [*index["entries"].values(), index[EMPTY_PROMPT]]
    for entry in entries:
        tensors = load_entry(cache, entry)
        expected = encode_prompts(parts, [entry.get("caption", "")])
        tokens = int(expected["prompt_attention_mask"].sum())
        assert tensors["text.prompt_features"].shape == (1, tokens, 32) and tokens < 128
        got = text_inputs(tensors)
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[k], v) and got[k].dtype == v.dtype for k, v in expected.items())
    assert load_entry(cache, index[EMPTY_PROMPT])["text.prompt_features"].shape[1] == 1  # BOS


@pytest.fixture(scope="session", params=["2.0", "2.3"])
def versioned_cache(request, reference_cache, dataset: Path, tiny_model: Path, tmp_path_factory):
    """(cache, model) of the tiny LTX-2.0, and of the tiny LTX-2.3: per-modality projections
    with a bias, so its padded positions hold that bias, not zeros."""
    if request.param == "2.0":
        return reference_cache[0], tiny_model
    cfg = TINY.model_copy(update={"ltx_version": request.param})
    model = ensure_model(cfg, tmp_path_factory.mktemp("models"))
    cache = tmp_path_factory.mktemp("ref") / "cache"
    build_cache(
        dataset, dataset.parent / "curated", cache, model, cfg, PreprocessConfig(), progress=False
    )
    return cache, model


def test_velocity_is_bit_identical_on_compact_and_padded_text(versioned_cache) -> None:
    """The denoiser's output on a batch from the cache equals its output on the padded tensors
    that preprocess used to store, to the bit."""
    from ltx.encode import encode_prompts
    from ltx.forward import predict_velocity
    from ltx.loading import load_components

    cache, tiny_model = versioned_cache
    samples = [s for s in load_split(cache, "train") if s.clip_id in ("clip01", "clip03")]
    assert samples[0].shape_key == samples[1].shape_key  # 96x64 with audio, two captions
    batch = collate(samples)
    parts = load_components(tiny_model, [*TEXT_PARTS, "transformer"])
    # padded positions held the projection of a zero row: its bias (2.3), else zeros (2.0)
    conn = parts["connectors"]
    proj = conn.video_text_proj_in if conn.config.per_modality_projections else conn.text_proj_in
    bias = proj.bias if proj.bias is not None else torch.zeros(proj.out_features)
    assert torch.equal(samples[0].tensors["text_pad.prompt_features"][0, 0], bias)
    captions = [index_of(cache)["entries"][s.clip_id]["caption"] for s in samples]
    assert captions[0] != captions[1]
    old = [encode_prompts(parts, [c]) for c in captions]  # one prompt per call, as cached
    padded = {k: torch.cat([o[k] for o in old]) for k in old[0]}
    assert batch.text.keys() == padded.keys()
    assert all(torch.equal(batch.text[k], v) for k, v in padded.items())
    g = torch.Generator().manual_seed(0)
    noisy = torch.randn(batch.video.shape, generator=g), torch.randn(batch.audio.shape, generator=g)
    sigmas = torch.tensor([0.3, 0.8]), torch.tensor([0.6, 0.2])
    new_out = predict_velocity(parts, *noisy, batch.text, *sigmas, fps=batch.fps)
    old_out = predict_velocity(parts, *noisy, padded, *sigmas, fps=batch.fps)
    assert all(torch.equal(a, b) for a, b in zip(new_out, old_out, strict=True))


def test_a_format_2_cache_still_loads_and_is_reencoded(copy, tiny_model: Path) -> None:
    """A cache from before (padded text, no LTX version): training reads it as it did;
    preprocess re-encodes every entry, never misreads one."""
    manifest, cache = copy
    fresh = collate(load_split(cache, "train")[:1]).text
    index = index_of(cache)
    index["format"], old_version = 2, index["identity"].pop("ltx_version")
    for entry in [*index["entries"].values(), index[EMPTY_PROMPT]]:
        path = cache / entry["file"]
        with safe_open(path, "pt") as f:
            metadata = {k: v for k, v in f.metadata().items() if k != "ltx_version"}
        save_file(padded_layout(load_file(path)), path, metadata=metadata)
        entry["sha256"] = sha256_file(path)
    (cache / INDEX).write_text(json.dumps(index))
    legacy = collate(load_split(cache, "train")[:1]).text
    assert legacy.keys() == fresh.keys() and all(torch.equal(legacy[k], fresh[k]) for k in fresh)
    check_cache(index, cache, tiny_model, "2.0")  # no version recorded: the model hash decides

    summary = build(manifest, cache, tiny_model)
    assert summary["encoded"] == summary["entries"] == len(CLIPS) and summary["reused"] == 0
    index = index_of(cache)
    assert index["format"] == 3 and index["identity"]["ltx_version"] == old_version
    assert "text_length" in shard_tensors(cache, "clip00")
    assert "text_length" in load_file(cache / index[EMPTY_PROMPT]["file"])


# ---------------------------------------------------------------------------------- LTX version


def test_the_ltx_version_is_recorded_and_fingerprinted(copy, tiny_model: Path) -> None:
    manifest, cache = copy
    index = index_of(cache)
    assert index["identity"]["ltx_version"] == "2.0"
    before = index[EMPTY_PROMPT]["fingerprint"]
    with safe_open(cache / index[EMPTY_PROMPT]["file"], "pt") as f:
        assert f.metadata()["ltx_version"] == "2.0"
    # model_copy: only the version differs (validation may refuse 2.3 for a tiny model)
    other = TINY.model_copy(update={"ltx_version": "2.3"})
    summary = build_cache(
        manifest, manifest.parent / "curated", cache, tiny_model, other, PreprocessConfig(),
        progress=False,
    )  # fmt: skip
    assert summary["encoded"] == summary["entries"] == len(CLIPS) and summary["reused"] == 0
    index = index_of(cache)
    assert index["identity"]["ltx_version"] == "2.3"
    assert index[EMPTY_PROMPT]["fingerprint"] != before
    with safe_open(cache / "clip00.safetensors", "pt") as f:
        assert f.metadata()["ltx_version"] == "2.3"


def test_training_refuses_a_cache_made_for_another_ltx_version(
    reference_cache, tiny_model: Path, tmp_path: Path
) -> None:
    from trainer.train import train

    cache = reference_cache[0]
    other = TINY.model_copy(update={"ltx_version": "2.3"})  # the same tiny weights
    with pytest.raises(UserError) as err:
        train(
            cache, tmp_path / "train", tiny_model, other, LoraConfig(rank=4, alpha=8),
            TrainerConfig(max_steps=1), seed=0, trigger="zorblat", lineage=LINEAGE,
            resolved_config={}, checkpoint_root=tmp_path / "ckpt",
        )  # fmt: skip
    message = str(err.value)
    assert "\n" not in message and str(cache) in message
    assert "made for LTX-2.0" in message and "asks for LTX-2.3" in message
    assert "re-run `ltx-lora preprocess model=" in message
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "train").exists()


def test_a_quantised_text_encoder_reencodes_with_its_own_fingerprint(copy, tiny_model) -> None:
    """preprocess.text_encoder_quantize=int8: every entry and the empty prompt re-encoded
    under new fingerprints; the video latents are the same, the text features close (the
    int8 Gemma of trainer.text_encoder); back to none, the float features come back exactly."""
    manifest, cache = copy
    before = index_of(cache)
    float_text = shard_tensors(cache, "clip01")
    summary = build(manifest, cache, tiny_model, text_encoder_quantize="int8")
    assert summary["encoded"] == len(CLIPS) and summary["reused"] == 0
    after = index_of(cache)
    assert after[EMPTY_PROMPT]["fingerprint"] != before[EMPTY_PROMPT]["fingerprint"]
    for clip_id, entry in after["entries"].items():
        assert entry["fingerprint"] != before["entries"][clip_id]["fingerprint"]
    quantised = shard_tensors(cache, "clip01")
    for media in ("video", "audio"):
        assert torch.equal(quantised[media], float_text[media])
    text = [k for k in float_text if k.startswith("text.")]
    assert text
    for key in text:
        error = ((quantised[key] - float_text[key]).norm() / float_text[key].norm()).item()
        assert 0 < error < 0.05, (key, error)
    build(manifest, cache, tiny_model)  # the default again: the float text, bit for bit
    assert same_tensors(shard_tensors(cache, "clip01"), float_text)
    assert (
        index_of(cache)["entries"]["clip01"]["fingerprint"]
        == before["entries"]["clip01"]["fingerprint"]
    )


# ---------------------------------------------------------------------------- fresh and stale


def test_fresh_cache_is_reused_without_touching_the_index(copy, tiny_model: Path) -> None:
    manifest, cache = copy
    stamp = (cache / INDEX).stat().st_mtime_ns
    summary = build(manifest, cache, tiny_model)
    assert summary["encoded"] == 0 and summary["skipped"] and summary["peak_weight_bytes"] == 0
    assert (cache / INDEX).stat().st_mtime_ns == stamp


def test_corrupted_shard_is_detected_and_reencoded_identically(copy, tiny_model: Path) -> None:
    manifest, cache = copy
    victim = cache / "clip02.safetensors"
    original = victim.read_bytes()
    data = bytearray(original)
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert build(manifest, cache, tiny_model)["encoded"] == 1
    assert victim.read_bytes() == original  # encoding is deterministic


def test_truncated_shard_is_detected_and_reencoded(copy, tiny_model: Path) -> None:
    manifest, cache = copy
    victim = cache / "clip01.safetensors"
    original = victim.read_bytes()
    victim.write_bytes(original[: len(original) // 2])
    with pytest.raises(UserError, match=r"damaged.*re-run `ltx-lora preprocess`"):
        load_entry(cache, index_of(cache)["entries"]["clip01"])
    assert build(manifest, cache, tiny_model)["encoded"] == 1
    assert victim.read_bytes() == original


def test_changed_clip_makes_only_that_entry_stale(copy, tiny_model: Path) -> None:
    manifest, cache = copy
    before = shard_tensors(cache, "clip03")
    write_clip(
        manifest.parent / "curated" / "clips" / "clip03.mp4", synthetic_clip(9, 96, 64, True)
    )
    assert build(manifest, cache, tiny_model)["encoded"] == 1
    after = shard_tensors(cache, "clip03")
    assert not torch.equal(after["video"], before["video"])
    assert torch.equal(after["text.prompt_features"], before["text.prompt_features"])


def test_changed_caption_makes_only_that_entry_stale(copy, tiny_model: Path) -> None:
    manifest, cache = copy
    rows = read_jsonl(manifest)
    rows[0]["caption"] += " at dusk"
    write_jsonl(manifest, rows)
    assert build(manifest, cache, tiny_model)["encoded"] == 1
    assert index_of(cache)["entries"]["clip00"]["caption"].endswith("at dusk")


def test_changed_config_makes_every_entry_stale(copy, tiny_model: Path) -> None:
    manifest, cache = copy
    summary = build(manifest, cache, tiny_model, with_audio=False)
    assert summary["encoded"] == summary["entries"] == len(CLIPS)
    assert all("audio" not in shard_tensors(cache, f"clip{i:02d}") for i in range(len(CLIPS)))


def test_cache_of_another_base_model_is_recomputed(copy, tiny_model: Path, tmp_path) -> None:
    manifest, cache = copy
    other = ensure_model(TINY.model_copy(update={"seed": 1}), tmp_path / "models")
    old, old_video = index_of(cache), shard_tensors(cache, "clip00")["video"]
    summary = build(manifest, cache, other)
    assert summary["encoded"] == summary["entries"] == len(CLIPS) and summary["reused"] == 0
    new = index_of(cache)
    assert new["identity"]["model"] != old["identity"]["model"]
    assert new["identity"]["vae"] != old["identity"]["vae"]
    assert not torch.equal(shard_tensors(cache, "clip00")["video"], old_video)


def test_dropped_clip_loses_its_shard(copy, tiny_model: Path) -> None:
    manifest, cache = copy
    rows = read_jsonl(manifest)
    write_jsonl(manifest, rows[1:])
    summary = build(manifest, cache, tiny_model)
    assert summary["entries"] == len(rows) - 1 and summary["encoded"] == 0
    assert not (cache / "clip00.safetensors").exists()


def test_missing_clip_names_the_file(copy, tiny_model: Path) -> None:
    manifest, cache = copy
    (manifest.parent / "curated" / "clips" / "clip04.mp4").unlink()
    with pytest.raises(UserError, match=r"clip04.*clip04\.mp4 is missing.*ltx-lora curate"):
        build(manifest, cache, tiny_model)


# --------------------------------------------------------------------------------- bad writes


def test_full_disk_is_one_clear_line_and_leaves_no_partial_file(
    copy, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third shard write hits ENOSPC half-way; the run stops with one line, and the next
    run (space freed) encodes only what is missing."""
    manifest, cache = copy
    shutil.rmtree(cache)
    real_write, calls = cache_module._write_file, []

    def disk_fills_up(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) < 3:
            return real_write(path, data)
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])  # the disk takes half, then is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module, "_write_file", disk_fills_up)
    with pytest.raises(UserError) as err:
        build(manifest, cache, tiny_model)
    message = str(err.value)
    assert "\n" not in message and "No space left on device (errno 28)" in message
    assert "free some space and re-run" in message
    assert not any(p.name.endswith(".tmp") for p in cache.iterdir())
    assert len(list(cache.glob("*.safetensors"))) == 2  # finished shards are kept ...
    journal = cache / f"{JOURNAL_PREFIX}0.jsonl"
    assert len(journal.read_text().splitlines()) == 2  # ... and recorded
    monkeypatch.setattr(cache_module, "_write_file", real_write)
    summary = build(manifest, cache, tiny_model)
    assert summary["encoded"] == len(CLIPS) - 2 and summary["reused"] == 2
    assert leftovers(cache) == []


def test_a_second_job_on_the_same_cache_is_refused(copy, tiny_model: Path) -> None:
    manifest, cache = copy
    lock = CacheLock(cache)
    lock.acquire()
    try:
        with pytest.raises(UserError, match="another `ltx-lora preprocess` is writing"):
            build(manifest, cache, tiny_model)
    finally:
        lock.release()
    assert build(manifest, cache, tiny_model)["skipped"]


# ------------------------------------------------------------- conditioning latents


def add_references(manifest: Path) -> None:
    """Each clip gets a still (its own last frame, flipped) and a 9-frame reference clip, as
    curation writes them (`references` in the row, files beside the clip)."""
    from PIL import Image

    clips = manifest.parent / "curated"
    rows = read_jsonl(manifest)
    for i, row in enumerate(rows):
        width, height, _ = row["bucket"]
        frames = synthetic_clip(i + 5, width, height, False).video
        Image.fromarray(frames[-1, ::-1].copy()).save(clips / f"clips/{row['id']}_ref0.png")
        write_clip(clips / f"clips/{row['id']}_ref1.mp4", Clip(frames[:9], FPS))
        row["references"] = [
            {"path": f"clips/{row['id']}_ref0.png", "kind": "still", "frames": 1},
            {"path": f"clips/{row['id']}_ref1.mp4", "kind": "video", "frames": 9},
        ]
    write_jsonl(manifest, rows)


def test_reference_files_are_encoded_each_on_its_own(copy, tiny_model: Path) -> None:
    """preprocess.reference=files: `reference.0` (the still, one latent frame) and
    `reference.1` (9 frames) beside the video; a changed reference file re-encodes only its
    clip; a row without references is refused, naming the clip."""
    manifest, cache = copy
    add_references(manifest)
    summary = build(manifest, cache, tiny_model, reference="files")
    assert summary["encoded"] == len(CLIPS)
    tensors = shard_tensors(cache, "clip01")
    c, _, h, w = tensors["video"].shape
    assert tensors["reference.0"].shape == (c, 1, h, w)
    assert tensors["reference.1"].shape[0::2] == (c, h) and tensors["reference.1"].shape[1] > 1
    still = manifest.parent / "curated/clips/clip02_ref0.png"
    still.write_bytes((manifest.parent / "curated/clips/clip00_ref0.png").read_bytes())
    assert build(manifest, cache, tiny_model, reference="files")["encoded"] == 1
    rows = read_jsonl(manifest)
    del rows[3]["references"]
    write_jsonl(manifest, rows)
    with pytest.raises(UserError, match=r"clip03.*no reference files"):
        build(manifest, cache, tiny_model, reference="files")


def test_interior_keyframes_are_cached_one_per_interior_latent_frame(copy, tiny_model) -> None:
    manifest, cache = copy
    build(manifest, cache, tiny_model, keyframes="first_last_interior")
    tensors = shard_tensors(cache, "clip01")
    c, f, h, w = tensors["video"].shape
    assert tensors["keyframe_interior"].shape == (c, f - 2, h, w)
    assert tensors["keyframe_first"].shape == tensors["keyframe_last"].shape == (c, 1, h, w)
