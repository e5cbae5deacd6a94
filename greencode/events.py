"""What the engine's one token stream carries. The TUI, the endpoint, the benchmark, the evaluation
and the trajectory builder all read these."""

from __future__ import annotations

from dataclasses import dataclass, field


def layers_skipped_frac(exit_layers: list[int], num_layers: int) -> float:
    """The share of decoder layers the tokens did not run: 1 - layers run / (tokens x L)."""
    return 1 - sum(exit_layers) / (len(exit_layers) * num_layers) if exit_layers else 0.0


@dataclass(frozen=True)
class TokenEvent:
    index: int  # 0-based position in the completion
    token_id: int
    text: str  # the text this token adds (decoded incrementally, so multi-token characters come out whole)
    exit_layer: int  # 1..L; L means the token ran at full depth
    layers_run: int  # decoder layers executed for this token (== exit_layer, but L for the oracle)
    num_layers: int  # L
    score: float | None  # the policy's score at the exit: P(exit), confidence, ...; None for full/fixed
    seconds: float  # wall time of this token
    joules: float  # energy attributed to this token
    energy_source: str  # "measured: gpu", "measured: cpu" or "estimate"
    full_depth_joules: float  # the same token's estimated energy at full depth (for "joules saved")
    policy: str  # the policy that decided this token, e.g. "agent:0.9"
    exit_scores: tuple = ()  # the policy's score at each exit point the token passed, in order (the last decided)
    modelled_units: float = 0.0  # its cost in layer-units by greencode.engine.CostModel (the oracle's: as if it
    #                              had left at its exit layer, though it ran every layer)


@dataclass(frozen=True)
class CompletionSummary:
    text: str
    tokens: int
    prompt_tokens: int
    dropped_prompt_tokens: int  # context tokens cut from the start to fit the model's window
    seconds: float  # decode time: tokens after the first (the first comes out of the prefill)
    prefill_seconds: float
    joules: float
    energy_source: str
    full_depth_joules: float
    mean_exit_layer: float
    layers_skipped_frac: float  # 1 - layers run / (tokens * L)
    stop_reason: str  # "length", "stop", "eos", "eol", "cancelled"
    exit_layers: list[int] = field(default_factory=list)
    reused_prompt_tokens: int = 0  # leading prompt tokens whose prefill came from the prefix cache
    events: list[TokenEvent] = field(default_factory=list)  # filled by EarlyExitEngine.complete()

    @property
    def tokens_per_s(self) -> float:
        """Decode throughput: the tokens after the first over the decode time (prefill excluded)."""
        return (self.tokens - 1) / self.seconds if self.tokens > 1 and self.seconds > 0 else 0.0

    @property
    def joules_saved(self) -> float:
        return max(0.0, self.full_depth_joules - self.joules)
