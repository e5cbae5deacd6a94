"""The LITE losses (paper eq. 1 on labels; self-distillation to a frozen teacher) and the
exit-agreement measurement, as plain torch functions.

A causal LM run with output_hidden_states=True gives L+1 states: [0] the embeddings, [e] the raw
output of layer e for e < L, and [L] the final layer's output *after* the final norm (what the head
reads). So an exit point e is decoded with adapter.logits (final norm + shared head) and the final
layer with the model's own logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def sample_positions(length: int, fraction: float, generator: torch.Generator | None = None,
                     device=None) -> torch.Tensor | None:
    """Sorted positions (of `length` predicting positions) whose exit losses count; None = all of them."""
    if fraction >= 1.0:
        return None
    count = max(1, math.ceil(fraction * length))
    return torch.randperm(length, generator=generator, device=device)[:count].sort().values


def head_logits(adapter, hidden: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Final norm + the shared LM head, over the whole vocabulary or only `token_ids` (a shortlist)."""
    if token_ids is None:
        return adapter.logits(hidden)
    head = adapter.model.get_output_embeddings()
    bias = None if getattr(head, "bias", None) is None else head.bias[token_ids]
    return F.linear(adapter.final_norm(hidden), head.weight[token_ids], bias)  # (..., K)


def _kl(teacher_log_probs: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of KL(teacher || student); both (..., V)."""
    student_log_probs = F.log_softmax(student_logits.float(), -1)
    return (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(-1).mean()


def distill_loss(adapter, hidden_states, final_logits: torch.Tensor, teacher_logits: torch.Tensor,
                 weights: dict[int, float], keep_final: float, positions: torch.Tensor | None = None,
                 shortlist: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Self-distillation: every exit learns the frozen teacher's final-layer distribution.

    teacher_logits (B, T, V): the teacher's final layer at every position (no next-token shift: the
    targets are distributions, so every position counts). Exit point e: KL(teacher || exit e), over the
    shortlist when one is given (both distributions renormalised over it, as decoding will see them),
    at `positions` only. The final layer: KL(teacher || own final layer) over the whole vocabulary.
    total = sum_l w_l KL_l / sum_l w_l + keep_final * KL_L. Returns it and the KL per layer.
    """
    num_layers = len(hidden_states) - 1
    losses = {num_layers: _kl(F.log_softmax(teacher_logits.float(), -1), final_logits)}
    picked = teacher_logits if positions is None else teacher_logits[:, positions]
    if shortlist is not None:
        picked = picked[..., shortlist]
    teacher_at_exits = F.log_softmax(picked.float(), -1)  # (B, P, K)
    for layer in weights:
        if layer == num_layers:
            continue
        hidden = hidden_states[layer] if positions is None else hidden_states[layer][:, positions]
        losses[layer] = _kl(teacher_at_exits, head_logits(adapter, hidden, shortlist))
    total = sum(weights[layer] * losses[layer] for layer in weights) / sum(weights.values())
    return total + keep_final * losses[num_layers], losses


def lite_loss(adapter, hidden_states, final_logits: torch.Tensor, labels: torch.Tensor,
              weights: dict[int, float], positions: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Weighted mean of the next-token cross-entropies at every exit point and the final layer (eq. 1).

    weights: {layer: w} over the exit points and L (= len(hidden_states) - 1), as from lite_weights.
    positions: predicting positions (0..T-2) where the exit points' losses are taken; the final layer
    always uses every position. Returns the aggregated loss and the loss per layer.
    """
    num_layers = len(hidden_states) - 1
    targets = labels[:, 1:]  # (B, T-1): position t predicts token t+1
    losses: dict[int, torch.Tensor] = {}
    for layer in weights:
        if layer == num_layers:
            logits, wanted = final_logits[:, :-1], targets
        else:
            hidden = hidden_states[layer][:, :-1]  # (B, T-1, d)
            wanted = targets
            if positions is not None:
                hidden, wanted = hidden[:, positions], targets[:, positions]
            logits = adapter.logits(hidden)  # (B, P, V): final norm + the shared head
        losses[layer] = F.cross_entropy(logits.flatten(0, 1).float(), wanted.flatten(), ignore_index=IGNORE_INDEX)
    total = sum(weights[layer] * losses[layer] for layer in weights) / sum(weights.values())
    return total, losses


@torch.no_grad()
def measure_exits(model, adapter, chunks: torch.Tensor, exit_points: list[int], batch_size: int = 4,
                  reference=None, shortlist: torch.Tensor | None = None, progress=None) -> dict:
    """On held-out chunks (N, T): per exit point, the share of positions whose top-1 equals the
    reference's top-1 ("agreement"), and the next-token cross-entropy at every exit point and at L.

    reference: ids (B, T) -> final-layer logits (B, T, V) of another model (the distillation teacher);
    None = the model's own final layer. With a reference, "final_agreement" is the share of positions
    where the model's own final layer agrees with it. shortlist: exits take their top-1 over it.
    progress(tokens done, tokens in all) is called after each batch.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    agree = {e: 0 for e in exit_points}
    final_agree = 0
    loss_sum: dict[int, float] = {}
    counted = 0
    for start in range(0, len(chunks), batch_size):
        ids = chunks[start:start + batch_size].to(device)
        out = model(input_ids=ids, output_hidden_states=True)
        num_layers = len(out.hidden_states) - 1
        targets = ids[:, 1:].flatten()
        final = out.logits[:, :-1].float()
        wanted_top1 = final.argmax(-1) if reference is None else reference(ids)[:, :-1].argmax(-1)
        final_agree += (final.argmax(-1) == wanted_top1).sum().item()
        counted += wanted_top1.numel()
        loss_sum[num_layers] = loss_sum.get(num_layers, 0.0) + F.cross_entropy(
            final.flatten(0, 1), targets, reduction="sum").item()
        for e in exit_points:
            hidden = out.hidden_states[e][:, :-1]
            logits = adapter.logits(hidden).float()
            top1 = logits.argmax(-1) if shortlist is None else shortlist.to(device)[
                head_logits(adapter, hidden, shortlist.to(device)).argmax(-1)]
            agree[e] += (top1 == wanted_top1).sum().item()
            loss_sum[e] = loss_sum.get(e, 0.0) + F.cross_entropy(logits.flatten(0, 1), targets,
                                                                 reduction="sum").item()
            del logits
        if progress:
            progress(min(start + batch_size, len(chunks)) * chunks.shape[1], chunks.numel())
    model.train(was_training)
    return {
        "agreement": {e: agree[e] / counted for e in exit_points},
        "loss": {layer: loss_sum[layer] / counted for layer in sorted(loss_sum)},
        "final_agreement": final_agree / counted,
        "tokens": counted,
    }


def measure_languages(model, adapter, validation: dict[str, torch.Tensor], exit_points: list[int],
                      reference=None, shortlist: torch.Tensor | None = None, echo=None,
                      every_s: float = 30.0) -> dict:
    """measure_exits on each language's held-out chunks, and their token-weighted means; with `echo`, a
    progress line at most every `every_s` seconds (on a CPU this takes minutes)."""
    import time

    last = [time.perf_counter()]

    def progress_of(language):
        def report(done, total):
            if echo and (time.perf_counter() - last[0] >= every_s or done == total):
                last[0] = time.perf_counter()
                echo(f"measured {language}: {done}/{total} tokens")
        return report

    per = {language: measure_exits(model, adapter, chunks, exit_points, reference=reference, shortlist=shortlist,
                                   progress=progress_of(language))
           for language, chunks in validation.items()}
    total = sum(m["tokens"] for m in per.values())

    def mean(values) -> float:
        return sum(value * m["tokens"] for value, m in zip(values, per.values())) / total

    first = next(iter(per.values()))
    return {"agreement": {e: mean(m["agreement"][e] for m in per.values()) for e in exit_points},
            "loss": {layer: mean(m["loss"][layer] for m in per.values()) for layer in first["loss"]},
            "final_agreement": mean(m["final_agreement"] for m in per.values()), "tokens": total,
            "by_language": per}
