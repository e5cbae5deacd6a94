"""Check a model's files before transformers reads them, so a damaged file is one clear line.

transformers and safetensors raise many exception types (and sometimes multi-line messages) on a
truncated or garbage file; the checks here read only headers and sizes, never the weights.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from greencode.errors import GreencodeError


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


# Sizes transformers' config classes require as integers (their strict validation is a multi-line error).
SIZE_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "intermediate_size",
             "vocab_size", "max_position_embeddings", "n_layer", "n_embd", "n_head", "n_positions", "ffn_dim")


def check_model_dir(path: Path) -> None:
    """config.json is a JSON object and every *.safetensors has a whole header covering its data."""
    from safetensors import SafetensorError, safe_open

    config = path / "config.json"
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GreencodeError(f"{config}: not valid JSON ({_one_line(exc)}); restore the model's config.json") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("model_type", ""), str):
        raise GreencodeError(f"{config}: must be a JSON object with a model_type; restore the model's config.json")
    for key in SIZE_KEYS:
        value = parsed.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise GreencodeError(f"{config}: {key} must be a positive integer, not {json.dumps(value)[:40]}; "
                                 "restore the model's config.json")
    for weights in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(str(weights), framework="pt") as handle:
                handle.metadata()
        except (SafetensorError, OSError, ValueError) as exc:
            raise GreencodeError(f"{weights}: truncated or not a safetensors file ({_one_line(exc)}); "
                                 "copy or convert the model again") from None


def check_gguf(path: Path) -> None:
    """The GGUF header parses and every tensor's bytes lie inside the file (a truncated copy fails here)."""
    import gguf

    size = path.stat().st_size
    try:
        reader = gguf.GGUFReader(str(path))
        tensors = list(reader.tensors)
    except (ValueError, struct.error, OSError, KeyError, IndexError, TypeError) as exc:
        raise GreencodeError(f"{path}: not a GGUF file or truncated ({_one_line(exc)}); "
                             "download or copy it again") from None
    if not tensors:
        raise GreencodeError(f"{path}: a GGUF header without tensors; download or copy the whole file again")
    end = max(tensor.data_offset + tensor.n_bytes for tensor in tensors)
    if end > size:
        raise GreencodeError(f"{path}: truncated: its tensors need {end} bytes, the file has {size}; "
                             "download or copy it again")
