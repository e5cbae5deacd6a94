"""Running figures for the side panel, folded from TokenEvents as they arrive (UI-free).

Everything comes from the events themselves (their seconds and joules), so the panel shows what the
engine measured, not what the UI's clock saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from greencode.events import TokenEvent, layers_skipped_frac


@dataclass
class CompletionStats:
    num_layers: int
    tokens: int = 0
    joules: float = 0.0
    full_depth_joules: float = 0.0
    decode_seconds: float = 0.0  # tokens after the first; the first one carries the prefill
    energy_source: str = ""
    exit_layers: list[int] = field(default_factory=list)

    def add(self, event: TokenEvent) -> None:
        if self.tokens:
            self.decode_seconds += event.seconds
        self.tokens += 1
        self.joules += event.joules
        self.full_depth_joules += event.full_depth_joules
        self.energy_source = event.energy_source
        self.exit_layers.append(event.exit_layer)

    @property
    def joules_saved(self) -> float:
        """Against the same tokens at full depth; negative when early exit cost more (confidence and entropy
        decode logits at every exit point they pass, and the LM head costs ~8 layers)."""
        return self.full_depth_joules - self.joules

    @property
    def saved_frac(self) -> float:
        return self.joules_saved / self.full_depth_joules if self.full_depth_joules > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Decode throughput, as CompletionSummary.tokens_per_s: tokens after the first over their time."""
        return (self.tokens - 1) / self.decode_seconds if self.tokens > 1 and self.decode_seconds > 0 else 0.0

    @property
    def mean_exit_layer(self) -> float:
        return sum(self.exit_layers) / len(self.exit_layers) if self.exit_layers else 0.0

    @property
    def layers_skipped_frac(self) -> float:
        return layers_skipped_frac(self.exit_layers, self.num_layers)


@dataclass
class SessionStats:
    completions: int = 0
    tokens: int = 0
    joules: float = 0.0
    full_depth_joules: float = 0.0
    energy_source: str = ""

    def add(self, event: TokenEvent) -> None:
        self.tokens += 1
        self.joules += event.joules
        self.full_depth_joules += event.full_depth_joules
        self.energy_source = event.energy_source

    @property
    def joules_saved(self) -> float:
        return self.full_depth_joules - self.joules  # negative: cost more than full depth
