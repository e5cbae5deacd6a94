"""`greencode eval`: exit policies side by side on the paper's protocol, with quality metrics and plots."""

from __future__ import annotations

from typing import Optional

import typer


def _numbers(text: str, option: str) -> list[float]:
    from greencode.errors import GreencodeError

    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise GreencodeError(f"--{option} {text!r}: give comma-separated numbers, e.g. 0.6,0.8,0.9") from None


def command(ctx: typer.Context,
            model: Optional[str] = typer.Option(None, help="Model spec (default: [model].spec). A fine-tuned "
                                                "directory also brings its base model as a baseline."),
            corpus: Optional[str] = typer.Option(None, help="stdlib | DIR | GLOB | ZIP (e.g. a JDK's lib/src.zip) "
                                                 "| CodeXGLUE line-completion FILE.jsonl | hf:NAME "
                                                 "(default: [data].corpus)."),
            samples: Optional[int] = typer.Option(None, help="Test samples (default: [eval].samples)."),
            split: Optional[str] = typer.Option(None, help="test: the corpus's test split | all: every file the "
                                                "model's calibration did not read (on the corpora the shipped "
                                                "default was calibrated on, their calibration files are left out "
                                                "and counted; any other corpus is used whole). Default: "
                                                "[eval].split."),
            policies: Optional[str] = typer.Option(None, help="Comma-separated peer policies, e.g. "
                                                   "full,fixed:14,confidence:0.9 (default: [eval].policies)."),
            thresholds: Optional[str] = typer.Option(None, help="Agent thresholds T, each run as agent:T, "
                                                     "e.g. 0.6,0.8,0.9,0.92 (default: [eval].thresholds); "
                                                     "'' for none."),
            agent: Optional[str] = typer.Option(None, help="Agent file for agent:T (default: [agent].path, the "
                                                "model's own, else [agent].output/agent.safetensors)."),
            out: Optional[str] = typer.Option(None, help="Output directory (default: [eval].out)."),
            restart: bool = typer.Option(False, "--restart", help="Discard the completions an earlier run left "
                                         "in --out instead of resuming them."),
            quiet: bool = typer.Option(False, "--quiet", help="No progress bar.")) -> None:
    """Evaluate quality (ROUGE-L, BLEU, CodeBLEU and parts, EM, edit sim, syntax validity) and efficiency
    (exit layer, layers skipped, latency, tokens/s, joules, agent overhead) of every policy on the same
    test samples, interleaved. Writes OUT/results.json, results.md, quality.png, efficiency.png,
    tradeoff.png, and completions.jsonl (an interrupted run resumes from it).

    Protocol: context = the first [eval].context_fraction of a file's tokens (at most
    [eval].max_context_tokens, nearest the cut), [eval].max_new_tokens generated, the next as many tokens
    as ground truth; a .jsonl corpus uses CodeXGLUE line completion (stop at end of line). CodeBLEU is
    always scored as with PYTHONHASHSEED=0 (its dataflow part depends on string hashing).
    """
    from greencode.context import load_context_config
    from greencode.eval.run import format_summary, run_eval
    from greencode.progress import progress_bar

    overrides = {"model.spec": model, "data.corpus": corpus, "eval.samples": samples, "eval.out": out,
                 "eval.split": split,
                 "eval.policies": [p.strip() for p in policies.split(",") if p.strip()] if policies is not None
                 else None,
                 "eval.thresholds": _numbers(thresholds, "thresholds") if thresholds is not None else None}
    config = load_context_config(ctx, **overrides)
    with progress_bar("eval", config.eval.samples, enabled=not quiet) as update:
        result = run_eval(config, config.eval.out, agent=agent, restart=restart, progress=update,
                          echo=lambda line: typer.echo(line, err=True))
    typer.echo(format_summary(result))
    typer.echo(f"{result['samples']} samples, {result['wall_seconds']:.0f} s; wrote results.json, results.md, "
               f"quality.png, efficiency.png, tradeoff.png to {config.eval.out}")
