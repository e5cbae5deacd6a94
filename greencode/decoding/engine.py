"""EarlyExitEngine: token-by-token decoding with per-token exits.

For each new token the engine runs the decoder layers itself. At every exit point it asks the policy;
on exit it decodes the hidden state through the final norm and the shared LM head (only its shortlist
rows when the model has a shortlist: greencode.exits.shortlist), and fills the KV
cache of the layers the token skipped by state propagation (CALM): the exited state goes through each
skipped layer's input norm and K/V projections, so later tokens that run deeper find keys and values
for every position. Decoding stays O(1) per token; the prefix is never recomputed
(docs/architecture.md 'KV state propagation').
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from greencode.exits.agent import ExitAgent, agent_observation
from greencode.decoding.step import (CostModel, DecodeOptions, TextTracker, causal_mask_after, resolve_shortlist,  # noqa: F401
                              sample)
from greencode.energy import EnergyMeter
from greencode.errors import GreencodeError
from greencode.decoding.events import CompletionSummary, TokenEvent, eol_cut
from greencode.decoding.healing import HealingConstraint, heal_prompt, vocab_texts
from greencode.exits.knob import agent_defaults
from greencode.exits.oracle import Oracle, first_agreeing_exit
from greencode.exits.policies import ExitPolicy, Full, parse_policy
from greencode.decoding.prefix_cache import window_cut
from greencode.exits.shortlist import ShortlistHead, describe_exit_head


@dataclass(frozen=True)
class ExitTrace:
    """Recorded at full depth for RL trajectories: what the agent would see at each exit point."""

    observations: np.ndarray  # (n_exit_points, hidden) float32: agent_observation at each exit point
    exit_top1: list[int]  # the token decoding would emit at each exit point (shortlist top-1 with a shortlist)
    final_top1: int  # top-1 token of the final layer


@dataclass(frozen=True)
class TracedEvent(TokenEvent):
    trace: ExitTrace | None = None


@dataclass
class Prefilled:
    """A prompt run once through every layer, to be decoded by several policies (see EarlyExitEngine.prefill)."""

    ids: list[int]
    dropped: int
    max_new_tokens: int
    cache: object  # greencode.model.kv_cache.StaticKVCache holding every prompt position; copied per use
    logits: torch.Tensor  # the final layer's logits at the last prompt position
    states: dict  # exit layer -> hidden state of the last position (record mode only)
    measured: object  # greencode.energy.Measurement of the prefill
    reused: int = 0  # leading prompt tokens taken from the prefix cache instead of run again
    healed: str = ""  # text backed out of the prompt by token healing: the completion starts with it


@dataclass
class Completion:
    """One streamed completion: iterate for TokenEvents; `summary` once iteration ended.

    `policy` decides this completion's exits; `set_policy` / `set_threshold` (the live knob) take effect
    from its next token. Both are plain attribute writes, safe from another thread."""

    policy: ExitPolicy
    _make_policy: Callable[[ExitPolicy | str], ExitPolicy]
    _events: Iterator[TokenEvent] = field(default_factory=lambda: iter(()))
    _cancelled: threading.Event = field(default_factory=threading.Event)
    summary: CompletionSummary | None = None

    def __iter__(self) -> Iterator[TokenEvent]:
        return self._events

    def cancel(self) -> None:
        """Thread-safe: the stream ends before its next token."""
        self._cancelled.set()

    def set_policy(self, policy: ExitPolicy | str) -> None:
        self.policy = self._make_policy(policy)

    def set_threshold(self, value: float) -> None:
        self.policy = self.policy.with_threshold(value)


class EarlyExitEngine:
    """Decodes completions of one loaded model; the exit policy is given per completion (`stream(policy=…)`).
    Built from a config by greencode.runtime.engine_from_config."""

    def __init__(self, loaded, meter: EnergyMeter | None = None, exit_points: list[int] | None = None,
                 max_context_tokens: int = 512, agent_path: str | None = None, prefix_cache=None, token_healing: bool = False,
                 shortlist: int = -1):
        from greencode.exits.points import exit_points as paper_exit_points
        from greencode.exits.points import validate_exit_points

        self.loaded = loaded
        self.adapter = loaded.adapter
        self.num_layers = self.adapter.num_layers
        if exit_points is None:
            exit_points = loaded.info.get("exit_points") or paper_exit_points(self.num_layers)
        self.exit_points = validate_exit_points(exit_points, self.num_layers)
        self._exit_index = {layer: i for i, layer in enumerate(self.exit_points)}  # layer -> its exit point index
        self.meter = meter or EnergyMeter()
        self.max_context_tokens = max_context_tokens
        self.agent_path = agent_path
        # Off for the library (eval and trajectories cut at token boundaries); front ends pass [engine].token_healing.
        self.token_healing = token_healing  # text prompts only: a list of ids has no cursor inside a word
        self._vocab_texts: list[str] | None = None
        self._agent: ExitAgent | None = None
        ids = resolve_shortlist(loaded, shortlist)
        # The exit head: the shortlist's rows of the LM head, gathered once (None: the whole head).
        self.exit_head = (ShortlistHead(self.adapter.model.get_output_embeddings(), ids, self.adapter.vocab_size)
                          if ids is not None else None)
        self.cost = CostModel.of(self.adapter, self.exit_head.size if self.exit_head else None)
        self.device = next(loaded.model.parameters()).device
        # State propagation for these exit points: its stacked weights are packed here, once per engine.
        self._propagate = self.adapter.propagation(self.exit_points)
        self.prefix_cache = prefix_cache  # greencode.decoding.prefix_cache.PrefixCache: prompts share their prefill

    def describe_exit_head(self) -> str:
        """e.g. 'exit head: 8192 of 49152 tokens, 1.3 layer-units' (greencode info, the TUI panel)."""
        return describe_exit_head(self.exit_head.size if self.exit_head else None, self.adapter.vocab_size,
                                  self.cost.exit_head_units)

    def _exit_logits(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """Logits at exit point `layer` over the exit head's tokens (index them back with `_exit_token`)."""
        return self.adapter.exit_logits(layer, hidden, self.exit_head)[0, -1]

    def _exit_token(self, index: int) -> int:
        return self.exit_head.token(index) if self.exit_head is not None else index

    # -- policies ---------------------------------------------------------------------------------

    @property
    def agent_file(self) -> str | None:
        """The exit agent agent:T uses: the one given, else the one shipped with the model, else none."""
        return self.agent_path or self.loaded.info.get("agent_path") or None

    def _load_agent(self) -> ExitAgent:
        if self._agent is None:
            if not self.agent_file:
                raise GreencodeError("policy agent:T needs an agent file: pass --agent PATH or set [agent].path "
                                     "(train one with `greencode train agent`)")
            self._agent = ExitAgent.load(self.agent_file, self.adapter.hidden_size, self.exit_points)
        return self._agent

    def make_policy(self, policy: ExitPolicy | str) -> ExitPolicy:
        """A policy for this model from its string form (an ExitPolicy is returned as it is)."""
        if not isinstance(policy, str):
            return policy
        defaults = agent_defaults(self.loaded.info, self.agent_file)  # agent:T's calibrated C and R
        return parse_policy(policy, self.exit_points, self._load_agent, self.adapter, defaults)

    @property
    def _model_key(self) -> tuple:
        return (self.loaded.spec, id(self.loaded.model))

    # -- prompt -----------------------------------------------------------------------------------

    @property
    def position_window(self) -> int:
        """How many positions the model can attend over (prompt + generated tokens)."""
        config = self.loaded.model.config
        return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 2048)

    def max_new_tokens_limit(self) -> int:
        """The most tokens one completion can add: at least one prompt token must fit in the window."""
        return self.position_window - 1

    def context_limit(self, max_new_tokens: int) -> int:
        """How many prompt tokens fit beside `max_new_tokens` ([engine].max_context_tokens and the window)."""
        if max_new_tokens > self.max_new_tokens_limit():
            raise GreencodeError(f"max_new_tokens {max_new_tokens} does not fit the model's position window of "
                                 f"{self.position_window} tokens; ask for at most {self.max_new_tokens_limit()}")
        return max(1, min(self.max_context_tokens, self.position_window - max_new_tokens))

    def encode(self, prompt: str | list[int], max_new_tokens: int) -> tuple[list[int], int]:
        """Token ids of the prompt, keeping the tokens nearest the cursor; (ids, number dropped)."""
        ids = list(prompt) if isinstance(prompt, list) else self.loaded.tokenizer(
            prompt, add_special_tokens=False)["input_ids"]
        if not ids:
            raise GreencodeError("the prompt is empty: give some code before the cursor")
        limit = self.context_limit(max_new_tokens)
        # With a prefix cache the window's start moves in steps, so it stays put while the user types.
        dropped = window_cut(len(ids), limit) if self.prefix_cache is not None else max(0, len(ids) - limit)
        return ids[dropped:], dropped

    def heal(self, ids: list[int]):
        """Token healing of a prompt's ids (greencode/decoding/healing.py); the vocabulary is decoded on first use."""
        if self._vocab_texts is None:
            self._vocab_texts = vocab_texts(self.loaded.tokenizer)
        return heal_prompt(self.loaded.tokenizer, ids, self._vocab_texts)

    def explain(self, prompt: str | list[int], token_ids: list[int], exit_layers: list[int], index: int,
                max_new_tokens: int):
        """Token `index` of a completion of `prompt`, replayed: candidates at every exit point (greencode.decoding.explain)."""
        from greencode.decoding.explain import explain_token

        return explain_token(self, prompt, token_ids, exit_layers, index, max_new_tokens)

    # -- decoding ---------------------------------------------------------------------------------

    def stream(self, prompt: str | list[int], policy: ExitPolicy | str = "full", max_new_tokens: int = 15,
               stop: list[str] | None = None, stop_at_eol: bool = False, temperature: float = 0.0, top_p: float = 1.0,
               record: bool = False, seed: int | None = None, prefilled: Prefilled | None = None,
               record_scores: bool = True, stop_rule=None) -> Completion:
        """Stream a completion of `prompt` (text or token ids) under `policy` (greencode.decoding.step.DecodeOptions
        says what the other options do). With `prefilled` (from `prefill` on the same prompt) the prompt is not
        run again: its cache is copied, and its first token and figures reused. A text prompt is token-healed
        when `token_healing` is on: the events carry only what follows the cursor."""
        options = DecodeOptions(max_new_tokens, tuple(stop or ()), stop_at_eol, temperature, top_p, record, seed,
                                record_scores, stop_rule)
        shared = prefilled is not None  # a caller's prefill may serve other streams: decode into a copy
        if prefilled is None:
            prefilled = self.prefill(prompt, max_new_tokens, record)
        elif prefilled.max_new_tokens < max_new_tokens or (record and not prefilled.states):
            raise GreencodeError("a prefilled prompt serves only up to its max_new_tokens (and record mode "
                                 "only when prefilled with record=True)")
        completion = Completion(self.make_policy(policy), self.make_policy)
        completion._events = self._run(completion, prefilled, shared, options)
        return completion

    def complete(self, prompt: str | list[int], policy: ExitPolicy | str = "full", **options) -> CompletionSummary:
        completion = self.stream(prompt, policy, **options)
        events = list(completion)
        return replace(completion.summary, events=events)

    @torch.inference_mode()
    def prefill(self, prompt: str | list[int], max_new_tokens: int = 15, record: bool = False) -> Prefilled:
        """Run the prompt through every layer once (the cost every policy shares on a prompt)."""
        from greencode.model.kv_cache import StaticKVCache

        ids, dropped = self.encode(prompt, max_new_tokens)
        healed = ""
        if self.token_healing and isinstance(prompt, str):
            healing = self.heal(ids)
            ids, healed = healing.ids, healing.removed
        adapter = self.adapter
        cache = StaticKVCache(self.num_layers, len(ids) + max_new_tokens)
        self.meter.begin_window("token")
        # A stored prompt sharing our first tokens fills the cache with them; only the rest runs here.
        reused = self.prefix_cache.lookup(self._model_key, ids, cache) if self.prefix_cache is not None else 0
        input_ids = torch.tensor([ids[reused:]], device=self.device)
        positions = torch.arange(reused, len(ids), device=self.device)[None]
        hidden = adapter.embed(input_ids, positions)
        context = adapter.layer_context(hidden, positions)
        if reused and len(ids) - reused > 1:
            context["attention_mask"] = causal_mask_after(reused, len(ids) - reused, hidden.dtype, self.device)
        states = {}
        for index in range(self.num_layers):
            hidden = adapter.run_layer(index, hidden, context, cache)
            if record and index + 1 in self._exit_index:
                states[index + 1] = hidden[:, -1:]
        logits = adapter.logits(hidden[:, -1:])[0, -1]
        if self.prefix_cache is not None:
            self.prefix_cache.store(self._model_key, ids, cache)  # a copy: decoding never writes into it
        measured = self.meter.end_window("token")
        return Prefilled(ids, dropped, max_new_tokens, cache, logits, states, measured, reused, healed)

    @torch.inference_mode()
    def _run(self, completion: Completion, prefilled: Prefilled, shared: bool, options: DecodeOptions):
        """The decoding loop, top-down: emit, stop checks, the layers with their exits, KV fill, sample, cost."""
        import copy

        adapter, L, cost = self.adapter, self.num_layers, self.cost
        generator = (torch.Generator().manual_seed(options.seed)
                     if options.seed is not None and options.temperature > 0 else None)
        eos = self.loaded.tokenizer.eos_token_id
        text = TextTracker(self.loaded.tokenizer, prefilled.healed)
        healing = HealingConstraint(prefilled.healed, self._vocab_texts or [])
        events: list[TokenEvent] = []
        stop_reason, started = "length", time.perf_counter()

        # The first token comes out of the prefill (every layer); decoding appends to a copy of its cache.
        ids, dropped, measured = prefilled.ids, prefilled.dropped, prefilled.measured
        cache = copy.deepcopy(prefilled.cache) if shared else prefilled.cache
        trace = self._trace(prefilled.states, prefilled.logits) if options.record else None
        token = sample(healing.apply(prefilled.logits), options.temperature, options.top_p, generator)
        healing.advance(token)
        prefill_seconds = measured.seconds
        exit_layer, layers_run, score, scores, policy_name = L, L, None, [], "prefill"
        units = modelled = cost.full_units  # layer-units run, and what the token is modelled to cost
        position = len(ids)

        try:
            for index in range(options.max_new_tokens):
                # Emit the token just chosen, with its joules and what it would have cost at full depth.
                event = TokenEvent(index, token, text.add(token), exit_layer, layers_run, L, score, measured.seconds,
                                   measured.joules, measured.source, measured.joules * cost.full_units / units,
                                   policy_name, exit_scores=tuple(scores), modelled_units=modelled)
                events.append(event if trace is None else TracedEvent(**event.__dict__, trace=trace))
                yield events[-1]

                # Stop checks: EOS, a stop sequence or rule, the end of the line, the length, a cancel.
                stop_reason = options.stop_reason(text.text, token, eos) or "length"
                if stop_reason != "length" or index == options.max_new_tokens - 1:
                    break
                if completion._cancelled.is_set():
                    stop_reason = "cancelled"
                    break

                # Embed the token; this completion's policy (the knob may have changed it) decides its exit.
                self.meter.begin_window("token")
                policy = completion.policy if not options.record else None
                oracle = isinstance(policy, Oracle)  # runs full depth, then judges every exit point
                keep_states = options.record or oracle
                hidden = adapter.embed(torch.tensor([[token]], device=self.device),
                                       torch.tensor([[position]], device=self.device))
                context = adapter.step_context(hidden, position)
                exit_layer, score, exit_passes, logits, states = L, None, 0, None, {}
                scores = [] if options.record_scores else scores  # off: the empty list stays empty
                policy_name = policy.name if policy is not None else "full (recorded)"
                # Derailment: while token healing constrains the text, and for the first tokens of agent:T:C:R,
                # a wrong token costs the most: healing runs full depth, the agent's ramp is stricter.
                check_exits = policy is not None and not isinstance(policy, (Full, Oracle)) and not healing
                if check_exits and hasattr(policy, "for_token"):
                    policy = policy.for_token(index + 1)
                confirms = check_exits and getattr(policy, "confirms", False)

                # Run the layers; at each exit point ask the policy, and leave at its first yes.
                for layer_index in range(L):
                    hidden = adapter.run_layer(layer_index, hidden, context, cache)
                    layer = layer_index + 1
                    exit_index = self._exit_index.get(layer)
                    if keep_states and exit_index is not None:
                        states[layer] = hidden
                    if not check_exits or exit_index is None:
                        continue
                    exit_logits = self._exit_logits(layer, hidden) if policy.needs_logits else None
                    exit_passes += policy.needs_logits
                    leave, score = policy.decide(layer, exit_index, hidden, exit_logits)
                    if leave and confirms:  # confirm-at-exit: the exit head is decoded anyway to pick the token
                        if exit_logits is None:
                            exit_logits, exit_passes = self._exit_logits(layer, hidden), exit_passes + 1
                        leave = policy.confirm_exit(exit_logits)
                    if options.record_scores:  # the score is computed anyway: keeping it is one append
                        scores.append(score)
                    if leave:
                        exit_layer, logits = layer, exit_logits
                        break

                # KV fill: state propagation into the layers the token skipped, all in one call
                # (docs/architecture.md 'KV state propagation').
                if exit_layer < L:
                    self._propagate(exit_layer, hidden, context, cache)

                # Sample the next token where the token left.
                token, logits, passes = self._sample_at(exit_layer, hidden, logits, healing, options, generator)
                exit_passes += passes
                healing.advance(token)
                trace = self._trace(states, logits) if options.record else None

                # Its cost in layer-units; the oracle's is modelled as if it had left at its first agreeing exit.
                layers_run, units = exit_layer, cost.units(exit_layer, exit_passes)
                modelled = units
                if oracle:
                    exit_top1 = self._exit_top1(states)
                    units = cost.units(L, exit_passes + len(exit_top1))
                    exit_layer = first_agreeing_exit(exit_top1, token, self.exit_points, L)
                    modelled = cost.units(exit_layer, int(exit_layer < L))
                position += 1
                measured = self.meter.end_window("token")
        finally:
            summary = self._summary(text, events, len(ids), dropped, prefill_seconds,
                                    time.perf_counter() - started + prefill_seconds, options, stop_reason)
            completion.summary = replace(summary, reused_prompt_tokens=prefilled.reused)

    def _sample_at(self, exit_layer: int, hidden: torch.Tensor, logits: torch.Tensor | None, healing,
                   options: DecodeOptions, generator) -> tuple[int, torch.Tensor, int]:
        """(token, the logits it came from, exit-head passes paid here) for a token that left at `exit_layer`;
        `logits` are the exit head's when the policy decoded them already."""
        if exit_layer == self.num_layers:  # full depth: the whole vocabulary, exactly as the base model
            logits = self.adapter.logits(hidden)[0, -1]
            return sample(healing.apply(logits), options.temperature, options.top_p, generator), logits, 0
        if healing:  # the text still to heal may need a token off the shortlist: the whole head, once
            logits = self.adapter.exit_logits(exit_layer, hidden)[0, -1]
            return sample(healing.apply(logits), options.temperature, options.top_p, generator), logits, 1
        passes = 0
        if logits is None:  # an exit decodes over the exit head's tokens (the shortlist), mapped back to ids
            logits, passes = self._exit_logits(exit_layer, hidden), 1
        return self._exit_token(sample(logits, options.temperature, options.top_p, generator)), logits, passes

    def _exit_top1(self, states: dict) -> list[int]:
        """The token decoding would emit at each exit point (the exit head's top-1, as a token id)."""
        return [self._exit_token(int(self._exit_logits(p, states[p]).argmax())) for p in self.exit_points]

    def _trace(self, states: dict, final_logits: torch.Tensor) -> ExitTrace:
        observations = torch.stack([agent_observation(self.adapter, states[p]) for p in self.exit_points])
        return ExitTrace(observations.cpu().numpy(), self._exit_top1(states), int(final_logits.argmax()))

    def _summary(self, text: TextTracker, events: list[TokenEvent], prompt_tokens: int, dropped: int,
                 prefill_seconds: float, total_seconds: float, options: DecodeOptions,
                 stop_reason: str) -> CompletionSummary:
        completion_text = text.text
        stop_rule = options.stop_rule
        for s in options.stop:
            if s in completion_text:
                completion_text = completion_text[:completion_text.index(s)]
        if stop_reason == "eol":
            completion_text = completion_text[:eol_cut(completion_text)]
        cut = stop_rule.cut(completion_text, finished=True) if stop_rule is not None else None
        if cut is not None:
            completion_text = completion_text[:cut]
            stop_reason = "stop" if stop_reason == "length" else stop_reason
        return CompletionSummary.of(
            events, self.num_layers, text=completion_text, prompt_tokens=prompt_tokens, dropped_prompt_tokens=dropped,
            seconds=max(0.0, total_seconds - prefill_seconds), prefill_seconds=prefill_seconds,
            energy_source=self.meter.source, stop_reason=stop_reason)
