"""results.json and results.md of `greencode eval` (both written atomically)."""

from __future__ import annotations

import json
from pathlib import Path

from greencode.files.atomic import atomic_write_text

# (row key, column title, format)
COLUMNS = (
    ("label", "policy", "{}"),
    ("rougeL", "ROUGE-L", "{:.3f}"),
    ("bleu", "BLEU", "{:.3f}"),
    ("codebleu", "CodeBLEU", "{:.3f}"),
    ("syntax_match", "syntax", "{:.3f}"),
    ("dataflow_match", "dataflow", "{:.3f}"),
    ("exact_match", "EM", "{:.3f}"),
    ("edit_sim", "edit sim", "{:.1f}"),
    ("syntax_valid", "valid", "{:.2f}"),
    ("mean_exit_layer", "exit layer", "{:.1f}"),
    ("layers_skipped_frac", "skipped", "{:.0%}"),
    ("seconds_per_completion", "s/compl.", "{:.2f}"),
    ("tokens_per_s", "tok/s", "{:.1f}"),
    ("decode_joules", "decode J", "{:.1f}"),
    ("decode_joules_vs_full", "J vs full", "{:.2f}"),
    ("modelled_speedup", "modelled x", "{:.2f}"),
    ("measured_over_modelled", "measured/modelled", "{:.2f}"),
    ("oracle_saving_share", "of oracle", "{:.0%}"),
    ("regret", "regret", "{:.0%}"),
)


def _cell(row: dict, key: str, form: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    return form.format(value)


def markdown_table(rows: list[dict]) -> str:
    head = "| " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" if key == "label" else "---:" for key, _, _ in COLUMNS) + "|"
    body = ["| " + " | ".join(_cell(row, key, form) for key, _, form in COLUMNS) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def markdown(result: dict) -> str:
    rows = result["rows"]
    source = rows[0]["energy_source"] if rows else result.get("energy_source", "")
    lines = [
        f"# greencode eval: {result['model']}",
        "",
        f"- samples: {result['samples']} of {result['samples_requested']} requested, "
        f"{result['protocol']} protocol, {result['source']}",
        f"- exit points: {result['exit_points']} of {result['num_layers']} layers; device {result['device']}, "
        f"{result['torch_threads']} torch thread(s)",
        f"- energy: {source}; `decode J` = joules per completion after its first token (the prefill, the "
        "same for every policy, is left out), `J vs full` = that against full depth in this run",
        f"- {result.get('exit_head', 'exit head: all tokens')}; `modelled x` = decode speed-up over full depth by "
        "the cost model (layer-units of weights read per token, greencode/decoding/step.py CostModel), not measured; "
        "`measured/modelled` = the measured decode speed-up over full depth (`tok/s` against full's) divided by "
        "`modelled x`: the share of the modelled speed-up the clock delivered; "
        "`oracle` = full depth, each token credited with the first exit point whose top-1 was that token (its "
        "text is full depth's; its measured columns are blank); `of oracle` = the share of the oracle's modelled "
        "saving a row gets, `regret` = 1 - that",
        f"- wall time: {result['wall_seconds']:.0f} s" + (" (interrupted: partial)" if result["interrupted"] else "")
        + (f"; {result['completions_reused']} completions reused from an earlier session (their timings were "
           "not interleaved with this session's)" if result.get("completions_reused") else ""),
        "",
        markdown_table(rows),
        "",
    ]
    agent_rows = [r for r in rows if r.get("agent_decision_seconds") is not None]
    if agent_rows:
        r = agent_rows[0]
        lines += [f"Agent overhead: {r['agent_decision_seconds'] * 1e6:.0f} µs per decision; "
                  + ", ".join(f"{a['label']} {a['agent_overhead_frac']:.1%} of a decoded token's time "
                              f"({a['exit_decisions_per_token']:.1f} decisions/token)"
                              for a in agent_rows if a.get("agent_overhead_frac") is not None), ""]
    notes = list(result.get("notes", []))
    for row in rows:
        notes += [n for n in row.get("quality_notes", []) if n not in notes]
    if notes:
        lines += ["Notes:", *[f"- {n}" for n in notes], ""]
    lines += ["Metrics: ROUGE-L (mean F1) and BLEU (sacrebleu, tokenize=none) on code tokens; CodeBLEU "
              "(codebleu 0.7.0, scored as with PYTHONHASHSEED=0) with its n-gram, weighted n-gram, syntax and "
              "dataflow parts; EM = same whitespace-split tokens; edit sim = CodeXGLUE round(fuzz.ratio); "
              "valid = share of predictions that parse (tree-sitter, after their context) with no more errors "
              "than the ground truth.", ""]
    return "\n".join(lines)


def write_results(out: Path, result: dict) -> None:
    atomic_write_text(out / "results.json", json.dumps(result, indent=2, default=str))
    atomic_write_text(out / "results.md", markdown(result))
