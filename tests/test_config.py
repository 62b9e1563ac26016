"""RunConfig loading: YAML + --set overrides, validation messages that name the field, path resolution."""

from __future__ import annotations

import pytest

from seektune.config import RunConfig, load_config, parse_override
from seektune.errors import ConfigError


def test_set_overrides_are_typed():
    cfg = load_config(sets=["lora.r=32", "train.learning_rate=2e-4", "train.gradient_checkpointing=true",
                            "lora.targets=[q_proj, v_proj]"])
    assert cfg.lora.r == 32 and isinstance(cfg.lora.r, int)
    assert cfg.train.learning_rate == pytest.approx(0.0002)
    assert isinstance(cfg.train.learning_rate, float)
    assert cfg.train.gradient_checkpointing is True
    assert cfg.lora.targets == ["q_proj", "v_proj"]
    # untouched settings keep their defaults
    assert cfg.lora.alpha == RunConfig().lora.alpha


def test_parse_override_scientific_notation():
    assert parse_override("train.learning_rate=2e-4") == ("train.learning_rate", 0.0002)
    assert parse_override("train.learning_rate=1.0e-3") == ("train.learning_rate", 0.001)
    assert parse_override("model.source=deepseek-ai/deepseek-llm-7b-chat") == (
        "model.source", "deepseek-ai/deepseek-llm-7b-chat")


def test_later_overrides_win_over_yaml(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lora:\n  r: 8\n  alpha: 4\ntrain:\n  max_steps: 5\n")
    cfg = load_config(f, sets=["lora.r=64"], overrides={"train.max_steps": 7, "train.seed": None})
    assert cfg.lora.r == 64  # --set beats the file
    assert cfg.lora.alpha == 4  # the file beats the default
    assert cfg.train.max_steps == 7  # overrides beat --set/the file
    assert cfg.train.seed == 42  # a None override means "not given"


def test_unknown_field_is_named():
    with pytest.raises(ConfigError) as e:
        load_config(sets=["lora.rank=8"])
    msg = str(e.value)
    assert "lora.rank" in msg and "unknown" in msg


def test_unknown_section_is_named():
    with pytest.raises(ConfigError) as e:
        load_config(sets=["trian.max_steps=3"])
    assert "trian" in str(e.value) and "unknown" in str(e.value)


@pytest.mark.parametrize(
    "override, field, bad, allowed",
    [
        ("lora.r=-1", "lora.r", "-1", ["greater than 0"]),
        ("train.precision=fp8", "train.precision", "fp8", ["auto", "bf16", "fp16", "fp32"]),
        ("data.loss_on=bogus", "data.loss_on", "bogus", ["all_assistant", "last_assistant", "all"]),
        ("data.max_length=4", "data.max_length", "4", ["greater than 8"]),
        ("lora.dropout=1.5", "lora.dropout", "1.5", ["less than 1"]),
    ],
)
def test_bad_value_names_field_value_and_constraint(override, field, bad, allowed):
    with pytest.raises(ConfigError) as e:
        load_config(sets=[override])
    msg = str(e.value)
    assert field in msg
    assert bad in msg
    for a in allowed:
        assert a in msg, (a, msg)


def test_bad_value_in_file_names_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  precision: fp8\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert str(f) in str(e.value) and "train.precision" in str(e.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_yaml_top_level_must_be_a_mapping(tmp_path, text):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match="mapping"):
        load_config(f)


def test_invalid_yaml_and_missing_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lora: {r: 8\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(f)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_empty_yaml_gives_defaults(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("")
    assert load_config(f) == RunConfig()


def test_relative_data_paths_resolve_against_the_yaml_folder(tmp_path, monkeypatch):
    cfgdir = tmp_path / "configs"
    (cfgdir / "data").mkdir(parents=True)
    (cfgdir / "data" / "train.json").write_text("[]")
    f = cfgdir / "c.yaml"
    f.write_text("data:\n  datasets:\n    - path: data/train.json\n    - path: /abs/elsewhere.json\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working folder must not matter
    cfg = load_config(f)
    assert cfg.data.datasets[0].path == str((cfgdir / "data" / "train.json").resolve())
    assert cfg.data.datasets[1].path == "/abs/elsewhere.json"


@pytest.mark.parametrize("text", ["lora.r", "lora.r32", "=5"])
def test_set_needs_key_and_equals(text):
    with pytest.raises(ConfigError) as e:
        load_config(sets=[text])
    assert "--set" in str(e.value)


def test_set_into_a_value_is_refused():
    with pytest.raises(ConfigError, match="not a section"):
        load_config(sets=["lora.r=8", "lora.r.x=1"])


def test_empty_output_is_refused():
    with pytest.raises(ConfigError, match="output"):
        load_config(overrides={"output": "  "})


def test_to_yaml_round_trips(tmp_path):
    cfg = load_config(
        overrides={
            "data.datasets": [
                {"path": str(tmp_path / "d.json"), "format": "alpaca", "columns": {"prompt": "q"}, "max_records": 5,
                 "system": "be brief"}
            ],
            "output": str(tmp_path / "run"),
        },
        sets=["lora.r=32", "lora.targets=[q_proj, o_proj]", "train.learning_rate=2e-4", "train.precision=bf16",
              "data.loss_on=last_assistant", "model.source=some/model", "train.report_to=[tensorboard]"],
    )
    assert cfg != RunConfig()
    f = tmp_path / "config.yaml"
    f.write_text(cfg.to_yaml())
    back = load_config(f)
    assert back == cfg
    assert back.model_dump() == cfg.model_dump()
