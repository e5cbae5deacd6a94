
import pytest

from greencode.config import load_config, replace
from greencode.errors import GreencodeError
from tests.cli import REPO



def test_the_shipped_toml_loads_and_equals_the_defaults():
    shipped = load_config(REPO / "greencode.toml")
    defaults = load_config(overrides={})  # no file in the test's cwd is assumed
    for section in ("model", "exits", "data", "finetune", "agent", "engine", "energy", "tui", "serve", "eval"):
        assert getattr(shipped, section) == getattr(defaults, section), section


def test_every_key_in_the_shipped_toml_is_commented():
    text = (REPO / "greencode.toml").read_text()
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            assert "#" in line, f"uncommented key: {line}"


def test_dotted_overrides_reach_nested_sections():
    config = load_config(overrides={"agent.threshold": 0.75, "agent.reward.alpha": 0.1})
    assert config.agent.threshold == 0.75
    assert config.agent.reward.alpha == 0.1


@pytest.mark.parametrize("toml, message", [
    ("[agent]\nthresold = 0.9\n", "unknown key 'agent.thresold'; allowed in \\[agent\\]"),
    ("[nosuch]\nx = 1\n", "unknown key 'nosuch'"),
    ("[agent]\nthreshold = 'high'\n", "'agent.threshold' must be float"),
    ("[agent]\nthreshold = 1.5\n", "out of range; allowed: \\[0.0, 1.0\\]"),
    ("[energy]\nsource = 'magic'\n", "choose one of: auto, zeus, estimate"),
    ("[agent.reward]\nalpha = 0.9\nbeta = 0.2\n", "must be <= 'agent.reward.beta'"),
    ("[agent\nthreshold = 1\n", "invalid TOML"),
    ("[serve]\nport = true\n", "'serve.port' must be int"),
])
def test_bad_config_gives_one_line_naming_file_and_key(tmp_path, toml, message):
    path = tmp_path / "greencode.toml"
    path.write_text(toml)
    with pytest.raises(GreencodeError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_binary_config_files(tmp_path):
    with pytest.raises(GreencodeError, match="not found"):
        load_config(tmp_path / "missing.toml")
    binary = tmp_path / "bad.toml"
    binary.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(GreencodeError, match="not UTF-8"):
        load_config(binary)


def test_replace_validates_like_the_file():
    config = load_config(overrides={})
    assert replace(config, engine={"policy": "full"}).engine.policy == "full"
    with pytest.raises(GreencodeError, match="out of range"):
        replace(config, agent={"threshold": -1.0})
