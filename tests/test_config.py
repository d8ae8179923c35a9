import pytest
import yaml

from pipeline.config import AnalysisConfig, ConfigError, load_config, parse_set_option


def test_default_yaml_matches_dataclass_defaults():
    from_yaml = load_config()
    assert from_yaml == AnalysisConfig()


def test_file_and_overrides_layer_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"sampling": {"value": 8}, "detect": {"min_confidence": 0.8}}))
    cfg = load_config(path, {"sampling.value": 4, "device": None})
    assert cfg.sampling.value == 4 and cfg.detect.min_confidence == 0.8 and cfg.device == "auto"
    assert cfg.detect.crop_size == AnalysisConfig().detect.crop_size


def test_unknown_keys_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting 'detect.nope'"):
        load_config(None, {"detect.nope": 1})
    with pytest.raises(ConfigError):
        parse_set_option(("novalue",))
    assert parse_set_option(("a.b=0.5", "c=true")) == {"a.b": 0.5, "c": True}
