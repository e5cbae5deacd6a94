"""What the playground runs with, resolved once from the config and the command line (UI-free)."""

from __future__ import annotations

from dataclasses import dataclass, field

from greencode.config import Config
from greencode.decoding.window import MAX_CONTEXT_CHARS
from greencode.exits.policies import THRESHOLD_KINDS, check_threshold, split_policy

# The policies the switch key cycles through, in order; the knob sets the threshold of those that have one.
POLICY_CYCLE = ("agent", "full", "confidence")
THRESHOLD_POLICIES = THRESHOLD_KINDS
THRESHOLD_STEP = 0.02


@dataclass(frozen=True)
class TuiSettings:
    config: Config = field(default_factory=Config)
    model_spec: str = "default"
    agent_path: str = ""  # "" = the agent shipped with the model, if any
    policy_kind: str = "agent"  # one of greencode.exits.policies.POLICY_KINDS
    policy_arg: str = ""  # fixed:N's layer, entropy:H's nats, agent's ":C:R" (the knob covers agent/confidence's T, P)
    threshold: float = 0.9  # T of agent:T, P of confidence:P
    idle_ms: int = 700  # complete after this idle pause; 0 = only on the explicit key
    mode: str = "line"  # line | block
    line_tokens: int = 15  # at most this many tokens in line mode
    block_tokens: int = 48
    temperature: float = 0.0
    top_p: float = 1.0
    max_context_chars: int = MAX_CONTEXT_CHARS  # text before the cursor sent as the prompt (greencode/decoding/window.py)


def policy_string(kind: str, threshold: float, arg: str = "") -> str:
    """The engine's policy form for a kind and the knob's value."""
    if kind == "full":
        return "full"
    if kind in THRESHOLD_POLICIES:
        suffix = arg if kind == "agent" and arg.startswith(":") else ""  # agent:T's own C and R stay as given
        return f"{kind}:{threshold:g}{suffix}"
    return f"{kind}:{arg}"


def settings_from_config(config: Config, threshold: float | None = None) -> TuiSettings:
    """[tui] keys fall back to [model], [agent] and [engine]; --threshold replaces the policy's T."""
    kind, arg = split_policy(config.tui.policy or config.engine.policy)
    if threshold is not None:
        value = round(check_threshold("agent", threshold, "--threshold"), 4)  # the knob: [0, 1]
    elif kind in THRESHOLD_POLICIES:
        value = round(float(arg.split(":")[0]), 4)  # split_policy checked its range (agent:T[:C[:R]]: T)
    else:
        value = config.agent.threshold
    return TuiSettings(
        config=config,
        model_spec=config.tui.model or config.model.spec,
        agent_path=config.tui.agent or config.agent.path,
        policy_kind=kind,
        policy_arg=arg if kind not in THRESHOLD_POLICIES else arg[len(arg.split(":")[0]):],
        threshold=value,
        idle_ms=config.tui.idle_ms,
        mode=config.tui.mode,
        line_tokens=config.engine.max_new_tokens,
        block_tokens=config.tui.block_tokens,
        temperature=config.engine.temperature,
        top_p=config.engine.top_p,
    )
