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
from greencode.events import Figures
from greencode.oracle import oracle_share


@dataclass
class PolicyTotals:
    policy: str
    figures: Figures  # summed over the policy's completions
    seconds: float = 0.0  # prefill + decode
    token_ids: list[list[int]] = field(default_factory=list)
    modelled_units: float = 0.0  # CostModel layer-units of the decoded tokens (the first comes with the prefill)

    def add(self, summary) -> None:
        self.figures.add_completion(summary.tokens, summary.seconds, summary.joules, summary.full_depth_joules,
                                    summary.exit_layers, summary.energy_source)
        self.seconds += summary.seconds + summary.prefill_seconds
        self.token_ids.append([e.token_id for e in summary.events])
        self.modelled_units += sum(e.modelled_units for e in summary.events[1:])

    def row(self, full_units: float | None = None) -> dict:
        """Its figures; with `full_units` (CostModel.full_units) also its modelled speed-up over full depth."""
        figures = self.figures
        modelled = (full_units * figures.decode_tokens / self.modelled_units
                    if full_units and self.modelled_units else None)
        return {
            "policy": self.policy,
            "tokens_per_s": round(figures.tokens_per_s, 3),
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


def _hf_generate(loaded, ids: list[int], new_tokens: int) -> tuple[list[int], float, float]:
    """(tokens, total seconds, decode seconds) of transformers' greedy generate with its cache."""
    input_ids = torch.tensor([ids], device=next(loaded.model.parameters()).device)
    options = {"do_sample": False, "use_cache": True, "pad_token_id": loaded.tokenizer.eos_token_id}
    started = time.perf_counter()
    loaded.model.generate(input_ids, max_new_tokens=1, min_new_tokens=1, **options)
    first = time.perf_counter() - started
    started = time.perf_counter()
    out = loaded.model.generate(input_ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **options)
    total = time.perf_counter() - started
    return out[0, len(ids):].tolist(), total, max(1e-9, total - first)


def agent_decision_cost(engine, policy, repeats: int = 300) -> dict:
    """Seconds per agent decision (`policy`: agent:T, as an ExitPolicy or its string form) on a real-sized
    hidden state, against one full-depth token."""
    from greencode.policies import Agent

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
    from greencode.agent import ExitAgent, build_mlp, save_agent
    from greencode.policies import Agent

    hidden, points = engine.adapter.hidden_size, engine.exit_points
    with tempfile.TemporaryDirectory() as scratch:
        path = save_agent(f"{scratch}/agent.safetensors", build_mlp(hidden, net_arch).state_dict(), net_arch,
                          "tanh", hidden, points, f"untrained, for timing ({engine.loaded.name})")
        agent = ExitAgent.load(str(path), hidden, points)
        return agent_decision_cost(engine, Agent(agent, 0.9, engine.adapter, len(points)))


def run_bench(engine, prompts: list[list[int]], policies: list[str], max_new_tokens: int,
              compare_hf: bool = False, progress=None) -> dict:
    """Run every policy (and HF generate) on every prompt, interleaved; return {"rows": [...], ...}."""
    names = list(policies) + (["hf-generate"] if compare_hf else [])
    built = {name: engine.make_policy(name) for name in policies}
    totals = {name: PolicyTotals(name, Figures(engine.num_layers)) for name in names}
    hf_decode = {"seconds": 0.0, "decode": 0.0, "tokens": 0}

    def run(name: str, ids: list[int], record: bool = True) -> None:
        if name == "hf-generate":
            tokens, total, decode = _hf_generate(engine.loaded, ids, max_new_tokens)
            if record:
                hf_decode["seconds"] += total
                hf_decode["decode"] += decode
                hf_decode["tokens"] += len(tokens)
                totals[name].token_ids.append(tokens)
            return
        summary = engine.complete(ids, built[name], max_new_tokens=max_new_tokens)
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
        if oracle and row["policy"] not in ("full", "hf-generate"):
            share = oracle_share(row["modelled_speedup"], oracle["modelled_speedup"])
            row["oracle_saving_share"] = round(share, 4) if share is not None else None
    if compare_hf:
        hf = totals["hf-generate"]
        rows.append({"policy": "hf-generate", "tokens_per_s": round((hf_decode["tokens"] - len(prompts))
                                                                    / hf_decode["decode"], 3),
                     "mean_exit_layer": float(L), "layers_skipped_frac": 0.0, "joules": None,
                     "energy_source": "not measured", "seconds": round(hf_decode["seconds"], 4),
                     "tokens": hf_decode["tokens"]})
        if full:
            full["identical_to_hf"] = totals["full"].token_ids == hf.token_ids
            full["time_ratio_vs_hf"] = round(totals["full"].seconds / hf_decode["seconds"], 4)
    return {"rows": rows, "prompts": len(prompts), "max_new_tokens": max_new_tokens,
            "mean_prompt_tokens": round(statistics.fmean(len(p) for p in prompts), 1),
            "num_layers": L, "exit_points": engine.exit_points, "exit_head": engine.describe_exit_head(),
            "cost_model": {"head_units": round(engine.cost.head_units, 3),
                           "exit_head_units": round(engine.cost.exit_head_units, 3),
                           "propagation_units": round(engine.cost.propagation_units, 4),
                           "full_units": round(engine.cost.full_units, 3)}}


def load_times(spec: str = "default") -> dict:
    """Seconds to load the default model the first time (GGUF conversion) and from the cache."""
    import os

    from greencode.models import load_model

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
