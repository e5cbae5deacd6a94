"""Rows `greencode bench` measures beside the policies: engines a user would run instead.

Each anchor is a function (prompt ids, new tokens) -> (tokens, prefill seconds, decode seconds), timed the
way the engine's rows are: prefill = the prompt through the model up to the first token's logits; decode =
the remaining tokens one by one, greedy. `hf-generate` is transformers' generate on the same model;
`llama.cpp` is llama-cpp-python on the same GGUF file with the same thread count.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

ANCHORS_EXTRA = ("pip install 'greencode[anchors]' (builds llama-cpp-python from source, a few minutes; "
                 "or `pip install llama-cpp-python`)")


def hf_generate(loaded):
    """transformers' greedy generate with its own cache: (tokens, prefill seconds, decode seconds)."""
    device = next(loaded.model.parameters()).device
    options = {"do_sample": False, "use_cache": True, "pad_token_id": loaded.tokenizer.eos_token_id}

    def generate(ids: list[int], new_tokens: int):
        input_ids = torch.tensor([ids], device=device)
        started = time.perf_counter()
        loaded.model.generate(input_ids, max_new_tokens=1, min_new_tokens=1, **options)
        first = time.perf_counter() - started
        started = time.perf_counter()
        out = loaded.model.generate(input_ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **options)
        total = time.perf_counter() - started
        return out[0, len(ids):].tolist(), first, max(1e-9, total - first)

    return generate


def gguf_of(spec: str) -> Path | None:
    """The GGUF file behind a model spec (the packaged default's, or a .gguf spec), or None."""
    from greencode.model.load import default_gguf_path

    if spec in ("default", "default-base"):
        return default_gguf_path()
    if spec.endswith(".gguf"):
        return Path(spec).expanduser()
    return None


def llama_cpp(spec: str, threads: int, context_tokens: int):
    """(generate, None) for llama-cpp-python on the spec's GGUF, or (None, one line saying why not)."""
    gguf = gguf_of(spec)
    if gguf is None:
        return None, f"llama.cpp row skipped: model {spec!r} has no GGUF file (use default or a .gguf spec)"
    try:
        import llama_cpp
    except ImportError:
        return None, f"llama.cpp row skipped: llama-cpp-python is not installed; {ANCHORS_EXTRA}"
    import numpy as np

    model = llama_cpp.Llama(model_path=str(gguf), n_ctx=context_tokens, n_batch=512, n_threads=threads,
                            n_threads_batch=threads, verbose=False)

    vocab = model.n_vocab()

    def next_token() -> int:  # greedy over the last position's logits (kept by llama.cpp, not by the wrapper)
        return int(np.argmax(np.ctypeslib.as_array(llama_cpp.llama_get_logits(model.ctx), shape=(vocab,))))

    def generate(ids: list[int], new_tokens: int):
        model.reset()  # no prefix reuse between prompts: every prompt is prefilled in full, as ours are
        started = time.perf_counter()
        model.eval(ids)
        tokens = [next_token()]
        prefill = time.perf_counter() - started
        started = time.perf_counter()
        while len(tokens) < new_tokens:
            model.eval([tokens[-1]])
            tokens.append(next_token())
        return tokens, prefill, max(1e-9, time.perf_counter() - started)

    return generate, None
