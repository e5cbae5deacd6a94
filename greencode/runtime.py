"""The one place a config becomes a running engine: a loaded model, an energy meter and an
EarlyExitEngine. Every command, the TUI, the server and train/ build their engine here; the policy is
not part of it (each completion is given its own, see EarlyExitEngine.stream).

Also the one rule for a model without an exit agent (any HF directory, tiny-random-*, a fresh LITE
run): agent:T falls back to confidence:T, and every front end says so with the same line.
"""

from __future__ import annotations

from greencode.config import Config
from greencode.exits.policies import ExitPolicy, split_policy

AGENT_FALLBACK = "confidence"  # what agent:T becomes when the model has no agent: confidence:T


def load_from_config(config: Config, spec: str | None = None):
    """Load `spec` (default [model].spec) with the config's dtype, device, cache and weights form."""
    from greencode.model.load import load_model

    return load_model(spec or config.model.spec, config.model.dtype, config.model.device, config.model.cache_dir,
                      config.model.weights)


def engine_from_config(config: Config, model=None, *, agent_path: str | None = None,
                       exit_points: list[int] | None = None, max_context_tokens: int | None = None, meter=None,
                       typed_text: bool = False, shared_prefixes: bool = False, shortlist: int | None = None):
    """An EarlyExitEngine for `model`: None = [model].spec, a model spec, or an already loaded model.

    Exit points: given, else [exits].points, else the model's own, else the paper's rule. The agent file:
    given, else [agent].path, else the one shipped with the model. The context limit: given, else
    [engine].max_context_tokens. The exit head: `shortlist`, else [exits].shortlist.
    Front ends whose prompts are text a person typed (`typed_text`: complete, serve, the TUI) get
    [engine].token_healing; those that see many prompts sharing a prefix (`shared_prefixes`: serve, the
    TUI) get the prefix cache [engine].prefix_cache asks for. The library (eval, bench, train) cuts at
    token boundaries and gets neither."""
    from greencode.energy import EnergyMeter
    from greencode.decoding.engine import EarlyExitEngine
    from greencode.exits.points import resolve_exit_points
    from greencode.decoding.prefix_cache import prefix_cache_for

    loaded = load_from_config(config, model) if model is None or isinstance(model, str) else model
    points = exit_points or resolve_exit_points(config, loaded.num_layers, loaded.info)
    return EarlyExitEngine(loaded, meter or EnergyMeter(config.energy), points,
                           max_context_tokens or config.engine.max_context_tokens,
                           agent_path if agent_path is not None else (config.agent.path or None),
                           prefix_cache=prefix_cache_for(config.engine) if shared_prefixes else None,
                           token_healing=config.engine.token_healing and typed_text,
                           shortlist=config.exits.shortlist if shortlist is None else shortlist)


def no_agent_note(engine, wanted: str, fallback: str) -> str:
    """The one line every front end shows when agent:T falls back."""
    name = getattr(getattr(engine, "loaded", None), "name", None) or "this model"
    return (f"{name} has no exit agent for {wanted}: using {fallback} (pass --agent PATH, set [agent].path, "
            "or train one with `greencode train agent`)")


def policy_or_fallback(engine, policy: ExitPolicy | str,
                       threshold: float | None = None) -> tuple[ExitPolicy, str | None]:
    """The policy `policy` names on `engine` (with `threshold`, if given, as its T, P or H), and a note.

    agent:T on a model without an agent file becomes confidence:T, and the note says so; otherwise the
    note is None. A bad policy, or an agent file that does not fit the model, is a GreencodeError."""
    if isinstance(policy, str):
        kind, arg = split_policy(policy)
        if kind == "agent" and not engine.agent_file:
            fallback = f"{AGENT_FALLBACK}:{arg.split(':')[0] if threshold is None else format(threshold, 'g')}"
            return engine.make_policy(fallback), no_agent_note(engine, policy, fallback)
    built = engine.make_policy(policy)
    return (built.with_threshold(threshold) if threshold is not None else built), None
