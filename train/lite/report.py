"""What greencode.json and a build manifest say about a LITE run (train/lite/finetune.py)."""

from __future__ import annotations

# What `greencode train default --from DIR` copies from DIR/greencode.json into its manifest.
LITE_RECORD_KEYS = ("base_model", "targets", "keep_final", "teacher", "shortlist", "lora", "steps", "tokens_trained",
                    "batch_size", "grad_accum", "seq_len", "learning_rate", "corpus", "agreement_reference",
                    "agreement_before", "agreement_after", "final_agreement_after", "by_language_after",
                    "validation_loss_before", "validation_loss", "train_seconds", "throughput_tokens_per_s")


def layer_keys(values: dict) -> dict[str, float]:
    return {str(layer): round(float(v), 4) for layer, v in values.items()}


def measured_keys(prefix: str, measured: dict) -> dict:
    """greencode.json's view of lite_loss.measure_languages ("before" or "after"): overall and per language."""
    return {f"agreement_{prefix}": layer_keys(measured["agreement"]),
            f"validation_loss{'_before' if prefix == 'before' else ''}": layer_keys(measured["loss"]),
            f"final_agreement_{prefix}": round(measured["final_agreement"], 4),
            f"by_language_{prefix}": {language: {"tokens": m["tokens"], "agreement": layer_keys(m["agreement"]),
                                                 "final_agreement": round(m["final_agreement"], 4),
                                                 "validation_loss": layer_keys(m["loss"])}
                                      for language, m in measured["by_language"].items()}}


def lite_record(directory: str, info: dict) -> dict:
    """What a manifest keeps of the LITE run that made a model directory (its greencode.json)."""
    if "steps" not in info:
        return {"model": directory, "note": "no greencode.json from greencode train finetune in it"}
    return {"model": directory, **{key: info[key] for key in LITE_RECORD_KEYS if key in info}}
