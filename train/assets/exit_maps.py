"""Train exit maps (greencode/exits/maps.py) on a frozen model, from cached hidden states (train/assets/calibration.py).

1. Least squares: each exit's affine map by ridge regression on RMS-normalised states,
   n(h_L) ~ W_e n(h_e) + b_e (closed form; the final norm ignores scale anyway).
2. KL: from there, minimise KL(final layer || exit) where the exit is decoded as decoding will decode it:
   final norm, then the shortlist's rows of the shared head. The target is the final layer's distribution
   over the whole vocabulary (its top-k, cached); mass outside the shortlist can never be matched.
3. Optionally a low-rank residual MLP per exit, trained the same way on top of the KL maps.
4. Agreement on held-out tokens: the share whose top-1 at the exit (full head, or the shortlist head)
   equals the final layer's full-vocabulary top-1. A final top-1 outside the shortlist is a disagreement.
"""

from __future__ import annotations

import time

import torch

from greencode.exits.maps import ExitMaps
from train.assets.calibration import CalibrationStates, progress_line

AGREEMENT_TOKENS_SHORTLIST = 2048  # held-out tokens per language for the shortlist head's agreement
AGREEMENT_TOKENS_FULL_HEAD = 512  # and for the whole head's (6x the cost per token)


def fit_least_squares(maps: ExitMaps, states: CalibrationStates, ridge: float = 1e-2, block: int = 8192,
                      log=None) -> None:
    """Closed-form ridge regression of the final state on each exit's state, block by block (solved in float64)."""
    d = maps.hidden_size
    started = time.perf_counter()
    for number, layer in enumerate(maps.exit_points):
        if log is not None:
            log(progress_line("least squares", number, len(maps.exit_points), started, unit="exits"))
        gram = torch.zeros(d + 1, d + 1, dtype=torch.float64)
        cross = torch.zeros(d + 1, d, dtype=torch.float64)
        for start in range(0, states.count, block):
            x = maps.prepare(states.exits[layer][start:start + block].float())
            x = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1)  # bias column
            target = maps.prepare(states.final[start:start + block].float())
            gram += (x.T @ x).double()  # float32 within a block, float64 across blocks
            cross += (x.T @ target).double()
        gram += ridge * gram.diagonal().mean() * torch.eye(d + 1, dtype=gram.dtype)
        solution = torch.linalg.solve(gram, cross)  # (d+1, d)
        linear = maps.maps[str(layer)]
        with torch.no_grad():
            linear.weight.copy_(solution[:-1].T.float())
            linear.bias.copy_(solution[-1].float())


class ExitHead:
    """Decode an exit as the engine does: final norm, then the head's rows for `ids` (None = every row)."""

    def __init__(self, adapter, ids: torch.Tensor | None = None):
        self.adapter = adapter
        weight = adapter.model.get_output_embeddings().weight.detach()
        self.ids = ids
        self.weight = weight if ids is None else weight.index_select(0, ids).contiguous()  # (K, d)
        self.weight_bf16 = self.weight.bfloat16()  # made here, never under inference mode (KL backprops through it)
        vocab = weight.shape[0]
        self.index_of = torch.full((vocab,), -1, dtype=torch.int64)  # token id -> row, -1 outside
        self.index_of[ids if ids is not None else torch.arange(vocab)] = torch.arange(self.weight.shape[0])

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(self.adapter.final_norm(hidden), self.weight)  # (..., K)

    def training_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The same logits with the head's matmul in bfloat16: ~4x faster on a CPU with AVX-512 bf16, and
        precise enough for a gradient (agreement is always measured with logits())."""
        normed = self.adapter.final_norm(hidden)
        return torch.nn.functional.linear(normed.bfloat16(), self.weight_bf16).float()

    def top1(self, hidden: torch.Tensor, candidates: int = 8) -> torch.Tensor:
        """Token ids (full vocabulary) of the top-1 row, as float32 decoding picks it: bfloat16 logits
        shortlist `candidates` rows, which are then scored exactly in float32 (4x cheaper than all rows
        in float32; bfloat16's error is far below the gap to the 8th-best logit)."""
        normed = self.adapter.final_norm(hidden.float())
        rows = self.weight_bf16
        approx = torch.nn.functional.linear(normed.bfloat16(), rows).float()
        candidate = approx.topk(min(candidates, approx.shape[-1]), dim=-1).indices  # (N, c)
        exact = (normed.unsqueeze(-2) * self.weight[candidate]).sum(-1)  # (N, c) float32
        best = candidate.gather(-1, exact.argmax(-1, keepdim=True)).squeeze(-1)
        return best if self.ids is None else self.ids[best]



def distill(maps: ExitMaps, head: ExitHead, states: CalibrationStates, epochs: float = 1.0, batch: int = 256,
            lr: float = 1e-3, seed: int = 0, log=print, what: str = "KL") -> list[float]:
    """Minimise KL(final || exit) through `head` over the cached states; returns the mean loss per step.

    The loss is the cross-entropy of the exit's distribution against the final layer's cached top-k
    probabilities that fall inside the head (the rest is a constant the maps cannot change).
    """
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam([p for p in maps.parameters()], lr=lr)
    steps = max(1, int(epochs * states.count / batch))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1 - step / steps)
    maps.train().requires_grad_(True)
    target_rows = head.index_of[states.target_ids]  # (N, k): row in the head, -1 outside
    target_probs = states.target_logprobs.exp() * (target_rows >= 0)
    losses: list[float] = []
    started, last_log = time.perf_counter(), time.perf_counter()
    passes = -(-steps * batch // states.count)
    order = torch.cat([torch.randperm(states.count, generator=generator) for _ in range(passes)])
    for step in range(steps):
        rows = order[step * batch:(step + 1) * batch]
        index, probs = target_rows[rows].clamp(min=0), target_probs[rows]
        optimiser.zero_grad()
        total = 0.0
        for layer in maps.exit_points:  # one exit at a time keeps one (batch, K) graph alive
            logq = torch.log_softmax(head.training_logits(maps(layer, states.exits[layer][rows].float())), dim=-1)
            loss = -(probs * logq.gather(1, index)).sum(1).mean()
            (loss / len(maps.exit_points)).backward()
            total += loss.item()
        optimiser.step()
        schedule.step()
        losses.append(total / len(maps.exit_points))
        if time.perf_counter() - last_log > 30 or step + 1 == steps:
            last_log = time.perf_counter()
            log(progress_line(f"{what} step {step + 1}/{steps}, cross-entropy {losses[-1]:.3f}",
                              (step + 1) * batch, steps * batch, started))
    maps.eval().requires_grad_(False)
    return losses


@torch.inference_mode()
def exit_tokens(head: ExitHead, states: CalibrationStates, maps: ExitMaps | None, batch: int = 2048) -> torch.Tensor:
    """(N, E) the token each exit point's top-1 gives (exit points in ascending order), as decoding picks it."""
    points = sorted(states.exits)
    out = torch.empty(states.count, len(points), dtype=torch.int64)
    for start in range(0, states.count, batch):
        for column, layer in enumerate(points):
            h = states.exits[layer][start:start + batch].float()
            out[start:start + batch, column] = head.top1(maps(layer, h) if maps is not None else h)
    return out


def agreement(head: ExitHead, states: CalibrationStates, maps: ExitMaps | None) -> dict[int, float]:
    """Per exit point: the share of tokens whose top-1 at the exit equals the final layer's full top-1."""
    agrees = (exit_tokens(head, states, maps) == states.final_top1[:, None]).double().mean(0)
    return {layer: round(float(share), 4) for layer, share in zip(sorted(states.exits), agrees)}


def agreement_table(adapter, states: CalibrationStates, maps: ExitMaps | None, heads: dict[str, ExitHead],
                    tokens: dict[str, int] | None = None) -> dict:
    """{language: {head name: {layer: agreement}}} on about tokens[head] held-out tokens of each language
    (the whole head's 49k rows cost 6x the shortlist's, so it may be measured on fewer)."""
    from train.assets.calibration import LANGUAGES

    table = {}
    for language in LANGUAGES:  # seconds to minutes each on a shared CPU
        own = states.only(language)
        table[language] = {name: agreement(head, own.spread((tokens or {}).get(name, own.count)), maps)
                           for name, head in heads.items()}
    return table


def mean_shortlist_agreement(table: dict) -> float:
    """One figure to compare forms: the shortlist head's agreement, averaged over exits and languages."""
    values = [v for per_head in table.values() for v in per_head["shortlist"].values()]
    return sum(values) / len(values)


def calibrate_exit_maps(loaded, train: CalibrationStates, validation: CalibrationStates, shortlist: torch.Tensor,
                        kl_epochs: float, mlp_rank: int, mlp_epochs: float, lr: float = 1e-3,
                        log=print) -> tuple[ExitMaps, dict]:
    """Least squares, then KL through the shortlist head, then (mlp_rank > 0) a low-rank MLP per exit;
    agreement per exit after each on held-out tokens of each language; returns the best form and the report."""
    import copy

    adapter = loaded.adapter
    started = time.perf_counter()
    heads = {"full": ExitHead(adapter), "shortlist": ExitHead(adapter, shortlist)}
    points = sorted(train.exits)
    sizes = {"full": AGREEMENT_TOKENS_FULL_HEAD, "shortlist": AGREEMENT_TOKENS_SHORTLIST}
    tables: dict[str, dict] = {"before": agreement_table(adapter, validation, None, heads, sizes)}
    log(f"agreement before (identity maps): {_summary(tables['before'])}")
    maps = ExitMaps(loaded.hidden_size, points, normalize=True)
    fit_least_squares(maps, train, log=log)
    tables["least_squares"] = agreement_table(adapter, validation, maps, heads, sizes)
    log(f"agreement after least squares: {_summary(tables['least_squares'])}")
    candidates = {"least_squares": copy.deepcopy(maps)}
    losses = {}
    if kl_epochs > 0:
        losses["kl"] = distill(maps, heads["shortlist"], train, kl_epochs, lr=lr, log=log, what="KL (affine)")
        tables["kl"] = agreement_table(adapter, validation, maps, heads, sizes)
        log(f"agreement after KL: {_summary(tables['kl'])}")
        candidates["kl"] = copy.deepcopy(maps)
    if mlp_rank > 0 and mlp_epochs > 0:
        maps.add_mlps(mlp_rank)
        losses["mlp"] = distill(maps, heads["shortlist"], train, mlp_epochs, lr=lr, log=log,
                                what=f"KL (affine + rank-{mlp_rank} MLP)")
        tables["mlp"] = agreement_table(adapter, validation, maps, heads, sizes)
        log(f"agreement after the MLP: {_summary(tables['mlp'])}")
        candidates["mlp"] = maps
    scores = {form: round(mean_shortlist_agreement(tables[form]), 4) for form in candidates}
    chosen = max(scores, key=scores.get)
    log(f"mean shortlist agreement per form: {scores}; keeping {chosen}")
    report = {
        "method": "exit maps: per-exit affine map (RMS-normalised input) before the shared final norm + head; "
                  "ridge least squares, then KL to the final layer's distribution through the shortlist head"
                  + (f", then a rank-{mlp_rank} residual MLP per exit" if "mlp" in candidates else ""),
        "chosen": chosen, "mean_shortlist_agreement": scores,
        "train_tokens": {lang: int((train.language == i).sum()) for i, lang in enumerate(_languages())},
        "validation_tokens": {lang: int((validation.language == i).sum()) for i, lang in enumerate(_languages())},
        "agreement_tokens_per_language": sizes,
        "kl_epochs": kl_epochs, "mlp_rank": mlp_rank if "mlp" in candidates else 0, "mlp_epochs": mlp_epochs,
        "final_cross_entropy": {form: round(sum(v[-20:]) / len(v[-20:]), 4) for form, v in losses.items() if v},
        "agreement": tables,
        # what `greencode info` shows: the shortlist head's agreement, mean of the two languages
        "agreement_before": _mean_over_languages(tables["before"]),
        "agreement_after": _mean_over_languages(tables[chosen]),
        "agreement_definition": "share of held-out tokens whose top-1 at the exit (full head, or the shortlist "
                                "head: a final top-1 outside the shortlist counts as a miss) equals the final "
                                "layer's full-vocabulary top-1",
        "seconds": round(time.perf_counter() - started, 1),
    }
    return candidates[chosen], report


def _mean_over_languages(table: dict) -> dict[str, float]:
    per_language = [per_head["shortlist"] for per_head in table.values()]
    return {str(layer): round(sum(p[layer] for p in per_language) / len(per_language), 4) for layer in per_language[0]}


def _languages():
    from train.assets.calibration import LANGUAGES

    return LANGUAGES


def _summary(table: dict) -> str:
    return "; ".join(f"{lang} shortlist " + " ".join(f"{layer}:{value:.2f}" for layer, value in per["shortlist"].items())
                     for lang, per in table.items())
