"""The one policy grammar and threshold rule (greencode.exits.policies), as config, CLI, TUI and server see it."""

import pytest

from greencode.config import load_config
from greencode.errors import GreencodeError
from greencode.exits.policies import check_threshold, split_policy


@pytest.mark.parametrize("text, expected", [
    ("full", ("full", "")), ("fixed:14", ("fixed", "14")), ("confidence:0.9", ("confidence", "0.9")),
    ("entropy:2.5", ("entropy", "2.5")), (" agent:1 ", ("agent", "1")),
])
def test_split_policy_accepts_the_forms(text, expected):
    assert split_policy(text) == expected


@pytest.mark.parametrize("text, message", [
    ("fast", "unknown policy"), ("full:1", "unknown policy"), ("agent", "unknown policy"),
    ("fixed:x", "whole exit layer"), ("confidence:high", "not a number"), ("agent:1.5", "must be in \\[0, 1\\]"),
    ("entropy:-1", ">= 0 nats"), ("confidence:nan", "must be in \\[0, 1\\]"),
])
def test_split_policy_rejects_with_the_forms(text, message):
    with pytest.raises(GreencodeError, match=message):
        split_policy(text)


def test_threshold_rule():
    assert check_threshold("agent", 1) == 1.0 and check_threshold("entropy", 7.0) == 7.0
    with pytest.raises(GreencodeError, match="--threshold: confidence threshold must be in \\[0, 1\\]"):
        check_threshold("confidence", -0.1, "--threshold")


@pytest.mark.parametrize("overrides, key", [
    ({"engine.policy": "warp"}, "engine.policy"), ({"tui.policy": "agent:2"}, "tui.policy"),
    ({"eval.policies": ["full", "fixed:"]}, "eval.policies"),
])
def test_config_checks_policies_with_the_same_rule(overrides, key):
    with pytest.raises(GreencodeError, match=f"command line: '{key}'"):
        load_config(None, overrides)


@pytest.mark.parametrize("text, message", [
    ("agent:0.9:1.5", "confirm bound C must be in \\[0, 1\\]"), ("agent:0.9:0.5:-1", "ramp R must be a whole"),
    ("agent:0.9:0.5:2:1", "T\\[:C\\[:R\\]\\]"), ("agent:0.9:", "T\\[:C\\[:R\\]\\]"), ("agent:2:0.5", "\\[0, 1\\]"),
])
def test_agent_confirm_and_ramp_are_checked(text, message):
    with pytest.raises(GreencodeError, match=message):
        split_policy(text)
    assert split_policy("agent:0.8:0.5:3") == ("agent", "0.8:0.5:3")
