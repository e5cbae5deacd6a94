"""Exit policies: asked at each exit point of each token whether to stop there.

    full            never exits early
    fixed:N         exits at exit layer N
    confidence:P    exits when the max softmax probability at the exit is >= P (decodes logits at every
                    exit point: the exit-head cost the RL agent avoids)
    entropy:H       exits when the entropy (nats) of the exit's distribution is <= H
    agent:T[:C[:R]] the exported exit agent: exits when P(exit) >= T (reads only the hidden state), confirmed
                    at the exit (see Agent): C bounds the exit head's max probability (0 = no confirm), R
                    ramps T up over a completion's first R decoded tokens (0 = none); both default to the
                    model's calibrated values (the shipped manifest's "knob"), so agent:T reads as before
    oracle          reference: full depth, reporting the first exit point that agreed (greencode.exits.oracle)

At an exit point the engine decodes over the model's shortlist ([exits].shortlist, see greencode.exits.shortlist)
when it has one: the softmax of confidence:P and entropy:H is then over the shortlist's tokens only, and an
exit can only emit a shortlist token. Full depth always decodes over the whole vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Protocol

from greencode.errors import GreencodeError
from greencode.exits.oracle import Oracle

if TYPE_CHECKING:  # torch is imported where a policy decides, so config and CLI can check policies without it
    import torch

    from greencode.exits.agent import ExitAgent

POLICY_FORMS = "full | fixed:N | confidence:P | entropy:H | agent:T[:C[:R]] | oracle"
POLICY_KINDS = ("full", "fixed", "confidence", "entropy", "agent", "oracle")
NO_ARGUMENT = ("full", "oracle")
THRESHOLD_KINDS = ("confidence", "agent")  # thresholds in [0, 1]; entropy's H is in nats, >= 0


def check_threshold(kind: str, value: float, where: str = "") -> float:
    """The one threshold rule: P and T in [0, 1] (higher = stricter = deeper), H >= 0 nats."""
    where = f"{where}: " if where else ""
    if kind == "entropy":
        if not value >= 0:
            raise GreencodeError(f"{where}entropy threshold must be >= 0 nats, got {value}")
    elif not 0.0 <= value <= 1.0:
        raise GreencodeError(f"{where}{kind} threshold must be in [0, 1] (higher = stricter = deeper), got {value}")
    return float(value)


def split_policy(text: str) -> tuple[str, str]:
    """The one policy grammar: "agent:0.9" -> ("agent", "0.9"), checking the form and any threshold.
    Layers and agent files need the model: parse_policy checks those."""
    kind, _, arg = text.strip().partition(":")
    if kind not in POLICY_KINDS or (kind in NO_ARGUMENT) == bool(arg):
        raise GreencodeError(f"unknown policy {text!r}; forms: {POLICY_FORMS}")
    if kind == "fixed":
        if not arg.strip().lstrip("-").isdigit():
            raise GreencodeError(f"policy '{text}': N must be a whole exit layer; forms: {POLICY_FORMS}")
    elif kind == "agent":
        agent_parts(arg, text)
    elif arg:
        check_threshold(kind, _number(arg, kind), f"policy '{text}'")
    return kind, arg


def agent_parts(arg: str, text: str = "") -> tuple[float, float | None, int | None]:
    """agent:T[:C[:R]]'s argument -> (T, C or None, R or None); None = the model's calibrated default."""
    text = text or f"agent:{arg}"
    parts = arg.split(":")
    if len(parts) > 3 or not all(p.strip() for p in parts):
        raise GreencodeError(f"policy '{text}': agent takes T[:C[:R]] (threshold, confirm bound, ramp tokens), "
                             f"e.g. agent:0.9 or agent:0.8:0.5:3; forms: {POLICY_FORMS}")
    threshold = check_threshold("agent", _number(parts[0], "agent"), f"policy '{text}'")
    confirm = None
    if len(parts) > 1:
        confirm = _number(parts[1], "agent")
        if not 0.0 <= confirm <= 1.0:
            raise GreencodeError(f"policy '{text}': confirm bound C must be in [0, 1] (the exit head's max "
                                 f"probability; 0 = no confirm), got {parts[1]}")
    ramp = None
    if len(parts) > 2:
        if not parts[2].strip().isdigit():
            raise GreencodeError(f"policy '{text}': ramp R must be a whole number of tokens >= 0 (0 = none), "
                                 f"got {parts[2]!r}")
        ramp = int(parts[2])
    return threshold, confirm, ramp


class ExitPolicy(Protocol):
    name: str
    needs_logits: bool  # the engine decodes logits at every exit point for this policy

    def decide(self, layer: int, exit_index: int, hidden: torch.Tensor,
               logits: torch.Tensor | None) -> tuple[bool, float | None]:
        """(exit here?, the policy's score) at exit point `layer` (the `exit_index`-th exit point)."""

    def with_threshold(self, value: float) -> "ExitPolicy":
        """The same policy with a new threshold (policies without one return themselves)."""


@dataclass(frozen=True)
class Full:
    name: str = "full"
    needs_logits: bool = False

    def decide(self, layer, exit_index, hidden, logits):
        return False, None

    def with_threshold(self, value):
        return self


@dataclass(frozen=True)
class Fixed:
    layer: int
    needs_logits: bool = False

    @property
    def name(self) -> str:
        return f"fixed:{self.layer}"

    def decide(self, layer, exit_index, hidden, logits):
        return layer == self.layer, None

    def with_threshold(self, value):
        return self


@dataclass(frozen=True)
class Confidence:
    threshold: float
    needs_logits: bool = True

    def __post_init__(self):
        check_threshold("confidence", self.threshold)

    @property
    def name(self) -> str:
        return f"confidence:{self.threshold:g}"

    def decide(self, layer, exit_index, hidden, logits):
        import torch

        confidence = float(torch.softmax(logits.float(), dim=-1).max())
        return confidence >= self.threshold, confidence

    def with_threshold(self, value):
        return replace(self, threshold=value)


@dataclass(frozen=True)
class Entropy:
    threshold: float  # nats
    needs_logits: bool = True

    def __post_init__(self):
        check_threshold("entropy", self.threshold)

    @property
    def name(self) -> str:
        return f"entropy:{self.threshold:g}"

    def decide(self, layer, exit_index, hidden, logits):
        import torch

        logp = torch.log_softmax(logits.float(), dim=-1)
        entropy = float(-(logp.exp() * logp).sum())
        return entropy <= self.threshold, entropy

    def with_threshold(self, value):
        return replace(self, threshold=value)


@dataclass(frozen=True)
class Agent:
    """agent:T[:C[:R]]. The agent proposes an exit when P(exit) >= T. Confirm-at-exit: the exit head's logits
    are decoded anyway to pick an exiting token, so the engine hands them to `confirm`, which vetoes the exit
    (the token goes on deeper) when their max probability is below C; a veto costs that one exit-head pass.
    Derailment: a wrong token early in a completion changes the rest of it, so the first R decoded tokens run
    at a stricter threshold, 1 - (1 - T) * k / (R + 1) for the k-th (`for_token`). C and R default to the
    values calibrated with the model's agent (`defaults`); `name` spells out only those that differ."""

    agent: ExitAgent
    threshold: float
    adapter: object
    n_exits: int
    needs_logits: bool = False
    confirm: float = 0.0  # C: veto an exit whose head's max probability is below it (0 = never)
    ramp: int = 0  # R: decoded tokens at the start of a completion that get a stricter threshold
    defaults: tuple[float, int] = (0.0, 0)  # the model's calibrated (C, R): what agent:T means

    def __post_init__(self):
        check_threshold("agent", self.threshold)

    @property
    def name(self) -> str:
        extra = ""
        if (self.confirm, self.ramp) != self.defaults:
            extra = f":{self.confirm:g}" + (f":{self.ramp}" if self.ramp != self.defaults[1] else "")
        return f"agent:{self.threshold:g}{extra}"

    def decide(self, layer, exit_index, hidden, logits):
        from greencode.exits.agent import agent_observation

        position = exit_index if self.agent.position_feature else None
        p_exit = float(self.agent.prob_exit(agent_observation(self.adapter, hidden, position, self.n_exits)))
        return p_exit >= self.threshold, p_exit

    def confirm_exit(self, logits: torch.Tensor) -> bool:
        """Keep a proposed exit? (the engine asks only when C > 0, with the exit head's logits)."""
        import torch

        return float(torch.softmax(logits.float(), dim=-1).max()) >= self.confirm

    @property
    def confirms(self) -> bool:
        return self.confirm > 0

    def for_token(self, index: int) -> "Agent":
        """The policy for the completion's `index`-th token (0 = the prefill's): stricter within the ramp."""
        if index > self.ramp or index <= 0:
            return self
        return replace(self, threshold=1 - (1 - self.threshold) * index / (self.ramp + 1))

    def with_threshold(self, value):
        return replace(self, threshold=value)


def _number(text: str, kind: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise GreencodeError(f"policy '{kind}:{text}': '{text}' is not a number; forms: {POLICY_FORMS}") from None


def parse_policy(text: str, exit_points: list[int], load_agent: Callable[[], "ExitAgent"] | None = None,
                 adapter=None, agent_defaults: tuple[float, int] = (0.0, 0)) -> ExitPolicy:
    """Build a policy from its string form (split_policy's grammar) for a model's exit points; `load_agent`
    is called only for agent:T, whose C and R default to `agent_defaults` (the agent's calibrated values)."""
    kind, arg = split_policy(text)
    if kind == "full":
        return Full()
    if kind == "oracle":
        return Oracle()
    if kind == "fixed":
        layer = int(arg)
        if layer not in exit_points:
            raise GreencodeError(f"policy '{text}': layer {layer} is not an exit point; choose one of {exit_points}")
        return Fixed(layer)
    if kind == "confidence":
        return Confidence(float(arg))
    if kind == "entropy":
        return Entropy(float(arg))
    if load_agent is None:
        raise GreencodeError(f"policy '{text}' needs an agent file: pass --agent PATH or set [agent].path")
    threshold, confirm, ramp = agent_parts(arg, text)
    default_confirm, default_ramp = agent_defaults
    return Agent(load_agent(), threshold, adapter, len(exit_points), confirm=default_confirm if confirm is None else confirm,
                 ramp=default_ramp if ramp is None else ramp, defaults=(default_confirm, default_ramp))


def check_side_by_side(names: list[str], option: str = "--policies", agents: int = 0, skipped: str = "") -> None:
    """A side-by-side run (eval, bench) needs a policy it measures: `oracle` alone has no figures of its own
    (it is modelled from a full-depth run). agents: agent:T runs added beside `names`; skipped: why some
    named policies were dropped, for the message."""
    if agents or any(name != "oracle" for name in names):
        return
    why = f" ({skipped})" if skipped else ""
    if not names:
        raise GreencodeError(f"{option} names no policy{why}; give at least one, e.g. {option} full,fixed:14")
    raise GreencodeError(f"{option} oracle alone measures nothing{why}: the oracle is modelled from a full-depth "
                         f"run; add a measured policy, e.g. {option} full,oracle")
