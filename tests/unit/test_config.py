"""Every YAML under configs/ composes and validates; bad keys fail before work, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltx_lora.cli import VERBS, main
from ltx_lora.config import PACKAGED_CONFIGS, compose_tree, load_config, validate
from stagekit.errors import ConfigError

PRIMARIES = sorted(p.stem for p in PACKAGED_CONFIGS.glob("*.yaml") if p.stem != "pipeline")
# hydra/ (launchers) and accelerate/ (`accelerate launch --config_file`) are not pipeline groups
NOT_PIPELINE = {"hydra", "accelerate"}
GROUP_OPTIONS = sorted(
    (p.parent.relative_to(PACKAGED_CONFIGS).as_posix(), p.stem)
    for p in PACKAGED_CONFIGS.glob("*/**/*.yaml")
    if p.relative_to(PACKAGED_CONFIGS).parts[0] not in NOT_PIPELINE
)


def test_every_verb_has_a_primary_config() -> None:
    assert set(VERBS) <= set(PRIMARIES)


@pytest.mark.parametrize("stage", PRIMARIES)
def test_primary_composes_and_validates(stage: str, tmp_path: Path) -> None:
    cfg = load_config(stage, [], tmp_path)
    assert cfg.dataset == "sample"
    assert cfg.model.source == "demo"
    assert cfg.registry.backend == "local"


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_group_option_composes(group: str, option: str, tmp_path: Path) -> None:
    key = group.replace("/", ".")
    cfg = load_config("run", [f"{key}={option}"], tmp_path)
    assert cfg.model_dump()  # validated into the typed tree


def test_overrides_reach_the_typed_tree(tmp_path: Path) -> None:
    cfg = load_config("train", ["lora.rank=16", "trainer.max_steps=50", "dataset=acme"], tmp_path)
    assert (cfg.lora.rank, cfg.trainer.max_steps, cfg.dataset) == (16, 50, "acme")


def test_experiment_overrides_the_defaults(tmp_path: Path) -> None:
    plain = load_config("run", [], tmp_path)
    quick = load_config("run", ["experiment=quick"], tmp_path)
    assert quick.trainer.max_steps == 10 < plain.trainer.max_steps
    assert quick.evaluation.seeds == [0]


def test_unknown_key_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"trainer\.max_stepz"):
        load_config("train", ["trainer.max_stepz=5"], tmp_path)


def test_unknown_key_names_the_closest_key_not_hydras_plus_advice(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_config("train", ["lora.rnak=5"], tmp_path)
    assert "did you mean lora.rank?" in str(error.value) and "+" not in str(error.value)
    with pytest.raises(ConfigError) as error:
        load_config("train", ["trainer.zzz=5"], tmp_path)
    assert "did you mean" not in str(error.value)  # nothing close: no guess


def test_a_missing_group_option_lists_the_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model=ltx3: no configs/model/ltx3.yaml; one of: ") as e:
        load_config("train", ["model=ltx3"], tmp_path)
    listed = str(e.value).split("one of: ")[1].split(", ")
    assert listed == sorted(p.stem for p in (PACKAGED_CONFIGS / "model").glob("*.yaml"))
    assert {"demo", "ltx2", "ltx2_3", "ltx2_5", "tiny"} <= set(listed)


def test_added_unknown_key_is_refused_by_the_schema(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'trainer\.foo'"):
        load_config("train", ["+trainer.foo=1"], tmp_path)


def test_mistyped_value_names_the_key_and_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'trainer\.max_steps'.*'many'"):
        load_config("train", ["trainer.max_steps=many"], tmp_path)


def test_out_of_range_value_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"lora\.rank"):
        load_config("train", ["lora.rank=0"], tmp_path)


def test_dataset_must_be_a_folder_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dataset"):
        load_config("run", ["dataset=../etc"], tmp_path)


def test_workspace_configs_win_over_packaged(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(PACKAGED_CONFIGS, tmp_path / "configs")
    (tmp_path / "configs" / "lora" / "default.yaml").write_text(
        "rank: 3\nalpha: 3\ndropout: 0.0\ntargets: video_attention\n"
    )
    assert load_config("train", [], tmp_path).lora.rank == 3


def test_section_hash_follows_only_its_sections(tmp_path: Path) -> None:
    a = validate(compose_tree("run", [], PACKAGED_CONFIGS))
    b = validate(compose_tree("run", ["evaluation.steps=9"], PACKAGED_CONFIGS))
    c = validate(compose_tree("run", ["lora.rank=4"], PACKAGED_CONFIGS))
    assert a.section_hash("lora", "trainer") == b.section_hash("lora", "trainer")
    assert a.section_hash("lora", "trainer") != c.section_hash("lora", "trainer")


def test_cli_exits_2_on_a_bad_key_and_writes_nothing(tmp_path: Path, capsys) -> None:
    code = main(["--workspace", str(tmp_path), "train", "trainer.max_stepz=5"])
    err = capsys.readouterr().err
    assert code == 2
    assert "trainer.max_stepz" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_missing_dataset_is_one_line_exit_1(tmp_path: Path, capsys) -> None:
    code = main(["--workspace", str(tmp_path), "curate", "dataset=acme-mascot"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert "acme-mascot" in err and "dataset.yaml" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "datasets").exists()


def test_cli_prints_the_composed_config(tmp_path: Path, capsys) -> None:
    assert main(["--workspace", str(tmp_path), "train", "--cfg", "lora.rank=5"]) == 0
    assert "rank: 5" in capsys.readouterr().out


def test_help_lists_every_verb(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert all(verb in out for verb in VERBS)


def test_cli_empty_dataset_is_one_line_and_writes_no_stage_output(tmp_path: Path, capsys) -> None:
    ds = tmp_path / "datasets" / "empty"
    (ds / "raw").mkdir(parents=True)
    (ds / "dataset.yaml").write_text(
        "client: acme\nadapter: mascot\ntrigger: acmebot\nclass_noun: robot\n"
        "owner: Acme\nrights: internal\n"
    )
    code = main(["--workspace", str(tmp_path), "curate", "dataset=empty"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert "no clips" in err and str(ds / "raw") in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in ds.iterdir()) == ["dataset.yaml", "raw"]
    assert not (tmp_path / "outputs").exists()


def test_cli_bad_card_names_the_field(tmp_path: Path, capsys) -> None:
    ds = tmp_path / "datasets" / "acme"
    (ds / "raw").mkdir(parents=True)
    (ds / "dataset.yaml").write_text("client: Acme Corp\n")
    assert main(["--workspace", str(tmp_path), "curate", "dataset=acme"]) == 1
    err = capsys.readouterr().err.strip()
    assert "dataset.yaml" in err and "client" in err and len(err.splitlines()) == 1


def test_every_verb_runs_a_stage() -> None:
    from ltx_lora.stages import STAGES

    hydra_verbs = set(VERBS)
    assert hydra_verbs == set(STAGES)
