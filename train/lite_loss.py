"""The LITE loss (paper eq. 1) and the exit-agreement measurement, as plain torch functions.

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
def measure_exits(model, adapter, chunks: torch.Tensor, exit_points: list[int], batch_size: int = 4
                  ) -> dict[str, dict[int, float]]:
    """On held-out chunks (N, T): per exit point, the share of positions whose top-1 equals the final
    layer's top-1 ("agreement"), and the next-token cross-entropy at every exit point and at L."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    agree = {e: 0 for e in exit_points}
    loss_sum: dict[int, float] = {}
    counted = 0
    for start in range(0, len(chunks), batch_size):
        ids = chunks[start:start + batch_size].to(device)
        out = model(input_ids=ids, output_hidden_states=True)
        num_layers = len(out.hidden_states) - 1
        targets = ids[:, 1:].flatten()
        final = out.logits[:, :-1].float()
        final_top1 = final.argmax(-1)
        counted += final_top1.numel()
        loss_sum[num_layers] = loss_sum.get(num_layers, 0.0) + F.cross_entropy(
            final.flatten(0, 1), targets, reduction="sum").item()
        for e in exit_points:
            logits = adapter.logits(out.hidden_states[e][:, :-1]).float()
            agree[e] += (logits.argmax(-1) == final_top1).sum().item()
            loss_sum[e] = loss_sum.get(e, 0.0) + F.cross_entropy(logits.flatten(0, 1), targets,
                                                                 reduction="sum").item()
            del logits
    model.train(was_training)
    return {
        "agreement": {e: agree[e] / counted for e in exit_points},
        "loss": {layer: loss_sum[layer] / counted for layer in sorted(loss_sum)},
    }
