"""params.yaml: what `dvc repro` stages run (`--params`), written exactly as `dvc exp run -S`
composes it, and kept in step with configs/."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ltx_lora.cli import main
from ltx_lora.config import PACKAGED_CONFIGS, compose_params

REPO = Path(__file__).resolve().parents[2]


def dvc_composition(overrides: list[str], dest: Path) -> str:
    """What `dvc exp run -S <overrides>` writes, through DVC's own function and repo config."""
    from dvc.config import Config
    from dvc.utils.hydra import compose_and_dump

    hydra = Config(REPO / ".dvc", validate=True)["hydra"]
    assert hydra["enabled"] is True
    compose_and_dump(
        dest, str(REPO / hydra["config_dir"]), None, hydra["config_name"], str(REPO), overrides
    )
    return dest.read_text()


def test_committed_params_yaml_is_configs_composed() -> None:
    """A stale params.yaml would make `dvc repro` run other settings than configs/ say."""
    committed = (REPO / "params.yaml").read_text()
    assert committed == compose_params([], PACKAGED_CONFIGS), (
        "params.yaml is out of date with configs/: run `ltx-lora params` and commit it"
    )


def test_params_verb_writes_what_dvc_exp_run_writes(tmp_path: Path) -> None:
    assert main(["--workspace", str(tmp_path), "params", "lora.rank=16", "trainer.lr=2e-4"]) == 0
    ours = (tmp_path / "params.yaml").read_text()
    assert ours == dvc_composition(["lora.rank=16", "trainer.lr=2e-4"], tmp_path / "dvc.yaml")
    tree = yaml.safe_load(ours)
    assert tree["lora"]["rank"] == 16 and tree["trainer"]["lr"] == 2e-4


def test_stage_runs_the_params_file_as_it_is(tmp_path: Path, capsys) -> None:
    main(["--workspace", str(tmp_path), "params", "lora.rank=32"])
    capsys.readouterr()
    params = tmp_path / "params.yaml"
    assert main(["--workspace", str(tmp_path), "train", "--params", str(params), "--cfg"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["lora"]["rank"] == 32


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--params", "{p}", "lora.rank=4"], "--params runs the file as it is"),
        (["--params", "{missing}"], "write it with `ltx-lora params"),
        (["--params", "{bad}"], "unknown config key 'lora.rnak'"),
    ],
)
def test_params_file_errors_are_one_line(tmp_path: Path, capsys, args, message) -> None:
    main(["--workspace", str(tmp_path), "params"])
    bad = tmp_path / "bad.yaml"
    bad.write_text((tmp_path / "params.yaml").read_text().replace("rank:", "rnak:"))
    paths = {"p": tmp_path / "params.yaml", "missing": tmp_path / "nope.yaml", "bad": bad}
    capsys.readouterr()
    code = main(["--workspace", str(tmp_path), "train", *(a.format(**paths) for a in args)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
