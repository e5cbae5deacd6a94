"""`greencode bench --profile`: where a decoded token's time goes, per policy.

The engine's parts are timed in place (a wrapper around each, exclusive time: a part called inside another
counts once, in the innermost), only inside the decode windows the token's `seconds` measure, so the parts
add up to the measured token time; what no wrapper covers is the loop's own Python (`loop`). A separate
micro-benchmark splits one decoder layer into its GEMMs, attention and the rest (elementwise ops and Python
dispatch). The wrappers cost ~1 µs per call; the figures are for comparing runs, not a product's numbers.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager

import torch

# (part, owner, method names, top level only): each name the owner has is wrapped. The cache's `update` inside a
# layer is the layer's; outside one it is propagation. The whole head inside an exit head is the exit head's.
PARTS = (
    ("embed", "adapter", ("embed", "layer_context"), False),
    ("layers", "adapter", ("run_layer",), False),
    ("propagation", "adapter", ("kv",), False),
    ("propagation", "engine", ("_propagate",), False),
    ("propagation", "cache", ("update", "update_range"), True),
    ("full head", "adapter", ("logits",), True),
    ("exit head", "engine", ("_exit_logits",), False),
    ("sampling", "module", ("sample",), False),
)
ORDER = ("embed", "layers", "propagation", "full head", "exit head", "decide", "sampling", "loop")


class _Clock:
    """Exclusive time per part, counted only while a decode window is open."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.stack: list[list] = []  # [part, started, child seconds]
        self.open = False

    def wrap(self, part: str, function, top_only: bool = False):
        """`function` timed as `part`; with `top_only`, a call inside another part counts in that part."""
        def timed(*args, **kwargs):
            if not self.open or (top_only and self.stack):
                return function(*args, **kwargs)
            frame = [part, time.perf_counter(), 0.0]
            self.stack.append(frame)
            try:
                return function(*args, **kwargs)
            finally:
                self.stack.pop()
                spent = time.perf_counter() - frame[1]
                self.seconds[part] = self.seconds.get(part, 0.0) + spent - frame[2]
                if self.stack:
                    self.stack[-1][2] += spent
        return timed


@contextmanager
def _instrumented(engine, clock: _Clock):
    """Wrap the engine's parts (restored on exit); the meter's token windows open and close the clock."""
    import greencode.decoding.engine as engine_module
    import greencode.exits.policies as policies
    from greencode.model.kv_cache import StaticKVCache

    owners = {"adapter": engine.adapter, "engine": engine, "module": engine_module, "cache": StaticKVCache}
    undo = []

    def patch(owner, name, replacement):
        had = name in vars(owner)
        undo.append((owner, name, vars(owner).get(name), had))
        setattr(owner, name, replacement)

    for part, owner_name, names, top_only in PARTS:
        owner = owners[owner_name]
        for name in names:
            if hasattr(owner, name):
                patch(owner, name, clock.wrap(part, getattr(owner, name), top_only))
    for cls in (policies.Fixed, policies.Confidence, policies.Entropy, policies.Agent):
        patch(cls, "decide", clock.wrap("decide", cls.decide))
    meter, prefill = engine.meter, engine.prefill
    begin, end = meter.begin_window, meter.end_window

    def begin_window(key):
        begin(key)
        clock.open = key == "token" and not clock.in_prefill

    def end_window(key):
        clock.open = False
        return end(key)

    def prefilling(*args, **kwargs):
        clock.in_prefill = True
        try:
            return prefill(*args, **kwargs)
        finally:
            clock.in_prefill = False

    clock.in_prefill = False
    patch(meter, "begin_window", begin_window)
    patch(meter, "end_window", end_window)
    patch(engine, "prefill", prefilling)
    try:
        yield
    finally:
        for owner, name, old, had in reversed(undo):
            if had:
                setattr(owner, name, old)
            else:
                delattr(owner, name)


def profile_policies(engine, prompts: list[list[int]], policies: list[str], max_new_tokens: int) -> dict:
    """Milliseconds per decoded token, by part, for each policy (run interleaved over `prompts`)."""
    clocks = {name: _Clock() for name in policies}
    tokens = {name: 0 for name in policies}
    window = {name: 0.0 for name in policies}
    built = {name: engine.make_policy(name) for name in policies}
    for name in policies:  # warm-up
        engine.complete(prompts[0], built[name], max_new_tokens=max_new_tokens)
    for index, ids in enumerate(prompts):
        shift = index % len(policies)
        for name in policies[shift:] + policies[:shift]:
            with _instrumented(engine, clocks[name]):
                summary = engine.complete(ids, built[name], max_new_tokens=max_new_tokens)
            tokens[name] += len(summary.events) - 1
            window[name] += sum(e.seconds for e in summary.events[1:])
    rows = []
    for name in policies:
        n = max(1, tokens[name])
        parts = {part: 1e3 * s / n for part, s in clocks[name].seconds.items()}
        parts["loop"] = 1e3 * window[name] / n - sum(parts.values())
        rows.append({"policy": name, "ms_per_token": round(1e3 * window[name] / n, 3), "tokens": tokens[name],
                     **{part: round(parts.get(part, 0.0), 3) for part in ORDER}})
    return {"rows": rows, "layer": layer_breakdown(engine, statistics.fmean(len(p) for p in prompts))}


def _median_seconds(function, repeats: int = 60) -> float:
    for _ in range(5):
        function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@torch.inference_mode()
def layer_breakdown(engine, context: float) -> dict:
    """One decoder layer at batch 1 over a cache of `context` positions: the whole layer against its GEMMs
    alone and its attention alone (ms); `rest` is elementwise ops and Python dispatch."""
    import torch.nn.functional as F

    from greencode.model.kv_cache import StaticKVCache

    adapter = engine.adapter
    if adapter.lean is None:
        return {}
    lean, layer = adapter.lean, adapter.layers[0]
    context = int(context)
    hidden = torch.randn(1, 1, adapter.hidden_size)
    cache = StaticKVCache(1, context + 100)
    keys = torch.randn(1, lean.kv_heads, context, lean.head_dim)
    cache.update(keys, keys.clone(), 0)
    step = adapter.layer_context(hidden, torch.tensor([[context]]))

    def whole():
        cache.layers[0].length = context
        adapter.run_layer(0, hidden, step, cache)

    attn, mlp = layer.self_attn, layer.mlp
    inner = torch.randn(1, 1, mlp.down_proj.in_features)
    merged = torch.randn(1, 1, attn.o_proj.in_features)

    def gemms():
        for module in (attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj):
            module(hidden)
        attn.o_proj(merged)
        mlp.down_proj(inner)

    q = torch.randn(1, lean.heads, 1, lean.head_dim)
    values = keys.clone()

    def attention():
        F.scaled_dot_product_attention(q, keys, values, scale=lean.scaling, enable_gqa=True)

    layer_ms, gemm_ms, attention_ms = (1e3 * _median_seconds(f) for f in (whole, gemms, attention))
    return {"context": context, "layer_ms": round(layer_ms, 4), "gemm_ms": round(gemm_ms, 4),
            "attention_ms": round(attention_ms, 4), "rest_ms": round(layer_ms - gemm_ms - attention_ms, 4)}


def format_profile(result: dict) -> list[str]:
    """Plain lines: one table of ms per token by part, then the layer split."""
    head = f"{'policy':<14}{'ms/token':>9}" + "".join(f"{part:>12}" for part in ORDER)
    lines = ["time per decoded token (ms), by part:", head]
    for row in result["rows"]:
        lines.append(f"{row['policy']:<14}{row['ms_per_token']:>9.3f}" + "".join(f"{row[p]:>12.3f}" for p in ORDER))
    layer = result.get("layer")
    if layer:
        lines.append(f"one layer at {layer['context']} positions: {layer['layer_ms']:.3f} ms = GEMMs "
                     f"{layer['gemm_ms']:.3f} + attention {layer['attention_ms']:.3f} + elementwise and Python "
                     f"dispatch {layer['rest_ms']:.3f}")
    return lines
