"""Exit policies: asked at each exit point of each token whether to stop there.

    full            never exits early
    fixed:N         exits at exit layer N
    confidence:P    exits when the max softmax probability at the exit is >= P (decodes logits at every
                    exit point: the exit-head cost the RL agent avoids)
    entropy:H       exits when the entropy (nats) of the exit's distribution is <= H
    agent:T         the exported RL agent: exits when P(exit) >= T (reads only the hidden state)
    oracle          reference: full depth, reporting the first exit point that agreed (greencode.oracle)

At an exit point the engine decodes over the model's shortlist ([exits].shortlist, see greencode.shortlist)
when it has one: the softmax of confidence:P and entropy:H is then over the shortlist's tokens only, and an
exit can only emit a shortlist token. Full depth always decodes over the whole vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Protocol

import torch

from greencode.agent import ExitAgent, agent_observation
from greencode.errors import GreencodeError
from greencode.oracle import Oracle

POLICY_FORMS = "full | fixed:N | confidence:P | entropy:H | agent:T | oracle"


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


def _check_unit(kind: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise GreencodeError(f"{kind} threshold must be in [0, 1], got {value}")
    return float(value)


@dataclass(frozen=True)
class Confidence:
    threshold: float
    needs_logits: bool = True

    def __post_init__(self):
        _check_unit("confidence", self.threshold)

    @property
    def name(self) -> str:
        return f"confidence:{self.threshold:g}"

    def decide(self, layer, exit_index, hidden, logits):
        confidence = float(torch.softmax(logits.float(), dim=-1).max())
        return confidence >= self.threshold, confidence

    def with_threshold(self, value):
        return replace(self, threshold=value)


@dataclass(frozen=True)
class Entropy:
    threshold: float  # nats
    needs_logits: bool = True

    def __post_init__(self):
        if self.threshold < 0:
            raise GreencodeError(f"entropy threshold must be >= 0 nats, got {self.threshold}")

    @property
    def name(self) -> str:
        return f"entropy:{self.threshold:g}"

    def decide(self, layer, exit_index, hidden, logits):
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
        _check_unit("agent", self.threshold)

    @property
    def name(self) -> str:
        return f"agent:{self.threshold:g}"

    def decide(self, layer, exit_index, hidden, logits):
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


def parse_policy(text: str, exit_points: list[int], load_agent: Callable[[], ExitAgent] | None = None,
                 adapter=None) -> ExitPolicy:
    """Build a policy from its string form; `load_agent` is called only for agent:T."""
    kind, _, arg = text.strip().partition(":")
    if kind == "full" and not arg:
        return Full()
    if kind == "oracle" and not arg:
        return Oracle()
    if kind == "fixed" and arg:
        try:
            layer = int(arg)
        except ValueError:
            raise GreencodeError(f"policy '{text}': N must be a whole exit layer, one of {exit_points}") from None
        if layer not in exit_points:
            raise GreencodeError(f"policy '{text}': layer {layer} is not an exit point; choose one of {exit_points}")
        return Fixed(layer)
    if kind == "confidence" and arg:
        return Confidence(_number(arg, kind))
    if kind == "entropy" and arg:
        return Entropy(_number(arg, kind))
    if kind == "agent" and arg:
        threshold = _check_unit("agent", _number(arg, kind))
        if load_agent is None:
            raise GreencodeError(f"policy '{text}' needs an agent file: pass --agent PATH or set [agent].path")
        return Agent(load_agent(), threshold, adapter, len(exit_points))
    raise GreencodeError(f"unknown policy {text!r}; forms: {POLICY_FORMS}")
