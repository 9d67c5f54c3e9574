"""`ltx-lora train trainer.strategy=keyframes|text_to_audio` run end to end through the CLI on
the demo base (the default model), as a user types them: curate and caption once, then each
mode's preprocess and a 2-step training. (multi_reference: tests/integration/
test_multi_reference.py; each mode's layout and loss: tests/integration/test_strategies.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from curation.sample import generate_sample_dataset
from stagekit.workspace import Workspace

BIN = Path(sys.executable).parent
TRAIN = ["trainer.max_steps=2", "trainer.warmup_steps=1", "trainer.trackers=[]"]
MODES = {
    "keyframes": (["preprocess.keyframes=first_last"], []),
    "text_to_audio": ([], ["lora.targets=audio"]),
}


def cli(ws: Path, verb: str, *overrides: str) -> None:
    cmd = [str(BIN / "ltx-lora"), "--workspace", str(ws), verb, "dataset=modes", *overrides]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{verb}: {done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def captioned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("modes")
    generate_sample_dataset(Workspace(root).dataset("modes"))
    cli(root, "curate")
    cli(root, "caption")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("mode", sorted(MODES))
def test_the_cli_trains_each_mode_on_the_demo_base(captioned: Path, mode: str) -> None:
    preprocess, train = MODES[mode]
    cli(captioned, "preprocess", *preprocess)
    cli(captioned, "train", f"trainer.strategy={mode}", *TRAIN, *train)
    out = Workspace(captioned).train("modes")
    record = json.loads((out / "train.json").read_text())
    assert record["params"]["strategy"] == mode and record["params"]["max_steps"] == 2
    assert record["final"]["loss"] > 0
    with safe_open(str(out / "adapter" / "adapter.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys
    if mode == "text_to_audio":  # only modules that write into the audio stream
        assert all("audio" in k for k in keys), [k for k in keys if "audio" not in k][:3]
    else:
        assert any("audio" not in k for k in keys)
