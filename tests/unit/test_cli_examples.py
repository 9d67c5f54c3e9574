"""Every example in `ltx-lora --help` runs: each composes and validates with `--cfg` (nothing
else happens), `params` writes its file, and every verb answers `--help`."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from ltx_lora.cli import EPILOG, VERBS, main


def examples() -> list[list[str]]:
    """The ltx-lora commands of the epilog, without their descriptions (`a && b`: each part
    that is an ltx-lora command; `dvc repro` runs the whole pipeline, tests/integration's
    DVC tests run it)."""
    commands = []
    for line in EPILOG.splitlines():
        if not line.startswith("  ltx-lora "):
            continue
        command = line.strip().split("   ")[0]  # the description follows 3+ spaces
        for part in command.split("&&"):
            words = shlex.split(part)
            if words[0] == "ltx-lora":
                commands.append(words[1:])
    return commands


def test_the_epilog_has_examples() -> None:
    assert len(examples()) >= 8
    assert {c[0] for c in examples()} >= {"run", "train", "plan", "params"}


@pytest.mark.parametrize("words", examples(), ids=lambda w: " ".join(w))
def test_each_example_composes(words: list[str], tmp_path: Path, capsys) -> None:
    if words[0] == "params":
        assert main(["--workspace", str(tmp_path), *words]) == 0
        assert "trainer:" in (tmp_path / "params.yaml").read_text()
        return
    args = words if "--cfg" in words else [*words, "--cfg"]
    assert main(["--workspace", str(tmp_path), *args]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "trainer:" in out and "model:" in out
    assert list(tmp_path.iterdir()) == []  # --cfg runs nothing, writes nothing


def test_a_sweep_with_cfg_lists_its_members_and_runs_none(tmp_path: Path, capsys) -> None:
    args = ["train", "-m", "lora.rank=8,16", "seed=1,2,3", "--cfg"]
    assert main(["--workspace", str(tmp_path), *args]) == 0
    out = capsys.readouterr().out
    assert "a sweep of 6 members" in out
    # Hydra's basic sweeper order: the cartesian product, the last key varying fastest
    assert "# 1: lora.rank=8 seed=2" in out and "# 5: lora.rank=16 seed=3" in out
    assert list(tmp_path.iterdir()) == []


def test_a_misspelt_key_in_a_sweep_fails_before_anything_runs(tmp_path: Path, capsys) -> None:
    args = ["train", "-m", "lora.rnak=8,16", "--cfg"]
    assert main(["--workspace", str(tmp_path), *args]) == 2
    assert "did you mean lora.rank?" in capsys.readouterr().err


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_every_verb_answers_help(verb: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([verb, "--help"])
    assert exit_info.value.code == 0
    assert "usage: ltx-lora" in capsys.readouterr().out
