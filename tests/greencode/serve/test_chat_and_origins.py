"""Issue 25 against a real server on loopback with the real `openai` and `ollama` clients: the chat routes,
bodies read as JSON whatever their Content-Type, the Origin rule (what a browser would send), TGI's
return_full_text default, the short model id, /api/ps, logprobs 0, and per-chunk joules that add up."""

from __future__ import annotations

import copy
import dataclasses
import json

import httpx
import ollama
import openai
import pytest

from greencode.config import load_config
from greencode.decoding.engine import EarlyExitEngine
from greencode.errors import GreencodeError
from greencode.serve.app import build_app
from tests.conftest import _load
from tests.greencode.serve.serve_server import PROMPT, running_server, serve_config, sse_events

CAP = 6
CHAT = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "Read a file's lines."}]


@pytest.fixture(scope="module")
def tiny():
    return _load("tiny-random-llama")


@pytest.fixture(scope="module")
def server(tiny):
    config = serve_config(max_new_tokens_cap=CAP, allowed_origins=["https://*.example.org"])
    with running_server(EarlyExitEngine(tiny), config) as (url, state):
        yield url, state


@pytest.fixture(scope="module")
def oai(server):
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def olm(server):
    return ollama.Client(host=server[0], timeout=60)


def _chat_expected(tiny, messages, **options):
    """What the engine completes for the conversation as the model's own chat template writes it."""
    text = tiny.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    return EarlyExitEngine(tiny).complete(ids, **options)


# -- chat routes ------------------------------------------------------------------------------------

def test_openai_chat_answers_the_assistants_turn_with_greencode_figures(oai, tiny):
    expected = _chat_expected(tiny, CHAT, policy="fixed:4", max_new_tokens=4)
    answer = oai.chat.completions.create(model="greencode", messages=CHAT, max_tokens=4,
                                         extra_body={"greencode": {"policy": "fixed:4"}})
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == expected.text != ""
    assert choice.finish_reason == "length" and answer.model == "greencode" and answer.object == "chat.completion"
    assert answer.usage.prompt_tokens == expected.prompt_tokens and answer.usage.completion_tokens == 4
    figures = answer.model_extra["greencode"]
    assert figures["exit_layers"] == [12, 4, 4, 4] and figures["joules_saved"] > 0  # the first: the prefill's


def test_openai_chat_streams_deltas_with_each_tokens_exit_layer(oai, tiny):
    expected = _chat_expected(tiny, CHAT, max_new_tokens=5)
    chunks = list(oai.chat.completions.create(model="greencode", messages=CHAT, max_tokens=5, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected.text
    assert [c.model_extra["greencode"]["exit_layer"] for c in chunks[:-1]] == [12] * 5
    last = chunks[-1]
    assert last.choices[0].finish_reason == "length" and last.usage.completion_tokens == 5
    assert last.model_extra["greencode"]["exit_layers"] == [12] * 5 and {c.model for c in chunks} == {"greencode"}


def test_a_chat_without_a_limit_runs_to_the_servers_cap_not_the_completion_default(oai, olm):
    # serve_config sets [engine].max_new_tokens = 4 (a line of code); a chat turn goes on to the cap (or EOS).
    assert oai.chat.completions.create(model="g", messages=CHAT).usage.completion_tokens == CAP
    assert olm.chat(model="g", messages=CHAT, stream=False).eval_count == CAP


def test_ollama_chat_streamed_and_not(olm, tiny):
    expected = _chat_expected(tiny, CHAT, max_new_tokens=4)
    answer = olm.chat(model="greencode", messages=CHAT, stream=False, options={"num_predict": 4})
    assert answer.message.role == "assistant" and answer.message.content == expected.text
    assert answer.done and answer.done_reason == "length" and answer.eval_count == 4
    assert answer.prompt_eval_count == expected.prompt_tokens and answer.model == "greencode"
    parts = list(olm.chat(model="greencode", messages=CHAT, stream=True, options={"num_predict": 4}))
    assert "".join(p.message.content for p in parts) == expected.text and parts[-1].done and not parts[0].done


def test_ollama_chat_lines_carry_the_figures(server):
    with httpx.stream("POST", f"{server[0]}/api/chat", timeout=60,
                      json={"model": "greencode", "messages": CHAT, "options": {"num_predict": 3}}) as response:
        lines = [json.loads(line) for line in response.iter_lines()]
    assert [line["greencode"]["exit_layer"] for line in lines[:-1]] == [12] * 3
    assert lines[-1]["greencode"]["exit_layers"] == [12] * 3 and lines[-1]["greencode"]["joules"] > 0


def test_a_chat_stop_sequence_is_never_streamed(oai, tiny):
    text = _chat_expected(tiny, CHAT, max_new_tokens=CAP).text
    stop = text[len(text) // 2: len(text) // 2 + 2]  # two characters inside the answer, likely across tokens
    plain = oai.chat.completions.create(model="g", messages=CHAT, max_tokens=CAP, stop=[stop]).choices[0].message
    streamed = list(oai.chat.completions.create(model="g", messages=CHAT, max_tokens=CAP, stop=[stop], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == plain.content == text[:text.index(stop)]


def _post(url, route, body, **headers):
    return httpx.post(f"{url}{route}", content=json.dumps(body).encode(), headers=headers, timeout=60)


ROUTES = {"/v1/chat/completions": lambda answer: answer["error"]["message"],
          "/api/chat": lambda answer: answer["error"]}


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize("messages, status, message", [
    ("hello", 422, "messages: Input should be a valid list"),
    ([], 422, "messages: List should have at least 1 item"),
    (["hello"], 422, "messages.0: Input should be"),
    ([{"role": "user"}], 422, "messages.0.content: Field required"),
    ([{"content": "hi"}], 422, "messages.0.role: Field required"),
    ([{"role": "wizard", "content": "hi"}], 422, "messages.0.role: 'wizard' is not a role"),
    ([{"role": "user", "content": "  "}], 422, "messages.0.content: is empty"),
    ([{"role": "user", "content": 7}], 422, "messages.0.content: must be text"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], 422, "only text parts"),
    ([{"role": "user", "content": "word " * 700}], 413, "the conversation has"),
])
def test_bad_conversations_get_one_error_in_the_routes_shape(server, route, messages, status, message):
    url, _ = server
    answer = _post(url, route, {"model": "greencode", "messages": messages})
    assert answer.status_code == status and message in ROUTES[route](answer.json()), answer.text
    assert httpx.get(f"{url}/health").json()["status"] == "ok"


def test_text_parts_are_one_message(oai, tiny):
    parts = [{"type": "text", "text": "Read a file's "}, {"type": "text", "text": "lines."}]
    answer = oai.chat.completions.create(model="g", max_tokens=3, messages=[CHAT[0], {"role": "user", "content": parts}])
    assert answer.choices[0].message.content == _chat_expected(tiny, CHAT, max_new_tokens=3).text


def test_a_model_without_a_chat_template_serves_completions_only(tiny):
    plain = dataclasses.replace(tiny, tokenizer=copy.deepcopy(tiny.tokenizer))
    plain.tokenizer.chat_template = None
    with running_server(EarlyExitEngine(plain), serve_config(max_new_tokens_cap=CAP)) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=60)
        with pytest.raises(openai.BadRequestError) as raised:
            client.chat.completions.create(model="greencode", messages=CHAT)
        assert "serves completions only" in raised.value.body["message"]
        with pytest.raises(ollama.ResponseError) as raised:
            ollama.Client(host=url).chat(model="greencode", messages=CHAT, stream=False)
        assert raised.value.status_code == 400 and "serves completions only" in raised.value.error
        assert client.completions.create(model="greencode", prompt=PROMPT, max_tokens=2).usage.completion_tokens == 2


# -- bodies whatever their Content-Type, and the Origin rule ------------------------------------------

@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_json_body_is_read_whatever_its_content_type(server, olm, content_type):
    url, _ = server
    headers = {"content-type": content_type} if content_type else {}
    body = {"model": "greencode", "prompt": PROMPT, "stream": False, "options": {"num_predict": 2}}
    answer = _post(url, "/api/generate", body, **headers)
    assert answer.status_code == 200 and answer.json()["eval_count"] == 2
    assert _post(url, "/generate", {"inputs": PROMPT}, **headers).status_code == 200
    assert olm.generate(model="greencode", prompt=PROMPT, stream=False, options={"num_predict": 2}).eval_count == 2


@pytest.mark.parametrize("route, shape, expected", [
    ("/generate", lambda a: a["error"], '"inputs"'),
    ("/v1/completions", lambda a: a["error"]["message"], '"prompt"'),
    ("/v1/chat/completions", lambda a: a["error"]["message"], '"messages"'),
    ("/api/generate", lambda a: a["error"], '"prompt"'),
    ("/api/chat", lambda a: a["error"], '"messages"'),
])
@pytest.mark.parametrize("content_type", ["text/plain", "application/json"])
def test_a_body_that_is_not_json_names_the_routes_body(server, route, shape, expected, content_type):
    answer = httpx.post(f"{server[0]}{route}", content=b"prompt=hello", headers={"content-type": content_type})
    message = shape(answer.json())
    assert answer.status_code == 422 and "not valid JSON" in message and expected in message, message


def test_a_foreign_page_is_refused_and_its_preflight_gets_no_allow_header(server):
    url, _ = server
    foreign = {"origin": "https://evil.example.com", "content-type": "text/plain"}
    body = {"model": "greencode", "prompt": PROMPT, "stream": False}
    posted = _post(url, "/api/generate", body, **foreign)
    assert posted.status_code == 403 and "evil.example.com" in posted.json()["error"]
    assert "access-control-allow-origin" not in posted.headers
    preflight = httpx.options(f"{url}/v1/chat/completions", headers={
        "origin": "https://evil.example.com", "access-control-request-method": "POST",
        "access-control-request-headers": "content-type"})
    assert preflight.status_code == 403 and "access-control-allow-origin" not in preflight.headers
    assert _post(url, "/generate", {"inputs": PROMPT}, origin="null").status_code == 403
    assert _post(url, "/generate", {"inputs": PROMPT}, origin="http://127.0.0.1.evil.com").status_code == 403
    assert _post(url, "/api/generate", body).status_code == 200  # no Origin: an editor, curl, a script


@pytest.mark.parametrize("origin", ["http://localhost:3000", "http://127.0.0.1", "http://[::1]:8080",
                                    "https://chat.example.org"])  # the last by [serve].allowed_origins
def test_loopback_and_allowed_pages_are_served_with_cors(server, origin):
    url, _ = server
    preflight = httpx.options(f"{url}/api/chat", headers={
        "origin": origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type"})
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == origin
    answer = _post(url, "/generate", {"inputs": PROMPT, "parameters": {"max_new_tokens": 1}}, origin=origin)
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == origin


def test_allowed_origins_that_are_not_origins_are_one_error(tiny):
    with pytest.raises(GreencodeError, match=r"\[serve\].allowed_origins: 'https://x.org/' is not an origin"):
        build_app(EarlyExitEngine(tiny), serve_config(allowed_origins=["https://x.org/"]), "full")


# -- TGI's defaults, the short id, /api/ps, logprobs 0, joules that add up --------------------------

def test_the_tgi_stream_never_shows_what_a_stop_sequence_cuts(server, tiny):
    url, _ = server
    text = EarlyExitEngine(tiny).complete(PROMPT, max_new_tokens=CAP).text
    stop = text[len(text) // 2: len(text) // 2 + 2]
    with httpx.stream("POST", f"{url}/generate_stream", timeout=60, json={
            "inputs": PROMPT, "parameters": {"max_new_tokens": CAP, "stop": [stop]}}) as response:
        events = sse_events(response.iter_lines())
    final = events[-1]["generated_text"]
    assert final == text[:text.index(stop)] and final == "".join(e["token"]["text"] for e in events)
    assert events[-1]["details"]["finish_reason"] == "stop_sequence"


def test_the_model_is_greencode_and_never_a_path(tmp_path, tiny):
    directory = tmp_path / "private-models" / "secret-location" / "my-model"
    tiny.model.save_pretrained(directory)
    tiny.tokenizer.save_pretrained(directory)
    from greencode.model.load import load_model

    engine = EarlyExitEngine(load_model(str(directory), device="cpu"))
    with running_server(engine, serve_config(max_new_tokens_cap=2, model_id="coder")) as (url, _):
        answers = [httpx.get(f"{url}/v1/models").json(), httpx.get(f"{url}/api/tags").json(),
                   httpx.get(f"{url}/api/ps").json(), httpx.get(f"{url}/info").json(),
                   _post(url, "/api/chat", {"messages": CHAT, "stream": False}).json(),
                   _post(url, "/v1/chat/completions", {"messages": CHAT}).json(),
                   _post(url, "/v1/completions", {"prompt": PROMPT}).json()]
    assert answers[0]["data"][0]["id"] == "coder" and answers[1]["models"][0]["name"] == "coder"
    assert answers[2]["models"][0]["model"] == "coder" and answers[3]["model_id"] == "coder"
    assert {answer["model"] for answer in answers[4:]} == {"coder"}
    assert all(str(tmp_path) not in json.dumps(answer) and "secret-location" not in json.dumps(answer)
               for answer in answers)


def test_api_ps_lists_the_loaded_model(olm):
    assert [m.model for m in olm.ps().models] == ["greencode"]


@pytest.mark.parametrize("logprobs", [0, None])
def test_logprobs_zero_or_null_is_taken_and_said_to_be_ignored(server, logprobs):
    body = {"model": "g", "prompt": PROMPT, "max_tokens": 1, "logprobs": logprobs}
    answer = _post(server[0], "/v1/completions", body)
    assert answer.status_code == 200 and answer.json()["greencode"]["ignored_parameters"] == ["logprobs"]
    chat = _post(server[0], "/v1/chat/completions", {"messages": CHAT, "max_tokens": 1, "logprobs": False})
    assert chat.status_code == 200 and chat.json()["greencode"]["ignored_parameters"] == ["logprobs"]


def test_chunk_joules_saved_add_up_to_the_total_even_when_negative(oai):
    # confidence:1 never exits and pays the exit head at every exit point: each token costs more than full depth.
    chunks = list(oai.completions.create(model="g", prompt=PROMPT, max_tokens=4, stream=True,
                                         extra_body={"greencode": {"policy": "confidence:1"}}))
    total = chunks[-1].model_extra["greencode"]["joules_saved"]
    per_token = [chunk.model_extra["greencode"]["joules_saved"] for chunk in chunks[:-1]]
    assert total < 0 and sum(per_token) == pytest.approx(total)


# -- one description of the model: `greencode info`, /info and the TUI ---------------------------------

def test_info_the_server_and_the_tui_describe_the_model_alike():
    from typer.testing import CliRunner

    from greencode.cli import app
    from greencode.runtime import engine_from_config
    from tui.engines import describe_engine

    printed = CliRunner().invoke(app, ["info", "--model", "tiny-random-llama", "--json"])
    assert printed.exit_code == 0, printed.output
    config = load_config(None, {"model.spec": "tiny-random-llama"})
    engine = engine_from_config(config, typed_text=True, shared_prefixes=True)  # as `greencode serve` builds it
    with running_server(engine, config) as (url, state):
        served = httpx.get(f"{url}/info").json()
    cli = json.loads(printed.output)
    shared = ("model", "architecture", "num_layers", "hidden_size", "exit_points", "exit_head", "energy_source", "fim",
              "lite_weights", "chat_template")
    assert {key: cli[key] for key in shared} == {key: served[key] for key in shared}
    panel = describe_engine(state.engine).splitlines()
    assert panel == [cli["model"], f"exits at {','.join(map(str, cli['exit_points']))} of {cli['num_layers']}",
                     f"exit head: {cli['exit_head']}"]


def test_serve_names_a_bad_allowed_origin_before_the_model_loads(tmp_path, monkeypatch, capsys):
    from greencode import cli

    config = tmp_path / "greencode.toml"
    config.write_text('[serve]\nallowed_origins = ["https://ok.example.org", "https://x.org/path"]\n')
    monkeypatch.setattr("sys.argv", ["greencode", "--config", str(config), "serve", "--model", "no-such-model"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("greencode: error: [serve].allowed_origins: 'https://x.org/path' is not an origin")


def test_the_packaged_default_chats_through_its_own_template(default_model):
    messages = [{"role": "user", "content": "Write a Python function that adds two numbers."}]
    assert "<|im_start|>" in default_model.tokenizer.chat_template  # SmolLM2-Instruct's ChatML
    with running_server(EarlyExitEngine(default_model), serve_config(), "confidence:0.9") as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
        answer = client.chat.completions.create(model="greencode", messages=messages, max_tokens=6)
    expected = _chat_expected(default_model, messages, policy="confidence:0.9", max_new_tokens=6)
    assert answer.choices[0].message.content == expected.text and "<|im_end|>" not in expected.text
    assert answer.usage.prompt_tokens == expected.prompt_tokens and answer.model_extra["greencode"]["exit_layers"] == list(expected.exit_layers)
