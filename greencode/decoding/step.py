"""The pieces one decoding step is made of, which EarlyExitEngine composes: the options of a completion and
its stop rules, sampling, incremental detokenisation, the cost model, the exit head's token ids."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from greencode.config import MAX_SEED, MAX_TEMPERATURE
from greencode.errors import GreencodeError
from greencode.decoding.events import eol_cut


@dataclass(frozen=True)
class DecodeOptions:
    """How one completion decodes: EarlyExitEngine.stream's keyword arguments, checked once."""

    max_new_tokens: int = 15
    stop: tuple[str, ...] = ()  # stop sequences: the text ends before the first one
    stop_at_eol: bool = False  # line mode: end at the first newline after some content
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    record: bool = False  # full depth, each token with its ExitTrace (RL trajectories)
    seed: int | None = None
    record_scores: bool = True  # keep the policy's score at every exit point a token passed
    stop_rule: object = None  # e.g. greencode.decoding.fim.SuffixStop: cut(text, finished=False) -> index or None

    def __post_init__(self):
        if self.max_new_tokens <= 0:
            raise GreencodeError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.temperature <= MAX_TEMPERATURE or not 0 < self.top_p <= 1:
            raise GreencodeError(f"temperature must be in [0, {MAX_TEMPERATURE:g}] and top_p in (0, 1], got "
                                 f"{self.temperature}, {self.top_p}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise GreencodeError(f"seed must be in [0, {MAX_SEED}] (a 64-bit generator's), got {self.seed}")

    def stop_reason(self, text: str, token: int, eos: int | None) -> str | None:
        """Why a completion whose text is now `text` (its last token `token`) ends here, or None."""
        if token == eos:
            return "eos"
        if self.stop and any(s in text for s in self.stop):
            return "stop"
        if self.stop_at_eol and eol_cut(text) is not None:
            return "eol"
        if self.stop_rule is not None and self.stop_rule.cut(text) is not None:
            return "stop"
        return None


def causal_mask_after(past: int, new: int, dtype, device) -> torch.Tensor:
    """Additive mask (1, 1, new, past + new): new token i sees every cached position and new tokens <= i.

    Needed when several tokens run on top of a cache: without a mask SDPA's causal flag aligns the
    triangle top-left, so the new tokens would not see the cached prefix."""
    allowed = torch.ones(new, past + new, dtype=torch.bool, device=device).tril(diagonal=past)
    return torch.zeros(new, past + new, dtype=dtype, device=device).masked_fill(
        ~allowed, torch.finfo(dtype).min)[None, None]


GREEDY_BELOW = 1e-4  # temperatures this small would overflow logits / T: treat them as greedy


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None) -> int:
    if temperature < GREEDY_BELOW:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p
        keep[0] = True  # the top token always stays: a tiny top_p (1e-300 is 0 in float32) must not empty the set
        probs = torch.zeros_like(probs).scatter(-1, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


class TextTracker:
    """Incremental detokenisation: the text each token adds, holding back partial UTF-8 characters."""

    def __init__(self, tokenizer, healed: str = ""):
        self.tokenizer = tokenizer
        self.healed = healed  # before the cursor: decoded, but never handed out
        self.ids: list[int] = []
        self.text = ""

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        decoded = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if decoded.endswith("\ufffd"):
            return ""
        decoded = decoded[len(self.healed):]
        piece, self.text = decoded[len(self.text):], decoded
        return piece


@dataclass(frozen=True)
class CostModel:
    """Per-token cost in layer-units (the bytes of one decoder layer's weights read = 1), see docs/architecture.md
    'Cost model'. Bytes, not parameters: the weights' form (greencode.model.weights) changes what a pass reads.

    Full depth pays the whole LM head (V x d) once; an exit pays the exit head (the shortlist's K x d rows,
    or the whole head without a shortlist) once per decode at an exit point."""

    num_layers: int
    head_units: float  # one pass of the whole LM head (V x d), at full depth
    propagation_units: float  # K/V projections of one skipped layer
    exit_head_units: float  # one pass of the exit head (K x d)

    @classmethod
    def of(cls, adapter, exit_head_rows: int | None = None) -> "CostModel":
        layer = adapter.layer_bytes
        head = adapter.head_bytes / layer
        exit_head = head * exit_head_rows / adapter.vocab_size if exit_head_rows else head
        return cls(adapter.num_layers, head, adapter.kv_bytes / layer, exit_head)

    def units(self, layers_run: int, exit_head_passes: int) -> float:
        """A token that ran `layers_run` layers and decoded `exit_head_passes` times at exit points."""
        skipped = self.num_layers - layers_run
        full_head = self.head_units if layers_run == self.num_layers else 0.0
        return layers_run + skipped * self.propagation_units + exit_head_passes * self.exit_head_units + full_head

    @property
    def full_units(self) -> float:
        return self.units(self.num_layers, 0)


def measured_over_modelled(measured_speedup: float | None, modelled_speedup: float | None) -> float | None:
    """The share of the cost model's speed-up over full depth that the clock delivered (bench, eval): a row's
    measured decode speed-up over full depth divided by its modelled one (None where either is missing)."""
    if not measured_speedup or not modelled_speedup:
        return None
    return measured_speedup / modelled_speedup


def resolve_shortlist(loaded, size: int) -> torch.Tensor | None:
    """The exit-head token ids for [exits].shortlist = `size`: -1 the model's own shortlist (none: the whole
    vocabulary), 0 the whole vocabulary, K the first (most frequent) K of the model's shortlist."""
    shipped = loaded.info.get("shortlist")  # a tensor of ids, read from the model's files by load_model
    if size <= 0:
        return shipped if size == -1 else None
    if shipped is None:
        raise GreencodeError(f"[exits].shortlist = {size}, but {loaded.name} ships no shortlist; "
                             "use 0 (the whole vocabulary) or -1")
    if size > len(shipped):
        raise GreencodeError(f"[exits].shortlist = {size}, but {loaded.name}'s shortlist has {len(shipped)} "
                             f"tokens; use at most {len(shipped)}, 0 (the whole vocabulary) or -1")
    return shipped[:size]
