"""Why one token left where it did: the candidates at every exit point, and what full depth says.

The stream records only what the policy computed anyway (TokenEvent.exit_scores). The rest is computed
on demand for one token: its completion is replayed from the same prompt, each earlier token fed in and
run to the layer it exited at (with the same state propagation), so the chosen token meets exactly the
KV cache it met while streaming. That token then runs every layer, and each exit point is decoded (under
token healing's constraint where the stream chose it under that constraint).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from greencode.decoding.healing import HealingConstraint
from greencode.errors import GreencodeError
from greencode.exits.oracle import first_agreeing_exit

TOP_K = 3


@dataclass(frozen=True)
class Candidate:
    token_id: int
    text: str
    probability: float


@dataclass(frozen=True)
class ExitCandidates:
    layer: int  # an exit point, or L for full depth
    candidates: list[Candidate]  # the top-k of decoding here, most likely first


@dataclass(frozen=True)
class TokenExplanation:
    index: int  # the token's place in its completion
    token_id: int  # what the stream emitted
    exit_layer: int  # where it left
    exits: list[ExitCandidates]  # every exit point, shallow to deep, then full depth (layer L)
    full_top1: Candidate  # what full depth gives, on this token's own cache
    oracle_layer: int  # the first exit point whose top-1 equals full depth's (L: none)

    @property
    def equals_full(self) -> bool:
        return self.token_id == self.full_top1.token_id


def _candidates(probabilities: torch.Tensor, tokenizer, top_k: int, token_of=int) -> list[Candidate]:
    values, ids = probabilities.topk(min(top_k, probabilities.shape[-1]))
    tokens = [token_of(int(i)) for i in ids]
    return [Candidate(t, tokenizer.decode([t]), float(v)) for v, t in zip(values, tokens)]


@torch.inference_mode()
def explain_token(engine, prompt: str | list[int], token_ids: Sequence[int], exit_layers: Sequence[int],
                  index: int, max_new_tokens: int, top_k: int = TOP_K) -> TokenExplanation:
    """Replay the completion (`token_ids`, which left at `exit_layers`) of `prompt` up to token `index`,
    then decode that token at every exit point and at full depth. `max_new_tokens` is the completion's own
    (it decides how much of a long prompt was kept)."""
    if not 0 <= index < len(token_ids) or len(token_ids) != len(exit_layers):
        raise GreencodeError(f"no token {index} in a completion of {len(token_ids)} tokens")
    adapter, L, tokenizer = engine.adapter, engine.num_layers, engine.loaded.tokenizer
    prefilled = engine.prefill(prompt, max_new_tokens, record=True)
    cache, states, hidden = prefilled.cache, prefilled.states, None
    position = len(prefilled.ids)
    for step in range(1, index + 1):  # the first token came out of the prefill itself
        deepest = L if step == index else exit_layers[step]
        step_ids = torch.tensor([[token_ids[step - 1]]], device=engine.device)
        step_pos = torch.tensor([[position]], device=engine.device)
        hidden = adapter.embed(step_ids, step_pos)
        context = adapter.layer_context(hidden, step_pos)
        states = {}
        for layer_index in range(deepest):
            hidden = adapter.run_layer(layer_index, hidden, context, cache)
            if layer_index + 1 in engine.exit_points:
                states[layer_index + 1] = hidden
        for skipped in range(deepest, L):  # state propagation, as the stream did
            cache.update(*adapter.kv(skipped, hidden, context), skipped)
        position += 1
    final_logits = prefilled.logits if index == 0 else adapter.logits(hidden)[0, -1]

    # A token chosen under token healing's constraint is compared with what each depth chooses under it too.
    healing = HealingConstraint(prefilled.healed, engine._vocab_texts or [])
    for token in token_ids[:index]:
        healing.advance(int(token))
    exits = []
    for layer in engine.exit_points:
        if healing:  # decoded as the stream decodes a constrained token: the whole head, constrained
            probabilities = torch.softmax(healing.apply(adapter.exit_logits(layer, states[layer])[0, -1]).float(), -1)
            exits.append(ExitCandidates(layer, _candidates(probabilities, tokenizer, top_k)))
            continue
        # decoded as an exit decodes: over the exit head (the shortlist, when the model has one)
        probabilities = torch.softmax(engine._exit_logits(layer, states[layer]).float(), dim=-1)
        exits.append(ExitCandidates(layer, _candidates(probabilities, tokenizer, top_k, engine._exit_token)))
    full = _candidates(torch.softmax(healing.apply(final_logits).float(), dim=-1), tokenizer, top_k)
    exits.append(ExitCandidates(L, full))
    oracle = first_agreeing_exit([e.candidates[0].token_id for e in exits[:-1]], full[0].token_id,
                                 engine.exit_points, L)
    return TokenExplanation(index, int(token_ids[index]), int(exit_layers[index]), exits, full[0], oracle)
