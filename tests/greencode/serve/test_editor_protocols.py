"""The OpenAI and Ollama routes with their real PyPI clients (`openai`, `ollama`) against a real server on
loopback; fill-in-the-middle prompts in every form, built by hand as llm-ls builds them; bad input in each
protocol's error shape."""

from __future__ import annotations

import httpx
import ollama
import openai
import pytest

from greencode.decoding.engine import EarlyExitEngine
from greencode.decoding.fim import SuffixStop
from greencode.model.load import load_model
from tests.greencode.serve.serve_server import running_server, serve_config, wait_for
from tests.greencode.decoding.test_fim import AFTER, BEFORE, LLM_LS_PROMPTS

CAP = 6


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-random-llama", device="cpu")


@pytest.fixture(scope="module")
def server(tiny):
    engine = EarlyExitEngine(tiny)
    with running_server(engine, serve_config(max_new_tokens_cap=CAP, token="s3cret")) as (url, state):
        yield url, state


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key="s3cret", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def olm(server):
    return ollama.Client(host=server[0], headers={"Authorization": "Bearer s3cret"}, timeout=60)


def _expected(tiny, prompt, **options):
    return EarlyExitEngine(tiny).complete(prompt, **options)


def test_openai_client_completes_with_greencode_figures(oai, tiny):
    answer = oai.completions.create(model="greencode", prompt=BEFORE, max_tokens=5)
    expected = _expected(tiny, BEFORE, max_new_tokens=5)
    choice = answer.choices[0]
    assert choice.text == expected.text and choice.finish_reason == "length" and choice.index == 0
    assert answer.usage.completion_tokens == 5 and answer.usage.prompt_tokens == expected.prompt_tokens
    figures = answer.model_extra["greencode"]
    assert figures["exit_layers"] == [12] * 5 and figures["joules"] > 0 and "energy_source" in figures
    fixed = oai.completions.create(model="greencode", prompt=BEFORE, max_tokens=3,
                                   extra_body={"greencode": {"policy": "fixed:4"}})
    assert fixed.model_extra["greencode"]["exit_layers"] == [12, 4, 4]
    assert fixed.model_extra["greencode"]["joules_saved"] > 0
    models = oai.models.list().data
    assert [(m.id, m.model_extra["description"]) for m in models] == [("greencode", "tiny-random-llama")]
    assert answer.model == "greencode"


def test_openai_client_streams_chunks_with_each_tokens_exit_layer(oai, tiny):
    chunks = list(oai.completions.create(model="greencode", prompt=BEFORE, max_tokens=5, stream=True))
    expected = _expected(tiny, BEFORE, max_new_tokens=5)
    assert "".join(c.choices[0].text for c in chunks) == expected.text
    assert [c.model_extra["greencode"]["exit_layer"] for c in chunks[:-1]] == [12] * 5
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].model_extra["greencode"]["joules"] > 0


def test_openai_suffix_field_completes_the_prefix_and_says_so(oai, tiny):
    alone = _expected(tiny, BEFORE, max_new_tokens=CAP).text
    raw = oai.completions.with_raw_response.create(model="greencode", prompt=BEFORE, suffix=AFTER, max_tokens=CAP)
    assert raw.headers["x-greencode-fim"] == "prefix-only; request=suffix"
    answer = raw.parse()
    assert answer.choices[0].text == alone  # the random model never repeats the suffix here
    assert answer.model_extra["greencode"]["fim"]["mode"] == "prefix-only"
    streamed = oai.completions.create(model="greencode", prompt=BEFORE, suffix=AFTER, max_tokens=CAP, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == alone


@pytest.mark.parametrize("form", sorted(LLM_LS_PROMPTS))
def test_each_fim_form_completes_as_the_prefix_would_and_stops_before_the_suffix(server, oai, tiny, form):
    alone = _expected(tiny, BEFORE, max_new_tokens=CAP).text
    first_line = alone.split("\n")[0]
    repeated = first_line.split()[-1]  # a suffix that goes on with the completion's last word on the cursor's line
    prompt = LLM_LS_PROMPTS[form].replace(AFTER, " " + repeated + "\nnext_line()\n")
    answer = oai.completions.create(model="greencode", prompt=prompt, max_tokens=CAP)
    cut = SuffixStop(BEFORE, " " + repeated + "\nnext_line()\n").cut(alone, finished=True)
    assert cut is not None and answer.choices[0].text == alone[:cut] and not answer.choices[0].text.endswith(repeated)
    fim = answer.model_extra["greencode"]["fim"]
    assert fim == {"mode": "prefix-only", "request": form, "note": fim["note"]}
    plain = oai.completions.create(model="greencode", prompt=LLM_LS_PROMPTS[form], max_tokens=CAP)
    assert plain.choices[0].text == alone
    tgi = httpx.post(f"{server[0]}/generate", headers={"Authorization": "Bearer s3cret"}, timeout=60,
                     json={"inputs": LLM_LS_PROMPTS[form], "parameters": {"max_new_tokens": CAP}}).json()
    assert tgi["generated_text"] == alone and tgi["details"]["fim"]["request"] == form  # llm-vscode's TGI backend


def test_ollama_client_generates_streamed_and_not(olm, server, tiny):
    expected = _expected(tiny, BEFORE, max_new_tokens=4)
    answer = olm.generate(model="greencode", prompt=BEFORE, stream=False, options={"num_predict": 4})
    assert answer.response == expected.text and answer.done and answer.done_reason == "length"
    assert answer.eval_count == 4 and answer.prompt_eval_count == expected.prompt_tokens
    parts = list(olm.generate(model="greencode", prompt=BEFORE, stream=True, options={"num_predict": 4}))
    assert "".join(p.response for p in parts) == expected.text and parts[-1].done and not parts[0].done
    suffixed = olm.generate(model="greencode", prompt=BEFORE, suffix=AFTER, stream=False, options={"num_predict": -1})
    assert suffixed.eval_count == CAP  # -1 (endless) is the server's cap
    assert [m.model for m in olm.list().models] == ["greencode"] and answer.model == "greencode"
    assert httpx.get(f"{server[0]}/api/version", headers={"Authorization": "Bearer s3cret"}).json()["version"]
    # The ollama client drops fields it does not know; the figures are on the wire, on every line.
    with httpx.stream("POST", f"{server[0]}/api/generate", headers={"Authorization": "Bearer s3cret"}, timeout=60,
                      json={"model": "x", "prompt": BEFORE, "options": {"num_predict": 3}}) as response:
        import json

        lines = [json.loads(line) for line in response.iter_lines()]
    assert [line["greencode"]["exit_layer"] for line in lines[:-1]] == [12] * 3
    assert lines[-1]["greencode"]["exit_layers"] == [12] * 3 and lines[-1]["greencode"]["joules"] > 0


@pytest.mark.parametrize("body, message", [
    ({"n": 2}, "n: only n = 1"),
    ({"best_of": 3}, "best_of"),
    ({"echo": True}, "echo"),
    ({"logprobs": 2}, "logprobs"),
    ({"prompt": ["a", "b"]}, "one prompt per request"),
    ({"prompt": [1, 2]}, "prompt"),
    ({"prompt": "<fim_suffix>a<fim_prefix>b<fim_middle>"}, "wrong order"),
    ({"stop": ["x"] * 100}, "stop"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": -5}, "max_tokens"),
    ({"temperature": "warm"}, "temperature"),
    ({"extra_body": {"greencode": {"policy": "bogus"}}}, "unknown policy"),
])
def test_openai_bad_input_gets_an_openai_error(oai, server, body, message):
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        oai.completions.create(**{"model": "greencode", "prompt": BEFORE, **body})
    error = raised.value.body
    assert message in error["message"] and error["type"] == "invalid_request_error"
    assert httpx.get(f"{server[0]}/health").json()["status"] == "ok"


def test_an_editors_template_stop_list_is_accepted(oai):
    qwen_stops = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                  "<|repo_name|>", "<|file_sep|>", "<|im_start|>", "<|im_end|>", "\n\n"]  # as Continue sends them
    answer = oai.completions.create(model="g", prompt=LLM_LS_PROMPTS["qwen"], stop=qwen_stops, max_tokens=2)
    assert answer.choices[0].finish_reason in ("length", "stop")


def test_openai_huge_max_tokens_is_capped_and_a_wrong_token_is_refused(oai, server):
    assert oai.completions.create(model="g", prompt=BEFORE, max_tokens=10**9).usage.completion_tokens == CAP
    bad = openai.OpenAI(base_url=f"{server[0]}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        bad.completions.create(model="g", prompt=BEFORE)
    assert raised.value.body["type"] == "authentication_error"
    missing = httpx.get(f"{server[0]}/v1/nowhere", headers={"Authorization": "Bearer s3cret"})
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "Not Found"


@pytest.mark.parametrize("body, message", [
    ({"options": {"num_predict": 0}}, "options.num_predict"),
    ({"options": {"stop": ["x"] * 100}}, "options.stop"),
    ({"options": {"temperature": -1}}, "options.temperature"),
    ({"prompt": "<|fim_middle|>a<|fim_prefix|>b<|fim_suffix|>"}, "wrong order"),
    ({"options": {"num_predict": -7, "top_p": 2.0}}, "options.top_p"),
])
def test_ollama_bad_input_gets_an_ollama_error(olm, server, body, message):
    with pytest.raises(ollama.ResponseError) as raised:
        olm.generate(**{"model": "greencode", "prompt": BEFORE, "stream": False, **body})
    assert message in raised.value.error and 400 <= raised.value.status_code < 500
    bad = ollama.Client(host=server[0], headers={"Authorization": "Bearer nope"})
    with pytest.raises(ollama.ResponseError) as raised:
        bad.generate(model="greencode", prompt=BEFORE, stream=False)
    assert raised.value.status_code == 401 and "bearer token" in raised.value.error


def test_openai_stream_cancelled_when_the_client_goes_away(tiny):
    engine = EarlyExitEngine(tiny)
    with running_server(engine, serve_config(max_new_tokens_cap=2_000)) as (url, state):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
        stream = client.completions.create(model="g", prompt=BEFORE, max_tokens=2_000, stream=True)
        next(iter(stream))
        stream.close()
        stats = wait_for(lambda: (s := state.queue.snapshot()) and not s["running"] and s["cancelled"] and s)
        assert stats["tokens"] < 1_000
        with httpx.stream("POST", f"{url}/api/generate", timeout=60,
                          json={"model": "g", "prompt": BEFORE, "options": {"num_predict": 2_000}}) as response:
            next(response.iter_lines())
        stats = wait_for(lambda: (s := state.queue.snapshot()) and not s["running"] and s["cancelled"] == 2 and s)
        assert stats["served"] == 0


def _fim_model_dir(tmp_path, tiny):
    """The tiny llama with StarCoder's three FIM tokens added to its tokenizer (an HF directory)."""
    import copy

    tokenizer = copy.deepcopy(tiny.tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"]})
    model = copy.deepcopy(tiny.model)
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return str(tmp_path)


def test_a_model_with_fim_tokens_gets_its_own_fim_prompt(tmp_path, tiny):
    loaded = load_model(_fim_model_dir(tmp_path, tiny), device="cpu")
    engine = EarlyExitEngine(loaded)
    with running_server(engine, serve_config(max_new_tokens_cap=CAP)) as (url, _):
        assert httpx.get(f"{url}/info").json()["fim"].startswith("starcoder")
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
        raw = client.completions.with_raw_response.create(model="g", prompt=LLM_LS_PROMPTS["qwen"], max_tokens=4)
        assert raw.headers["x-greencode-fim"] == "model; request=qwen"  # any form in, the model's own form out
        answer = raw.parse()
        fim_ids = loaded.tokenizer(LLM_LS_PROMPTS["starcoder"], add_special_tokens=False)["input_ids"]
        expected = EarlyExitEngine(loaded).complete(fim_ids, max_new_tokens=4,
                                                            stop=["<fim_prefix>", "<fim_suffix>", "<fim_middle>"],
                                                            stop_rule=SuffixStop(BEFORE, AFTER))
        assert answer.choices[0].text == expected.text
        assert answer.usage.prompt_tokens == len(fim_ids)


def test_the_suffix_counts_toward_the_input_limit(oai):
    with pytest.raises(openai.APIStatusError) as raised:
        oai.completions.create(model="g", prompt="x" * 60_000, suffix="y" * 50_000, max_tokens=1)
    assert raised.value.status_code == 413 and "prompt and suffix together has 110000" in raised.value.body["message"]
