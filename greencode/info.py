"""Facts about a loaded model that `greencode info` prints (and the TUI and endpoint reuse)."""

from __future__ import annotations

from greencode.config import Config


def model_info(config: Config) -> dict:
    from greencode.energy import describe_energy_source
    from greencode.exits.points import lite_weights
    from greencode.decoding.fim import describe_fim
    from greencode.runtime import engine_from_config
    from greencode.model.weights import describe_weights

    engine = engine_from_config(config)
    loaded, points = engine.loaded, engine.exit_points
    # What an exit decodes over and costs (full depth: the whole head, always).
    exit_head = engine.describe_exit_head()
    facts = {
        "model": loaded.name,
        "spec": loaded.spec,
        "architecture": loaded.adapter.arch,
        "num_layers": loaded.num_layers,
        "hidden_size": loaded.hidden_size,
        "weights": describe_weights(loaded, config.model.weights),
        "exit_points": points,
        # A fine-tuned model reports the weights it was trained with; others the paper's defaults.
        "lite_weights": loaded.info.get("weights") or {
            layer: round(w, 4) for layer, w in lite_weights(loaded.num_layers, points=points).items()},
        "exit_head": exit_head.removeprefix("exit head: "),
        "energy_source": describe_energy_source(config.energy),
        "fim": describe_fim(loaded.tokenizer),  # the model's own FIM prompt, or prefix-only completion
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
