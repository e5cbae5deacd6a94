"""Facts about a loaded model that `greencode info` prints (and the TUI and endpoint reuse)."""

from __future__ import annotations

from greencode.config import Config


def resolve_exit_points(config: Config, num_layers: int, info: dict | None = None) -> list[int]:
    """[exits].points if set, else those a fine-tuned model was trained with, else the paper's rule."""
    from greencode.exits import exit_points, validate_exit_points

    if config.exits.points:
        return validate_exit_points(config.exits.points, num_layers)
    if info and info.get("exit_points"):
        return validate_exit_points(info["exit_points"], num_layers)
    return exit_points(num_layers)


def model_info(config: Config) -> dict:
    from greencode.energy import describe_energy_source
    from greencode.engine import EarlyExitEngine
    from greencode.exits import lite_weights
    from greencode.fim import describe_fim
    from greencode.models import load_model

    loaded = load_model(config.model.spec, config.model.dtype, config.model.device, config.model.cache_dir)
    points = resolve_exit_points(config, loaded.num_layers, loaded.info)
    # What an exit decodes over and costs (full depth: the whole head, always).
    exit_head = EarlyExitEngine(loaded, "full", exit_points=points, shortlist=config.exits.shortlist).describe_exit_head()
    facts = {
        "model": loaded.name,
        "spec": loaded.spec,
        "architecture": loaded.adapter.arch,
        "num_layers": loaded.num_layers,
        "hidden_size": loaded.hidden_size,
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
    if adaptation:  # the shipped default: exit maps + agent
        facts["adaptation"] = adaptation["adaptation"]["method"]
        facts["agreement_before"] = adaptation["adaptation"]["agreement_before"]
        facts["agreement_after"] = adaptation["adaptation"]["agreement_after"]
        facts["agent"] = loaded.info["agent_path"]
    return facts
