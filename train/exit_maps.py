"""Train exit maps (greencode/exit_maps.py) on a frozen model: the cheap CPU route to early exits.

1. Run the frozen model over packed chunks of the corpus and keep, per token, the hidden state at every
   exit point and at the final layer.
2. Fit each exit's affine map by ridge least squares on RMS-normalised states:
   n(h_L) ~ W_e n(h_e) + b_e (closed form, seconds; the final norm ignores scale anyway).
3. Optionally refine with a few steps of distillation: KL(final layer || exit) through the shared head.
4. Measure agreement on held-out tokens: how often the exit's top-1 equals the final layer's, before
   (identity map) and after.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from greencode.exit_maps import ExitMaps


@dataclass
class States:
    exits: dict[int, torch.Tensor]  # layer -> (N, d) hidden states at that exit point
    final: torch.Tensor  # (N, d) hidden state after the last layer (before the final norm)

    @property
    def count(self) -> int:
        return self.final.shape[0]


def chunks_of(files, tokenizer, seq_len: int, max_tokens: int) -> list[list[int]]:
    """Consecutive seq_len windows of the files' tokens, up to max_tokens in all."""
    out: list[list[int]] = []
    for file in files:
        ids = tokenizer(file.text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids) - seq_len + 1, seq_len):
            out.append(ids[start:start + seq_len])
            if len(out) * seq_len >= max_tokens:
                return out
    return out


@torch.inference_mode()
def collect_states(loaded, chunks: list[list[int]], exit_points: list[int], progress=None) -> States:
    adapter = loaded.adapter
    exits: dict[int, list[torch.Tensor]] = {p: [] for p in exit_points}
    finals: list[torch.Tensor] = []
    for index, chunk in enumerate(chunks):
        ids = torch.tensor([chunk])
        positions = torch.arange(len(chunk))[None]
        hidden = adapter.embed(ids, positions)
        context = adapter.layer_context(hidden, positions)
        for layer_index in range(adapter.num_layers):
            hidden = adapter.run_layer(layer_index, hidden, context, None)
            if layer_index + 1 in exits:
                exits[layer_index + 1].append(hidden[0].clone())
        finals.append(hidden[0].clone())
        if progress:
            progress(index + 1, len(chunks))
    return States({p: torch.cat(v) for p, v in exits.items()}, torch.cat(finals))


def fit_least_squares(maps: ExitMaps, states: States, ridge: float = 1e-2) -> None:
    """Closed-form ridge regression of the final state on each exit's state, in float64."""
    target = maps.prepare(states.final).double()  # the final norm ignores scale, so match directions
    for layer in maps.exit_points:
        x = maps.prepare(states.exits[layer]).double()
        x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)  # bias column
        gram = x.T @ x
        gram += ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype)
        solution = torch.linalg.solve(gram, x.T @ target)  # (d+1, d)
        linear = maps.maps[str(layer)]
        with torch.no_grad():
            linear.weight.copy_(solution[:-1].T.float())
            linear.bias.copy_(solution[-1].float())


def distill(maps: ExitMaps, loaded, states: States, steps: int, batch: int = 256, lr: float = 1e-4,
            seed: int = 0, progress=None) -> list[float]:
    """A few steps of KL(final || exit) through the frozen norm + head; returns the mean loss per step."""
    adapter = loaded.adapter
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(maps.parameters(), lr=lr)
    maps.train().requires_grad_(True)
    losses = []
    for step in range(steps):
        rows = torch.randint(0, states.count, (batch,), generator=generator)
        with torch.no_grad():
            target = torch.log_softmax(adapter.logits(states.final[rows]).float(), dim=-1)
        optimiser.zero_grad()
        total = 0.0
        for layer in maps.exit_points:  # one exit at a time keeps only one (batch, vocab) graph alive
            logp = torch.log_softmax(adapter.logits(maps(layer, states.exits[layer][rows])).float(), dim=-1)
            loss = torch.nn.functional.kl_div(logp, target, log_target=True, reduction="batchmean")
            (loss / len(maps.exit_points)).backward()
            total += loss.item()
        optimiser.step()
        losses.append(total / len(maps.exit_points))
        if progress:
            progress(step + 1, steps, losses[-1])
    maps.eval().requires_grad_(False)
    return losses


@torch.inference_mode()
def agreement(loaded, states: States, maps: ExitMaps | None, batch: int = 512) -> dict[int, float]:
    """Per exit point: the share of tokens whose top-1 at the exit equals the final layer's top-1."""
    adapter = loaded.adapter
    hits = {layer: 0 for layer in states.exits}
    for start in range(0, states.count, batch):
        final = adapter.logits(states.final[start:start + batch]).argmax(-1)
        for layer, hidden in states.exits.items():
            h = hidden[start:start + batch]
            if maps is not None:
                h = maps(layer, h)
            hits[layer] += int((adapter.logits(h).argmax(-1) == final).sum())
    return {layer: round(count / states.count, 4) for layer, count in hits.items()}


def train_exit_maps(loaded, train_files, validation_files, exit_points: list[int], train_tokens: int,
                    validation_tokens: int, distill_steps: int, seq_len: int = 256, log=print) -> tuple[ExitMaps, dict]:
    """The whole recipe; returns the maps and a report (agreement before/after, tokens, seconds)."""
    started = time.perf_counter()
    train_chunks = chunks_of(train_files, loaded.tokenizer, seq_len, train_tokens)
    validation_chunks = chunks_of(validation_files, loaded.tokenizer, seq_len, validation_tokens)
    log(f"collecting hidden states: {len(train_chunks)} train and {len(validation_chunks)} validation "
        f"chunks of {seq_len} tokens")
    train_states = collect_states(loaded, train_chunks, exit_points)
    validation_states = collect_states(loaded, validation_chunks, exit_points)
    maps = ExitMaps(loaded.hidden_size, exit_points, normalize=True)
    before = agreement(loaded, validation_states, None)
    log(f"agreement before: {before}")
    fit_least_squares(maps, train_states)
    after_lstsq = agreement(loaded, validation_states, maps)
    log(f"agreement after least squares: {after_lstsq}")
    losses = distill(maps, loaded, train_states, distill_steps,
                     progress=lambda i, n, loss: log(f"distill step {i}/{n}: KL {loss:.3f}")) if distill_steps else []
    after = agreement(loaded, validation_states, maps) if distill_steps else after_lstsq
    if distill_steps:
        log(f"agreement after distillation: {after}")
    report = {
        "method": "exit maps: per-exit affine map before the shared final norm + LM head; ridge least squares "
                  f"of the final state on the exit state{', then KL distillation' if distill_steps else ''}",
        "train_tokens": train_states.count, "validation_tokens": validation_states.count,
        "distill_steps": distill_steps, "distill_final_kl": round(losses[-1], 4) if losses else None,
        "agreement_before": before, "agreement_after_least_squares": after_lstsq, "agreement_after": after,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return maps, report
