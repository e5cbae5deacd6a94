"""Exit policies: asked at each exit point of each token whether to stop there.

    full            never exits early
    fixed:N         exits at exit layer N
    confidence:P    exits when the max softmax probability at the exit is >= P (decodes logits at every
                    exit point: the exit-head cost the RL agent avoids)
    entropy:H       exits when the entropy (nats) of the exit's distribution is <= H
    agent:T         the exported RL agent: exits when P(exit) >= T (reads only the hidden state)
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

POLICY_FORMS = "full | fixed:N | confidence:P | entropy:H | agent:T | oracle"
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
    elif arg:
        check_threshold(kind, _number(arg, kind), f"policy '{text}'")
    return kind, arg


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
    agent: ExitAgent
    threshold: float
    adapter: object
    n_exits: int
    needs_logits: bool = False

    def __post_init__(self):
        check_threshold("agent", self.threshold)

    @property
    def name(self) -> str:
        return f"agent:{self.threshold:g}"

    def decide(self, layer, exit_index, hidden, logits):
        from greencode.exits.agent import agent_observation

        position = exit_index if self.agent.position_feature else None
        p_exit = float(self.agent.prob_exit(agent_observation(self.adapter, hidden, position, self.n_exits)))
        return p_exit >= self.threshold, p_exit

    def with_threshold(self, value):
        return replace(self, threshold=value)


def _number(text: str, kind: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise GreencodeError(f"policy '{kind}:{text}': '{text}' is not a number; forms: {POLICY_FORMS}") from None


def parse_policy(text: str, exit_points: list[int], load_agent: Callable[[], "ExitAgent"] | None = None,
                 adapter=None) -> ExitPolicy:
    """Build a policy from its string form (split_policy's grammar) for a model's exit points; `load_agent`
    is called only for agent:T."""
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
    return Agent(load_agent(), float(arg), adapter, len(exit_points))


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
