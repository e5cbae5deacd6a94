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
    """(generate, None) for llama.cpp (through llama-cpp-python's C API) on the spec's GGUF, or (None, one line
    saying why not)."""
    gguf = gguf_of(spec)
    if gguf is None:
        return None, f"llama.cpp row skipped: model {spec!r} has no GGUF file (use default or a .gguf spec)"
    try:
        import llama_cpp
    except ImportError:
        return None, f"llama.cpp row skipped: llama-cpp-python is not installed; {ANCHORS_EXTRA}"
    import numpy as np
    from llama_cpp._logger import set_verbose

    set_verbose(False)  # llama.cpp's load log (thousands of lines) goes to stderr otherwise; errors still show
    llama_cpp.llama_backend_init()
    model_params = llama_cpp.llama_model_default_params()
    # The "extra" CPU buffer types (weights repacked for AMX / AVX-512 kernels at load) crash llama-cpp-python
    # 0.3.36's decode on this machine's CPU (a segfault, 2026-12-06); plain buffers run llama.cpp's usual kernels.
    if hasattr(model_params, "use_extra_bufts"):
        model_params.use_extra_bufts = False
    model = llama_cpp.llama_model_load_from_file(str(gguf).encode(), model_params)
    if not model:
        return None, f"llama.cpp row skipped: llama.cpp could not load {gguf}"
    context_params = llama_cpp.llama_context_default_params()
    context_params.n_ctx = context_params.n_batch = context_params.n_ubatch = context_tokens
    context_params.n_threads = context_params.n_threads_batch = threads
    context = llama_cpp.llama_init_from_model(model, context_params)
    if not context:
        llama_cpp.llama_model_free(model)
        return None, f"llama.cpp row skipped: llama.cpp could not make a {context_tokens}-token context for {gguf}"
    vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))

    def evaluate(ids: list[int]) -> int:
        """Decode `ids` after what the context holds; the greedy next token from the last position's logits."""
        array = (llama_cpp.llama_token * len(ids))(*ids)
        if llama_cpp.llama_decode(context, llama_cpp.llama_batch_get_one(array, len(ids))) != 0:
            raise RuntimeError("llama_decode failed")
        return int(np.argmax(np.ctypeslib.as_array(llama_cpp.llama_get_logits(context), shape=(vocab,))))

    def generate(ids: list[int], new_tokens: int):
        # no prefix reuse between prompts: every prompt is prefilled in full, as ours are
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(context), True)
        started = time.perf_counter()
        tokens = [evaluate(ids)]
        prefill = time.perf_counter() - started
        started = time.perf_counter()
        while len(tokens) < new_tokens:
            tokens.append(evaluate([tokens[-1]]))
        return tokens, prefill, max(1e-9, time.perf_counter() - started)

    generate.keep_alive = (model, context)  # alive as long as the function (a bench run); freed at exit
    return generate, None
