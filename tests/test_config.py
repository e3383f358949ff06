import pytest

from auditor.config import AuditConfig, load_config
from auditor.errors import ConfigError


def test_defaults_and_dict_overrides():
    config = load_config({"gaps": {"min_k": 5}, "seed": 3})
    assert config.gaps.min_k == 5 and config.seed == 3
    assert config.features.top_k == AuditConfig().features.top_k


def test_yaml_round_trip(tmp_path):
    path = tmp_path / "audit.yaml"
    path.write_text("tuning:\n  n_per_class: 50\nranking:\n  source: features\n")
    config = load_config(path)
    assert config.tuning.n_per_class == 50
    assert load_config(config.to_dict()) == config


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"gapz": {}}, "Did you mean `gaps`"),
        ({"gaps": {"min_kk": 3}}, "Did you mean `gaps.min_k`"),
        ({"gaps": {"min_k": "ten"}}, "`gaps.min_k` must be int"),
        ({"ranking": {"source": "vibes"}}, r"one of \['features', 'concepts', 'both'\]"),
        ({"gaps": {"top_fraction": 1.5}}, "between 0 and 1"),
        ({"features": {"top_k": 0}}, "positive"),
        ({"gaps": 3}, "must be a mapping"),
    ],
)
def test_bad_config_names_the_key(bad, message):
    with pytest.raises(ConfigError, match=message):
        load_config(bad)


def test_missing_and_malformed_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("gaps: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_replace_with_dotted_keys():
    config = AuditConfig().replace(**{"tuning.enabled": False})
    assert config.tuning.enabled is False
    with pytest.raises(ConfigError):
        AuditConfig().replace(**{"nope.key": 1})
