
import pytest
import torch

from greencode.model.adapters import adapter_for
from greencode.errors import GreencodeError
from greencode.model.load import load_model
from tests.cli import run_cli

CODE = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"


def _logits_by_hand(loaded, ids):
    adapter = loaded.adapter
    positions = torch.arange(ids.shape[1])[None]
    hidden = adapter.embed(ids, positions)
    context = adapter.layer_context(hidden, positions)
    for index in range(adapter.num_layers):
        hidden = adapter.run_layer(index, hidden, context, None)
    return adapter.logits(hidden)


def test_adapter_reproduces_the_models_own_logits(tiny_model):
    ids = tiny_model.tokenizer(CODE, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = tiny_model.model(ids).logits
        got = _logits_by_hand(tiny_model, ids)
    assert torch.allclose(got, expected, atol=1e-5)


def test_kv_projection_matches_what_attention_caches(tiny_model):
    """kv(i, h) must equal the keys/values layer i stores for input state h (state propagation relies on it)."""
    from transformers import DynamicCache

    ids = tiny_model.tokenizer(CODE, return_tensors="pt").input_ids
    adapter = tiny_model.adapter
    positions = torch.arange(ids.shape[1])[None]
    cache = DynamicCache(config=tiny_model.model.config)
    with torch.no_grad():
        hidden = adapter.embed(ids, positions)
        context = adapter.layer_context(hidden, positions)
        for index in range(adapter.num_layers):
            keys, values = adapter.kv(index, hidden, context)
            hidden = adapter.run_layer(index, hidden, context, cache)
            assert torch.allclose(keys, cache.layers[index].keys, atol=1e-5)
            assert torch.allclose(values, cache.layers[index].values, atol=1e-5)


def test_tiny_models_are_the_same_in_every_load():
    first = load_model("tiny-random-opt")
    second = load_model("tiny-random-opt")
    for a, b in zip(first.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)


def test_unsupported_architecture_is_named():
    from transformers import BertConfig, BertForMaskedLM

    model = BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, vocab_size=100))
    with pytest.raises(GreencodeError, match="unsupported architecture bert; supported: gpt2, llama"):
        adapter_for(model)


def test_missing_model_spec_fails_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GreencodeError, match="not a local directory"):
        load_model("no-such-org/no-such-model")
    with pytest.raises(GreencodeError, match="GGUF file not found"):
        load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(GreencodeError, match="not an HF model directory"):
        load_model(str(tmp_path))


def test_corrupt_gguf_fails_with_one_line(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(GreencodeError, match="not a GGUF file or truncated|not a readable GGUF model"):
        load_model(str(bad))


def test_saved_model_directory_loads_again(tmp_path, tiny_llama):
    tiny_llama.model.save_pretrained(tmp_path)
    tiny_llama.tokenizer.save_pretrained(tmp_path)
    again = load_model(str(tmp_path))
    assert again.num_layers == tiny_llama.num_layers
    for a, b in zip(again.model.parameters(), tiny_llama.model.parameters()):
        assert torch.equal(a, b)


def test_unwritable_cache_dir_falls_back_and_says_so(tmp_path, monkeypatch, capsys):
    from greencode.files.paths import cache_dir

    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    monkeypatch.setenv("GREENCODE_CACHE", str(blocked / "cache"))
    chosen = cache_dir()
    assert chosen != blocked / "cache" and chosen.is_dir()
    assert "not writable" in capsys.readouterr().err


def test_cli_errors_are_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "greencode.toml"
    bad.write_text("[agent\n")
    for args in (["--config", str(bad), "info"], ["info", "--model", str(tmp_path / "nope.gguf")]):
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
        assert result.stderr.startswith("greencode: error:")


@pytest.mark.integration
def test_default_model_has_30_layers_of_576(default_model):
    assert default_model.num_layers == 30
    assert default_model.hidden_size == 576
    assert default_model.adapter.arch == "llama"
    ids = default_model.tokenizer(CODE, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(_logits_by_hand(default_model, ids), default_model.model(ids).logits, atol=1e-4)


def test_the_shipped_adaptation_is_found_where_it_ships():
    from greencode.model.load import ASSETS, shipped_adaptation

    manifest = shipped_adaptation()  # {} when the path is wrong: the default model would load without its exits
    assert manifest and all((ASSETS / manifest[key]).is_file() for key in ("exit_maps", "agent", "shortlist"))
