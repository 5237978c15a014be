"""params.yaml -> typed config: profiles, --set overrides and clear errors."""

from __future__ import annotations

import pytest

from emanet.config import Config, ConfigError, load_params, parse_set, resolve
from emanet.runs.identity import training_identity


def test_both_profiles_resolve(root):
    params = load_params(root / "params.yaml")
    tiny, paper = resolve(params, "tiny"), resolve(params, "paper")
    assert isinstance(tiny, Config) and tiny.profile == "tiny"
    assert paper.model.backbone == "resnet101" and paper.model.stem == "deep"
    assert paper.model.bn_momentum == 3e-4 and paper.model.ema.num_bases == 64
    assert resolve(params).profile == params["profile"]
    assert training_identity(tiny) != training_identity(paper)
    assert training_identity(tiny) == training_identity(resolve(params, "tiny"))


def test_set_overrides_and_parses_values(root):
    cfg = resolve(
        load_params(root / "params.yaml"),
        "paper",
        ["model.ema.num_bases=32", "model.multi_grid=[1,1,1]", "model.pretrained=w.pth"],
    )
    assert cfg.model.ema.num_bases == 32 and cfg.model.multi_grid == [1, 1, 1]
    assert cfg.model.pretrained == "w.pth"
    assert parse_set(["a.b=1.5"]) == {"a": {"b": 1.5}}


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.ema.num_base=32", "unknown key 'model.ema.num_base'"),
        ("model.ema.stages=three", "model.ema.stages: expected int"),
        ("model.ema.renormalize=1", "model.ema.renormalize: expected bool"),
        ("model.multi_grid=4", "model.multi_grid: expected a list"),
        ("model", "--set expects key=value"),
    ],
)
def test_bad_overrides_name_the_key(root, override, message):
    with pytest.raises(ConfigError, match=message):
        resolve(load_params(root / "params.yaml"), "tiny", [override])


def test_unknown_profile_and_bad_files(tmp_path, root):
    with pytest.raises(ConfigError, match="unknown profile 'huge'"):
        resolve(load_params(root / "params.yaml"), "huge")
    with pytest.raises(ConfigError, match="nope.yaml: params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_params(bad)


def test_missing_key_is_named(root):
    params = load_params(root / "params.yaml")
    del params["model"]["ema"]["norm"]
    with pytest.raises(ConfigError, match="missing key 'model.ema.norm'"):
        resolve(params, "paper")
