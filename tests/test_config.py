import dataclasses

import pytest

from auditor.config import (
    AuditConfig,
    defaults_yaml,
    field_docs,
    load_config,
    read_yaml,
)
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


# ----------------------------------------------------------------- every key, checked once at load


def test_model_and_data_input_keys_live_in_the_config():
    config = load_config({
        "model": {"source": "timm:resnet18", "weights": "w.pt", "num_classes": 10, "kwargs": {"img_size": 64}},
        "data": {"train": "data/train", "val": {"type": "imagefolder", "path": "data/val"}, "preprocessing": "none",
                 "image_size": 64, "max_skipped_fraction": 0.05},
    })
    assert config.model.source == "timm:resnet18" and config.model.kwargs == {"img_size": 64}
    assert config.data.val == {"type": "imagefolder", "path": "data/val"} and config.data.image_size == 64
    assert config.data.max_skipped_fraction == 0.05
    assert AuditConfig().data.max_skipped_fraction == 0.01 and AuditConfig().data.preprocessing == "auto"
    assert load_config(config.to_dict()) == config  # round-trips through results.json's "config"


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"model": {"kwargs": [1]}}, r"`model.kwargs` must be a mapping; got \[1\]"),
        ({"model": {"num_classes": 0}}, "`model.num_classes` must be a positive integer"),
        ({"model": {"source": 3}}, "`model.source` must be str or None"),
        ({"model": {"device": "gpu"}}, r"`model.device` must be 'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps'; got 'gpu'"),
        ({"data": {"train": 3}}, "`data.train` must be str or a mapping or None; got 3"),
        ({"data": {"preprocessing": "imagenet"}}, r"`data.preprocessing` must be one of \['auto', 'model', 'none'\]"),
        ({"data": {"image_size": -32}}, "`data.image_size` must be a positive integer"),
        ({"data": {"max_skipped_fraction": 1.5}}, "`data.max_skipped_fraction` must be between 0 and 1"),
        ({"data": {"num_workers": -1}}, "`data.num_workers` must be zero or more"),
        ({"data": {"mean": [0.5, 0.5, 0.5]}}, "`data.mean` and `data.std` go together"),
        ({"data": {"mean": [0.5, 0.5, 0.5], "std": [0.2]}}, "`data.mean` has 3 values but `data.std` has 1"),
        ({"tuning": {"baselines": ["randm"]}}, r"`tuning.baselines` entries must be among \['random', 'error', 'afr'\]; got 'randm'\. Did you mean 'random'"),
        ({"tuning": {"baselines": ["error", "error"]}}, r"`tuning.baselines` lists \['error'\] more than once"),
        ({"gate": {"fail_on": ["max_gap 0.1"]}}, "`gate.fail_on`: cannot read gate condition 'max_gap 0.1'"),
        ({"gate": {"fail_on": ["max_gapp>0.1"]}}, r"unknown gate metric 'max_gapp'.*Did you mean 'max_gap'"),
        ({"ranking": {"source": "both"}}, r"`ranking.source` is 'both', which needs the concept stage; set `concepts.enabled: true`"),
        ({"discovery": {"enabled": True, "embedding": "clip"}}, r"`discovery.embedding` is 'clip' but `concepts.enabled` is false"),
        ({"tuning": {"enabled": False}, "gate": {"fail_on": ["max_gap>0.1, accuracy<0.8"]}},
         r"gate condition 'accuracy<0.8' needs head-tuning metrics but `tuning.enabled` is false"),
    ],
)
def test_every_value_is_checked_at_load(bad, message):
    with pytest.raises(ConfigError, match=message):
        load_config(bad)


def test_allowed_baselines_and_gates_load():
    assert load_config({"tuning": {"baselines": []}}).tuning.baselines == []
    assert load_config({"tuning": {"baselines": ["error"]}}).tuning.baselines == ["error"]
    config = load_config({"tuning": {"enabled": False}, "gate": {"fail_on": ["max_gap>0.1", "n_skipped_images>0"]}})
    assert config.gate.fail_on == ["max_gap>0.1", "n_skipped_images>0"]


def test_unknown_keys_come_before_any_other_error():
    # a bad value earlier in the file, a misspelt key later, deeper: the misspelt key is reported
    with pytest.raises(ConfigError, match=r"unknown config key `tuning.epochz`.*Did you mean `tuning.epochs`"):
        load_config({"gaps": {"min_k": "ten"}, "gate": {"fail_on": ["nonsense"]}, "tuning": {"epochz": 3}})
    with pytest.raises(ConfigError, match=r"unknown config key `modle`.*Did you mean `model`"):
        load_config({"data": {"train": 3}, "modle": {"source": "timm:resnet18"}})


def test_rules_across_keys_hold_for_replace_and_overrides():
    config = load_config({"gate": {"fail_on": ["worst_decile_accuracy<0.5"]}})
    with pytest.raises(ConfigError, match="`tuning.enabled` is false"):
        config.replace(**{"tuning.enabled": False})
    with pytest.raises(ConfigError, match="`tuning.enabled` is false"):
        load_config(config, **{"tuning.enabled": False})
    # an override can also repair what the file alone would reject: one check over the merged result
    fixed = load_config({"tuning": {"enabled": False}, "gate": {"fail_on": ["accuracy<0.5"]}}, **{"tuning.enabled": True})
    assert fixed.tuning.enabled and fixed.gate.fail_on == ["accuracy<0.5"]


def test_paths_are_accepted_as_strings(tmp_path):
    config = load_config({"report": {"output_dir": tmp_path}, "data": {"train": tmp_path / "train"}})
    assert config.report.output_dir == str(tmp_path) and config.data.train == str(tmp_path / "train")


def test_read_yaml_is_the_one_reader(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_yaml(empty) == {} and load_config(empty) == AuditConfig()
    listing = tmp_path / "list.yaml"
    listing.write_text("- gaps\n- tuning\n")
    with pytest.raises(ConfigError, match="must hold a mapping of sections"):
        read_yaml(listing)
    with pytest.raises(ConfigError, match="must hold a mapping of sections"):
        load_config(listing)


def test_every_key_is_documented():
    defaults = AuditConfig()
    sections = {f.name: type(getattr(defaults, f.name)) for f in dataclasses.fields(defaults) if dataclasses.is_dataclass(getattr(defaults, f.name))}
    top_level = [f.name for f in dataclasses.fields(defaults) if f.name not in sections]
    assert set(top_level) <= set(field_docs(AuditConfig)), "AuditConfig's docstring misses a top-level key"
    for name, section in sections.items():
        undocumented = [f.name for f in dataclasses.fields(section) if f.name not in field_docs(section)]
        assert not undocumented, f"{name}: no docstring entry for {undocumented}"
    text = defaults_yaml()
    assert "  source: null  # where the model comes from" in text
    assert "  max_skipped_fraction: 0.01  # share of unreadable images tolerated before the audit stops" in text
    assert "baselines: [random, error]  #" in text and "One of ['random', 'error', 'afr']." in text
