"""What a loaded model is: the one set of facts `greencode info` prints, the server's `/info` answers and the
TUI's model panel shows (so the three never disagree)."""

from __future__ import annotations

from greencode.config import Config


def model_facts(engine, config: Config | None = None, *, identity_only: bool = False) -> dict:
    """The facts about `engine`'s model. `identity_only`: just its name, depth, exit points and exit head
    (what the TUI panel shows, and all a stand-in engine in UI tests has). `config` says which weight form
    was asked for ("chosen by auto")."""
    loaded = engine.loaded
    facts = {
        "model": loaded.name,
        "num_layers": engine.num_layers,
        "exit_points": list(engine.exit_points),
        # What an exit decodes over and costs (full depth: the whole head, always).
        "exit_head": engine.describe_exit_head().removeprefix("exit head: "),
    }
    if identity_only:
        return facts
    from greencode.decoding.fim import describe_fim
    from greencode.energy import describe_meter
    from greencode.exits.points import lite_weights
    from greencode.model.weights import describe_weights

    points = facts["exit_points"]
    facts = {
        "model": facts["model"],
        "spec": loaded.spec,
        "architecture": loaded.adapter.arch,
        "num_layers": facts["num_layers"],
        "hidden_size": loaded.hidden_size,
        "weights": describe_weights(loaded, config.model.weights if config is not None else loaded.weights),
        "exit_points": points,
        # A fine-tuned model reports the weights it was trained with; others the paper's defaults.
        "lite_weights": loaded.info.get("weights") or {
            layer: round(w, 4) for layer, w in lite_weights(loaded.num_layers, points=points).items()},
        "exit_head": facts["exit_head"],
        "energy_source": describe_meter(engine.meter),
        "fim": describe_fim(loaded.tokenizer),  # the model's own FIM prompt, or prefix-only completion
        "chat_template": bool(getattr(loaded.tokenizer, "chat_template", None)),  # chat routes need one
        "load_seconds": round(loaded.load_seconds, 2),
    }
    for key in ("base_model", "steps", "tokens_trained", "agreement_before", "agreement_after", "validation_loss"):
        if key in loaded.info:
            facts[key] = loaded.info[key]
    adaptation = loaded.info.get("adaptation")
    if adaptation:  # exit maps + agent: the shipped default's, or a fine-tuned model's own (DIR/adaptation)
        facts["adaptation"] = adaptation["adaptation"]["method"]
        # A LITE model already shows its fine-tuning's agreement: the maps' figures go beside it, not over it.
        prefix = "maps_" if "agreement_before" in facts else ""
        facts[f"{prefix}agreement_before"] = adaptation["adaptation"]["agreement_before"]
        facts[f"{prefix}agreement_after"] = adaptation["adaptation"]["agreement_after"]
        facts["agent"] = loaded.info["agent_path"]
        facts.update(knob_facts(loaded.info, engine.agent_file, config.agent.threshold))
    return facts


def knob_facts(info: dict, agent_file: str | None, threshold: float) -> dict:
    """What agent:T means on this model: its calibrated confirm bound and ramp, and each T's measured meaning."""
    from greencode.exits.knob import agent_defaults, knob_for, knob_meaning

    knob = knob_for(info, agent_file)
    if not knob:
        return {}
    confirm, ramp = agent_defaults(info, agent_file)
    ramped = f"the first {ramp} decoded tokens stricter" if ramp else "no ramp"
    facts = {"agent_policy": f"agent:T = agent:T:{confirm:g}:{ramp} (exit when P(exit) >= T, confirmed when the exit "
                             f"head's max probability >= {confirm:g}; {ramped})"}
    meaning = knob_meaning(knob, threshold)
    if meaning:
        facts["knob"] = meaning
    facts["knob_table"] = {t: ", ".join(f"{lang} {f['agreement']:.0%} / {f['modelled_speedup']:.2f}x"
                                        for lang, f in row.items()) for t, row in knob.get("table", {}).items()}
    return facts


def model_info(config: Config) -> dict:
    """`greencode info`: load the model the config names and describe it."""
    from greencode.runtime import engine_from_config

    return model_facts(engine_from_config(config), config)
