import sys

import pytest

from greencode.decoding.engine import EarlyExitEngine
from greencode.eval.anchors import gguf_of, llama_cpp
from greencode.eval.bench import run_bench
from tests.greencode.eval.test_bench import _prompts


def test_without_llama_cpp_python_the_row_is_skipped_with_one_line_saying_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # what `import llama_cpp` meets when it is not installed
    generate, why_not = llama_cpp("default", 1, 256)
    assert generate is None
    assert "\n" not in why_not and "greencode[anchors]" in why_not


def test_a_model_without_a_gguf_file_has_no_llama_cpp_row():
    assert gguf_of("tiny-random-llama") is None
    generate, why_not = llama_cpp("tiny-random-llama", 1, 256)
    assert generate is None and "no GGUF" in why_not


def test_llama_cpp_row_runs_the_same_prompts_and_is_compared_with_full(tiny_llama):
    pytest.importorskip("llama_cpp")
    generate, why_not = llama_cpp("default", 1, 512)  # the packaged GGUF; the tiny model shares its tokenizer
    assert why_not is None
    prompts = _prompts(tiny_llama)
    tokens, prefill, decode = generate(prompts[0], 5)
    assert len(tokens) == 5 and prefill > 0 and decode > 0
    again, _, _ = generate(prompts[0], 5)
    assert again == tokens  # greedy, and no state carried over from the previous prompt
    result = run_bench(EarlyExitEngine(tiny_llama), prompts, ["full"], 5, anchors={"llama.cpp": generate})
    rows = {row["policy"]: row for row in result["rows"]}
    assert rows["llama.cpp"]["tokens"] == 10 and rows["llama.cpp"]["prefill_tokens_per_s"] > 0
    assert rows["full"]["decode_vs_llama_cpp"] > 0 and rows["full"]["prefill_vs_llama_cpp"] > 0
