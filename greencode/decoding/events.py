"""What the engine's one token stream carries. The TUI, the endpoint, the benchmark, the evaluation
and the trajectory builder all read these."""

from __future__ import annotations

from dataclasses import dataclass, field


def layers_skipped_frac(exit_layers: list[int], num_layers: int) -> float:
    """The share of decoder layers the tokens did not run: 1 - layers run / (tokens x L)."""
    return 1 - sum(exit_layers) / (len(exit_layers) * num_layers) if exit_layers else 0.0


def eol_cut(text: str) -> int | None:
    """The one end-of-line rule (line mode): a completion ends at its first newline after some content;
    where, or None while there is none. Leading blank lines do not end it."""
    body = text.lstrip()
    return len(text) - len(body) + body.index("\n") if "\n" in body else None


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
    modelled_units: float = 0.0  # its cost in layer-units by greencode.decoding.engine.CostModel (the oracle's: as if it
    #                              had left at its exit layer, though it ran every layer)


@dataclass
class Figures:
    """A completion's figures, or many completions' summed: the one place tokens/s, joules saved, the mean
    exit layer and the share of layers skipped are computed. The engine's summary, the TUI (live, token by
    token), bench and eval (over many completions) and serve (through the summary) all read these."""

    num_layers: int  # L
    tokens: int = 0
    decode_tokens: int = 0  # tokens after each completion's first (the first comes out of the prefill)
    decode_seconds: float = 0.0
    joules: float = 0.0
    full_depth_joules: float = 0.0  # the same tokens' estimated energy at full depth
    energy_source: str = ""
    exit_layers: list[int] = field(default_factory=list)

    def add(self, event: TokenEvent) -> None:
        """One more token, as it streams in."""
        if event.index > 0:
            self.decode_tokens += 1
            self.decode_seconds += event.seconds
        self.tokens += 1
        self.joules += event.joules
        self.full_depth_joules += event.full_depth_joules
        self.energy_source = event.energy_source
        self.exit_layers.append(event.exit_layer)

    def add_completion(self, tokens: int, decode_seconds: float, joules: float, full_depth_joules: float,
                       exit_layers: list[int], energy_source: str) -> None:
        """One more finished completion (a summary, or a record eval stored)."""
        self.tokens += tokens
        self.decode_tokens += max(0, tokens - 1)
        self.decode_seconds += decode_seconds
        self.joules += joules
        self.full_depth_joules += full_depth_joules
        self.exit_layers += exit_layers
        self.energy_source = energy_source

    @property
    def tokens_per_s(self) -> float:
        """Decode throughput: the tokens after each first over their time (prefill excluded)."""
        return self.decode_tokens / self.decode_seconds if self.decode_tokens and self.decode_seconds > 0 else 0.0

    @property
    def joules_saved(self) -> float:
        """Against the same tokens at full depth; negative when early exit cost more (confidence and entropy
        decode logits at every exit point they pass, and the LM head costs several layers)."""
        return self.full_depth_joules - self.joules

    @property
    def joules_saved_frac(self) -> float:
        return self.joules_saved / self.full_depth_joules if self.full_depth_joules > 0 else 0.0

    @property
    def mean_exit_layer(self) -> float:
        return sum(self.exit_layers) / len(self.exit_layers) if self.exit_layers else 0.0

    @property
    def layers_skipped_frac(self) -> float:
        return layers_skipped_frac(self.exit_layers, self.num_layers)


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
    num_layers: int = 0  # L

    @property
    def figures(self) -> Figures:
        figures = Figures(self.num_layers)
        figures.add_completion(self.tokens, self.seconds, self.joules, self.full_depth_joules, self.exit_layers,
                               self.energy_source)
        return figures

    @property
    def tokens_per_s(self) -> float:
        return self.figures.tokens_per_s

    @property
    def joules_saved(self) -> float:
        return self.figures.joules_saved

    @classmethod
    def of(cls, events: list[TokenEvent], num_layers: int, **fields) -> "CompletionSummary":
        """The summary of streamed `events`: their figures, plus the fields only the stream knows (text,
        prompt tokens, seconds, stop reason, ...)."""
        figures = Figures(num_layers)
        for event in events:
            figures.add(event)
        return cls(tokens=figures.tokens, joules=figures.joules, full_depth_joules=figures.full_depth_joules,
                   mean_exit_layer=figures.mean_exit_layer, layers_skipped_frac=figures.layers_skipped_frac,
                   exit_layers=figures.exit_layers, num_layers=num_layers, **fields)
