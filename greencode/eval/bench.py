"""`greencode bench`: exit policies side by side on the same real-code prompts, in one process.

Every policy runs on every prompt, interleaved (the order rotates per prompt) after a warm-up, so
machine noise hits them alike. Figures are ratios against `full` (and HF `generate` with --compare-hf).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field

import torch

from greencode.errors import GreencodeError
from greencode.decoding.events import Figures
from greencode.decoding.step import measured_over_modelled
from greencode.exits.oracle import oracle_share


@dataclass
class PolicyTotals:
    policy: str
    figures: Figures  # summed over the policy's completions (greencode.decoding.events: the one arithmetic)
    seconds: float = 0.0  # prefill + decode
    prefill_seconds: float = 0.0
    prompt_tokens: int = 0
    token_ids: list[list[int]] = field(default_factory=list)
    modelled_units: float = 0.0  # CostModel layer-units of the decoded tokens (the first comes with the prefill)

    def add(self, summary) -> None:
        self.figures.add_completion(summary.tokens, summary.seconds, summary.joules, summary.full_depth_joules,
                                    summary.exit_layers, summary.energy_source)
        self.seconds += summary.seconds + summary.prefill_seconds
        self.prefill_seconds += summary.prefill_seconds
        self.prompt_tokens += summary.prompt_tokens
        self.token_ids.append([e.token_id for e in summary.events])
        self.modelled_units += sum(e.modelled_units for e in summary.events[1:])

    def add_anchor(self, token_ids: list[int], prompt_tokens: int, prefill_seconds: float,
                   decode_seconds: float) -> None:
        """An anchor's completion (HF generate, llama.cpp), counted like the engine's (no exits, no joules)."""
        self.figures.add_completion(len(token_ids), decode_seconds, 0.0, 0.0, [], "not measured")
        self.prefill_seconds += prefill_seconds
        self.prompt_tokens += prompt_tokens
        self.seconds += prefill_seconds + decode_seconds
        self.token_ids.append(token_ids)

    def row(self, full_units: float | None = None) -> dict:
        """Its figures; with `full_units` (CostModel.full_units) also its modelled speed-up over full depth."""
        figures = self.figures
        modelled = (full_units * figures.decode_tokens / self.modelled_units
                    if full_units and self.modelled_units else None)
        return {
            "policy": self.policy,
            "tokens_per_s": round(figures.tokens_per_s, 3),
            "prefill_tokens_per_s": round(self.prompt_tokens / self.prefill_seconds, 1) if self.prefill_seconds else 0.0,
            "mean_exit_layer": round(figures.mean_exit_layer, 3),
            "layers_skipped_frac": round(figures.layers_skipped_frac, 4),
            "joules": round(figures.joules, 4),
            "joules_saved_frac": round(figures.joules_saved_frac, 4),
            "energy_source": figures.energy_source,
            "seconds": round(self.seconds, 4),
            "tokens": figures.tokens,
            "modelled_speedup": round(modelled, 3) if modelled else None,  # by the cost model, not measured
        }


def bench_prompts(loaded, count: int, data_config, min_context: int = 300, max_context: int = 512,
                  target: int = 16) -> list[list[int]]:
    """Real code from the embedded corpus's test split: 20% of a file as context (<= 512 tokens)."""
    from greencode.data import load_split
    from greencode.eval.cut import make_samples

    samples = make_samples(load_split(data_config, "test"), loaded.tokenizer, count, 0.2, max_context, target,
                           min_context=min_context)
    if not samples:
        raise GreencodeError(f"no test file in {data_config.corpus} gives {min_context}+ context tokens; "
                             "lower --min-context")
    return [s.context_ids for s in samples]


def agent_decision_cost(engine, policy, repeats: int = 300) -> dict:
    """Seconds per agent decision (`policy`: agent:T, as an ExitPolicy or its string form) on a real-sized
    hidden state, against one full-depth token."""
    from greencode.exits.policies import Agent

    policy = engine.make_policy(policy)
    if not isinstance(policy, Agent):
        raise GreencodeError(f"{policy.name} is not an agent policy")
    hidden = torch.randn(1, 1, engine.adapter.hidden_size, device=engine.device)
    with torch.inference_mode():
        for _ in range(20):
            policy.decide(engine.exit_points[0], 0, hidden, None)
        started = time.perf_counter()
        for _ in range(repeats):
            policy.decide(engine.exit_points[0], 0, hidden, None)
    return {"decision_seconds": (time.perf_counter() - started) / repeats, "agent": policy.agent.path}


def untrained_agent_cost(engine, net_arch: list[int]) -> dict:
    """agent_decision_cost of an untrained agent of the configured shape (it costs what a trained one does),
    written to a scratch directory that is removed afterwards."""
    from greencode.exits.agent import ExitAgent, build_mlp, save_agent
    from greencode.exits.policies import Agent

    hidden, points = engine.adapter.hidden_size, engine.exit_points
    with tempfile.TemporaryDirectory() as scratch:
        path = save_agent(f"{scratch}/agent.safetensors", build_mlp(hidden, net_arch).state_dict(), net_arch,
                          "tanh", hidden, points, f"untrained, for timing ({engine.loaded.name})")
        agent = ExitAgent.load(str(path), hidden, points)
        return agent_decision_cost(engine, Agent(agent, 0.9, engine.adapter, len(points)))


SCORES_OFF = " (scores off)"  # a row's suffix: the same policy with TokenEvent.exit_scores not recorded


def run_bench(engine, prompts: list[list[int]], policies: list[str], max_new_tokens: int,
              compare_hf: bool = False, progress=None, anchors: dict | None = None,
              scores_off: bool = False) -> dict:
    """Run every policy (and HF generate, and each anchor of greencode.eval.anchors) on every prompt,
    interleaved; return {"rows": [...], ...}. `scores_off` adds each early-exit policy again with score
    recording off (what the inspector costs)."""
    from greencode.eval.anchors import hf_generate

    anchors = dict(anchors or {})
    if compare_hf:
        anchors["hf-generate"] = hf_generate(engine.loaded)
    twins = [f"{name}{SCORES_OFF}" for name in policies if scores_off and name not in ("full", "oracle")]
    policies = list(policies) + twins
    names = policies + list(anchors)
    built = {name: engine.make_policy(name.removesuffix(SCORES_OFF)) for name in policies}
    totals = {name: PolicyTotals(name, Figures(engine.num_layers)) for name in names}

    def run(name: str, ids: list[int], record: bool = True) -> None:
        if name in anchors:
            tokens, prefill, decode = anchors[name](ids, max_new_tokens)
            if record:
                totals[name].add_anchor(tokens, len(ids), prefill, decode)
            return
        summary = engine.complete(ids, built[name], max_new_tokens=max_new_tokens,
                                  record_scores=not name.endswith(SCORES_OFF))
        if record:
            totals[name].add(summary)

    for name in names:  # warm-up: allocator, kernels, caches
        run(name, prompts[0], record=False)
    for index, ids in enumerate(prompts):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:  # rotate the order so no policy always goes first
            run(name, ids)
        if progress:
            progress(index + 1, len(prompts))

    L = engine.num_layers
    rows = [totals[name].row(engine.cost.full_units) for name in policies]
    full = next((r for r in rows if r["policy"] == "full"), None)
    oracle = next((r for r in rows if r["policy"] == "oracle"), None)
    for row in rows:
        if row is oracle:  # it runs full depth: its timings and joules say nothing of its exits
            row.update({key: None for key in ("tokens_per_s", "joules", "joules_saved_frac", "seconds")})
            continue
        if full and full["tokens_per_s"]:
            row["speedup_vs_full"] = round(row["tokens_per_s"] / full["tokens_per_s"], 3)
            if row is not full:  # an early-exit row: how much of its modelled speed-up the clock delivered
                share = measured_over_modelled(row["tokens_per_s"] / full["tokens_per_s"], row["modelled_speedup"])
                row["measured_over_modelled"] = round(share, 3) if share is not None else None
        if oracle and row["policy"] not in ("full", "hf-generate"):
            share = oracle_share(row["modelled_speedup"], oracle["modelled_speedup"])
            row["oracle_saving_share"] = round(share, 4) if share is not None else None
    for name in anchors:
        row = totals[name].row()
        row.update(mean_exit_layer=float(L) if name == "hf-generate" else None, layers_skipped_frac=None,
                   joules=None, joules_saved_frac=None, energy_source="not measured")
        if full and row["tokens_per_s"]:
            row["speedup_vs_full"] = round(row["tokens_per_s"] / full["tokens_per_s"], 3)
        rows.append(row)
    if full and "hf-generate" in anchors:
        full["identical_to_hf"] = totals["full"].token_ids == totals["hf-generate"].token_ids
        full["time_ratio_vs_hf"] = round(totals["full"].seconds / totals["hf-generate"].seconds, 4)
    if full and "llama.cpp" in anchors:
        llama = totals["llama.cpp"].row()
        for row in rows:  # the anchor a user would run instead: decode and prefill speed against it
            if row.get("tokens_per_s") and llama["tokens_per_s"]:
                row["decode_vs_llama_cpp"] = round(row["tokens_per_s"] / llama["tokens_per_s"], 3)
            if row.get("prefill_tokens_per_s") and llama["prefill_tokens_per_s"]:
                row["prefill_vs_llama_cpp"] = round(row["prefill_tokens_per_s"] / llama["prefill_tokens_per_s"], 3)
    return {"rows": rows, "prompts": len(prompts), "max_new_tokens": max_new_tokens,
            "mean_prompt_tokens": round(statistics.fmean(len(p) for p in prompts), 1),
            "num_layers": L, "exit_points": engine.exit_points, "exit_head": engine.describe_exit_head(),
            "threads": torch.get_num_threads(), "weights": engine.loaded.weights,
            "cost_model": {"head_units": round(engine.cost.head_units, 3),
                           "exit_head_units": round(engine.cost.exit_head_units, 3),
                           "propagation_units": round(engine.cost.propagation_units, 4),
                           "full_units": round(engine.cost.full_units, 3)}}


def load_times(spec: str = "default") -> dict:
    """Seconds to load the default model the first time (GGUF conversion) and from the cache."""
    import os

    from greencode.model.load import load_model

    with tempfile.TemporaryDirectory() as cache:
        previous = os.environ.get("GREENCODE_CACHE")
        os.environ["GREENCODE_CACHE"] = cache
        try:
            first = load_model(spec).load_seconds
            cached = load_model(spec).load_seconds
        finally:
            if previous is None:
                os.environ.pop("GREENCODE_CACHE", None)
            else:
                os.environ["GREENCODE_CACHE"] = previous
    return {"first_load_seconds": round(first, 2), "cached_load_seconds": round(cached, 2)}
