import pytest
import yaml

from deepfake_detect.pipeline.core.config import AnalysisConfig, ConfigError, load_config, parse_set_option


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


@pytest.mark.parametrize("key, value, message", [
    ("aggregate.track_strategy", "foo", "setting aggregate.track_strategy: Input should be 'confident', 'mean' or 'median'"),
    ("sampling.mode", "foo", "setting sampling.mode: Input should be 'count', 'fps' or 'every'"),
    ("batch_size", 0, "setting batch_size: Input should be greater than or equal to 1"),
    ("detect.crop_size", "abc", "setting detect.crop_size: Input should be a valid integer"),
    ("detect.min_confidence", 1.5, "setting detect.min_confidence: Input should be less than or equal to 1"),
    ("render.enabled", "maybe", "setting render.enabled: Input should be 'auto', 'on' or 'off'"),
    ("sampling.value", -3, "setting sampling.value: Input should be greater than 0"),
])
def test_every_setting_is_checked_when_read(key, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as caught:
        load_config(None, {key: value})
    assert "\n" not in str(caught.value) and repr(value) in str(caught.value)


def test_track_strategy_choices_are_the_aggregate_strategies():
    import typing

    from deepfake_detect.stages.aggregate import TRACK_STRATEGIES, AggregateSettings

    choices = typing.get_args(typing.get_type_hints(AggregateSettings)["track_strategy"])
    assert set(choices) == set(TRACK_STRATEGIES)


def test_bare_on_off_mean_the_render_choices(tmp_path):
    """YAML 1.1 reads a bare `off` as false: `--set render.enabled=off` and a config file's
    `enabled: off` must still mean "off", not fail or turn rendering on."""
    assert load_config(overrides=parse_set_option(("render.enabled=off",))).render.enabled == "off"
    assert load_config(overrides=parse_set_option(("render.enabled=on",))).render.enabled == "on"
    (tmp_path / "c.yaml").write_text("render:\n  enabled: off\n")
    assert load_config(tmp_path / "c.yaml").render.enabled == "off"
    with pytest.raises(ConfigError, match="render.enabled"):
        load_config(overrides={"render.enabled": "sometimes"})


def test_job_settings_are_checked_by_the_one_loader(tmp_path):
    from deepfake_detect.pipeline.archive.ray_engine import RaySettings
    from deepfake_detect.pipeline.cli.common import CommandError, checked_settings
    from deepfake_detect.pipeline.server.jobs import ServeSettings
    from deepfake_detect.pipeline.watch.settings import WatchSettings

    folders = {"inbox": tmp_path, "out": tmp_path / "out", "processed": None, "failed": tmp_path / "failed"}
    assert checked_settings(WatchSettings, {**folders, "workers": 2}, "watch setting").workers == 2
    with pytest.raises(CommandError, match=r"^watch setting workers: Input should be greater than or equal to 1, got 0$"):
        checked_settings(WatchSettings, {**folders, "workers": 0}, "watch setting")
    with pytest.raises(CommandError, match="^serve setting queue_size: "):
        checked_settings(ServeSettings, {"data": tmp_path, "queue_size": 0}, "serve setting")
    with pytest.raises(CommandError, match="^archive setting timeout_s: "):
        checked_settings(RaySettings, {"timeout_s": -1.0}, "archive setting")
    with pytest.raises(CommandError, match="unknown setting 'wrokers'"):
        checked_settings(RaySettings, {"wrokers": 2}, "archive setting")
