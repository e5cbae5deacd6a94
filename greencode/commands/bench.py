"""`greencode bench`: policies side by side on real code, one process, interleaved."""

from __future__ import annotations

import json
from typing import Optional

import typer


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def command(ctx: typer.Context,
            model: Optional[str] = typer.Option(None, help="Model spec (default: [model].spec)."),
            prompts: int = typer.Option(8, help="Prompts from the stdlib test split."),
            max_new_tokens: int = typer.Option(16, help="Tokens generated per prompt."),
            policies: str = typer.Option("full,fixed:14,oracle,confidence:0.9,agent:0.9",
                                         help="Comma-separated policies; agent:T is skipped (with a note) "
                                              "when no agent file is available. `oracle` runs full depth and "
                                              "reports the first exit point that agreed, with a modelled "
                                              "speed-up only."),
            agent: Optional[str] = typer.Option(None, help="Agent file for agent:T (default: [agent].path)."),
            min_context: int = typer.Option(300, help="Only prompts with at least this many context tokens."),
            compare_hf: bool = typer.Option(False, "--compare-hf", help="Add transformers generate as a row."),
            llama_cpp: bool = typer.Option(True, "--llama-cpp/--no-llama-cpp",
                                           help="Add llama.cpp (llama-cpp-python, the anchors extra) on the same "
                                                "GGUF and thread count as a row; skipped with a note when missing."),
            scores_off: bool = typer.Option(False, "--scores-off", help="Add each early-exit policy again with "
                                            "the per-exit-point score recording (the TUI inspector's) off."),
            load: bool = typer.Option(False, "--load-times", help="Also time the default model's first "
                                      "(converting) and cached loads, in a temporary cache."),
            profile: bool = typer.Option(False, "--profile", help="Instead of the table: where a decoded token's "
                                         "time goes per policy (layers, heads, propagation, decisions, sampling, "
                                         "the loop) and one layer split into GEMMs, attention and the rest."),
            as_json: bool = typer.Option(False, "--json", help="Print {\"rows\": [...]} as JSON.")) -> None:
    """Benchmark exit policies on the same prompts (tokens/s, exit layers, joules). Writes nothing."""
    from rich.console import Console
    from rich.table import Table

    from greencode.eval.bench import agent_decision_cost, bench_prompts, load_times, run_bench, untrained_agent_cost
    from greencode.context import load_context_config
    from greencode.progress import progress_bar
    from greencode.errors import GreencodeError
    from greencode.exits.policies import check_side_by_side
    from greencode.runtime import engine_from_config

    config = load_context_config(ctx, **{"model.spec": model, "agent.path": agent})
    if prompts < 1:
        raise GreencodeError(f"--prompts {prompts}: give at least 1")
    names = [p.strip() for p in policies.split(",") if p.strip()]
    check_side_by_side(names)  # before loading
    engine = engine_from_config(config)
    loaded, points = engine.loaded, engine.exit_points
    notes = [loaded.weights_note] if loaded.weights_note else []
    agent_names = [n for n in names if n.startswith("agent:")]
    if agent_names:
        try:
            engine.make_policy(agent_names[0])
        except GreencodeError as exc:
            names = [n for n in names if not n.startswith("agent:")]
            notes.append(f"skipped {', '.join(agent_names)}: {exc}")
    check_side_by_side(names, skipped=notes[-1] if notes else "")
    for name in names:
        engine.make_policy(name)  # a bad policy fails here, before any work
    ids = bench_prompts(loaded, prompts, config.data, min_context, config.engine.max_context_tokens,
                        max_new_tokens)
    if profile:
        from greencode.eval.profile import format_profile, profile_policies

        result = profile_policies(engine, ids, names, max_new_tokens)
        result.update(model=loaded.name, weights=loaded.weights, threads=torch_threads(), notes=notes)
        if as_json:
            typer.echo(json.dumps(result, indent=2))
            return
        typer.echo(f"{loaded.name}, {loaded.weights} weights, {result['threads']} threads, {len(ids)} prompts x "
                   f"{max_new_tokens} tokens")
        for line in format_profile(result) + [f"note: {note}" for note in notes]:
            typer.echo(line)
        return
    anchors = {}
    if llama_cpp:
        import torch

        from greencode.eval.anchors import llama_cpp as llama_cpp_anchor

        context = max(len(p) for p in ids) + max_new_tokens + 8
        generate, why_not = llama_cpp_anchor(config.model.spec, torch.get_num_threads(), context)
        if generate is None:
            notes.append(why_not)
        else:
            anchors["llama.cpp"] = generate
    with progress_bar("benchmarking: prompts", len(ids)) as update:
        result = run_bench(engine, ids, names, max_new_tokens, compare_hf, scores_off=scores_off, progress=update,
                           anchors=anchors)
    full_rows = [r for r in result["rows"] if r["policy"] == "full"]
    if full_rows:  # the agent's decision against one full-depth token
        timing_agent = agent_names[0] if agent_names and agent_names[0] in names else None
        if timing_agent is None:
            cost = untrained_agent_cost(engine, list(config.agent.net_arch))
            notes.append("agent decision timed with an untrained MLP of the configured shape "
                         f"{list(config.agent.net_arch)} (same cost as a trained one)")
        else:
            cost = agent_decision_cost(engine, timing_agent)
        full_token = 1.0 / full_rows[0]["tokens_per_s"]
        result["agent_decision"] = {
            "seconds": round(cost["decision_seconds"], 7),
            "fraction_of_full_token": round(cost["decision_seconds"] / full_token, 5),
            "fraction_if_asked_at_every_exit_point": round(len(points) * cost["decision_seconds"] / full_token, 5),
        }
    if load:
        result["load_times"] = load_times()
    result["model"] = loaded.name
    result["notes"] = notes
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"{loaded.name}, {loaded.weights} weights: {result['prompts']} prompts x {max_new_tokens} "
                        f"tokens (mean context {result['mean_prompt_tokens']} tokens), {result['threads']} threads")
    columns = ["policy", "tokens_per_s", "speedup_vs_full", "decode_vs_llama_cpp", "prefill_tokens_per_s",
               "prefill_vs_llama_cpp", "modelled_speedup", "measured_over_modelled", "oracle_saving_share",
               "mean_exit_layer",
               "layers_skipped_frac", "joules", "joules_saved_frac", "energy_source", "seconds", "identical_to_hf",
               "time_ratio_vs_hf"]
    for column in columns:
        table.add_column(column.replace("_", " "))
    for row in result["rows"]:
        table.add_row(*[str(row[c]) if row.get(c) is not None else "-" for c in columns])
    console = Console()
    if not console.is_terminal:  # piped: rich would squeeze the table into 80 columns of ellipses
        console.width = 240
    console.print(table)
    for key in ("agent_decision", "load_times"):
        if key in result:
            typer.echo(f"{key.replace('_', ' ')}: {result[key]}")
    typer.echo(f"{result['exit_head']}; modelled speedup: by the cost model {result['cost_model']}, not measured; "
               "measured over modelled: the share of the modelled speed-up the clock delivered (speedup vs full "
               "/ modelled speedup)")
    if any(r["policy"] == "oracle" for r in result["rows"]):
        typer.echo("oracle: full depth, each token credited with the first exit point whose top-1 was that token "
                   "(modelled only); oracle saving share: the share of its modelled saving a row gets "
                   "(regret = 1 - that)")
    for note in notes:
        typer.echo(f"note: {note}")
