"""LITE fine-tuning on tiny random models: the loss is eq. 1, training works, outputs reload and resume."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch
from transformers import TrainerCallback

from greencode.config import load_config, replace
from greencode.errors import GreencodeError
from greencode.exits.points import lite_weights
from greencode.model.load import load_model
from train.lite.finetune import CHECKPOINTS, LORA_ADAPTER, run_finetune
from train.lite.loss import lite_loss, measure_exits, sample_positions
from tests.cli import run_cli

FAST = {"batch_size": 4, "grad_accum": 1, "seq_len": 32, "learning_rate": 3e-3, "logging_steps": 5, "lora": False,
        "validation_tokens": 512, "save_steps": 1000}


def _corpus(tmp_path, files: int = 40):
    """A small, very regular Python corpus: enough signal for a tiny model to learn in a few dozen steps."""
    root = tmp_path / "corpus"
    root.mkdir()
    for i in range(files):
        body = "".join(f"def add_{j}(a, b):\n    return a + b\n\n" for j in range(i % 5, i % 5 + 6))
        (root / f"mod_{i}.py").write_text(body)
    return root


def _config(tmp_path, spec="tiny-random-llama", **finetune):
    config = load_config(None, {"model.spec": spec, "data.corpus": str(_corpus(tmp_path)),
                                "data.validation_fraction": 0.2, "data.test_fraction": 0.0})
    return replace(config, finetune={**FAST, **finetune})


def _by_hand(loaded, ids, weights, positions):
    """eq. 1 without the library: per layer, mean over positions of -log p(next token)."""
    model, adapter = loaded.model, loaded.adapter
    out = model(input_ids=ids, output_hidden_states=True)
    num_layers = loaded.num_layers
    total, norm = 0.0, 0.0
    for layer, weight in weights.items():
        picked = range(ids.shape[1] - 1) if layer == num_layers or positions is None else positions.tolist()
        terms = []
        for b in range(ids.shape[0]):
            for t in picked:
                if layer == num_layers:
                    logits = out.logits[b, t]
                else:
                    logits = adapter.lm_head(adapter.final_norm(out.hidden_states[layer][b, t]))
                terms.append(-torch.log_softmax(logits.float(), -1)[ids[b, t + 1]])
        total += weight * torch.stack(terms).mean()
        norm += weight
    return total / norm


@pytest.mark.parametrize("fraction", [1.0, 0.3])
def test_aggregated_loss_is_the_weighted_mean(tiny_model, fraction):
    torch.manual_seed(1)
    ids = torch.randint(0, 2000, (2, 12))
    points = [4, 6, 10]
    weights = lite_weights(tiny_model.num_layers, [3.0, 1.0, 0.5, 2.0], points)
    positions = sample_positions(11, fraction)
    with torch.no_grad():
        out = tiny_model.model(input_ids=ids, output_hidden_states=True)
        loss, per_layer = lite_loss(tiny_model.adapter, out.hidden_states, out.logits, ids, weights, positions)
        expected = _by_hand(tiny_model, ids, weights, positions)
    assert set(per_layer) == {4, 6, 10, 12}
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # The final layer's loss is the model's own LM loss.
    assert per_layer[12].item() == pytest.approx(tiny_model.model(input_ids=ids, labels=ids).loss.item(), rel=1e-5)


def test_position_subset_is_sorted_unique_and_sized():
    positions = sample_positions(100, 0.25, torch.Generator().manual_seed(0))
    assert len(positions) == 25 and positions.tolist() == sorted(set(positions.tolist()))
    assert sample_positions(100, 1.0) is None


def test_agreement_of_the_final_layer_with_itself(tiny_llama):
    chunks = torch.randint(0, 2000, (3, 16))
    measured = measure_exits(tiny_llama.model, tiny_llama.adapter, chunks, [4, 11])
    assert all(0.0 <= a <= 1.0 for a in measured["agreement"].values())
    # Layer 11 of 12 is one block from the end: it agrees far more often than layer 4.
    assert measured["agreement"][11] > measured["agreement"][4]
    assert set(measured["loss"]) == {4, 11, 12}


def test_training_on_labels_lowers_the_loss_and_raises_agreement(tmp_path):
    class KeepLogs(TrainerCallback):
        logs: list = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logs.append(dict(logs or {}))

    out = tmp_path / "lite"
    info = run_finetune(_config(tmp_path, targets="labels"), output=out, max_steps=12, callbacks=(KeepLogs(),),
                        echo=lambda _: None)
    training_logs = [entry for entry in KeepLogs.logs if "loss" in entry]
    assert training_logs and all(f"loss_layer_{layer}" in entry for entry in training_logs for layer in (4, 6, 10, 12))
    weights = {k: w for k, w in info["weights"].items()}
    aggregated = lambda losses: sum(weights[k] * losses[k] for k in weights)  # noqa: E731
    assert aggregated(info["validation_loss"]) < aggregated(info["validation_loss_before"]) - 1.0
    mean = lambda a: sum(a.values()) / len(a)  # noqa: E731
    assert mean(info["agreement_after"]) > mean(info["agreement_before"]) + 0.05
    assert info["steps"] == 12 and info["tokens_trained"] == 12 * 4 * 32
    assert info["exit_points"] == [4, 6, 10] and info["base_model"] == "tiny-random-llama"
    assert info["targets"] == "labels" and info["agreement_reference"] == "own final layer"

    # The output is an HF directory that greencode loads again, with its metadata.
    reloaded = load_model(str(out), device="cpu")
    assert reloaded.info["agreement_after"] == info["agreement_after"]
    chunks = torch.tensor([[int(t) for t in reloaded.tokenizer("def add_1(a, b):\n    return a + b\n" * 3)
                            ["input_ids"][:32]]])
    again = measure_exits(reloaded.model, reloaded.adapter, chunks, [4, 6, 10])
    assert again["loss"][12] < 6.0  # the trained model, not the random one (~10.8)
    assert not (out / ".saving-{}".format(os.getpid())).exists()
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))


def test_interrupt_saves_a_checkpoint_and_resume_continues(tmp_path):
    class CtrlCAtStep2(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 1:  # during the second step
                os.kill(os.getpid(), signal.SIGINT)  # the real signal, handled by the training run

    out = tmp_path / "lite"
    config = _config(tmp_path)
    stopped = run_finetune(config, output=out, max_steps=4, callbacks=(CtrlCAtStep2(),), echo=lambda _: None)
    assert stopped["interrupted"] and stopped["steps"] == 2
    assert (out / CHECKPOINTS / "checkpoint-2").is_dir() and not (out / "greencode.json").exists()
    with pytest.raises(GreencodeError, match="an interrupted run is here; pass --resume to continue it or --overwrite"):
        run_finetune(config, output=out, max_steps=4, echo=lambda _: None)
    with pytest.raises(GreencodeError, match="different settings .*seq_len"):
        run_finetune(replace(config, finetune={"seq_len": 16}), output=out, max_steps=4, resume=True,
                     echo=lambda _: None)
    with pytest.raises(GreencodeError, match=r"different settings \(targets, keep_final, teacher\)"):
        run_finetune(replace(config, finetune={"targets": "labels"}), output=out, max_steps=4, resume=True,
                     echo=lambda _: None)
    resumed = run_finetune(config, output=out, max_steps=4, resume=True, echo=lambda _: None)
    assert resumed["steps"] == 4 and resumed["tokens_trained"] == 4 * 4 * 32
    before = json.loads((out / "run.json").read_text())["agreement_before"]
    assert resumed["agreement_before"] == before  # measured once, before the first step


def test_lora_merges_and_keeps_the_adapter(tmp_path):
    from peft import PeftModel

    out = tmp_path / "lora"
    info = run_finetune(_config(tmp_path, lora=True, lora_rank=4, learning_rate=1e-2), output=out, max_steps=4,
                        echo=lambda _: None)
    assert info["lora"] == {"rank": 4, "alpha": 32}
    assert (out / LORA_ADAPTER / "adapter_model.safetensors").is_file()
    merged = load_model(str(out), device="cpu")
    assert not any("lora" in name for name, _ in merged.model.named_parameters())
    base = load_model("tiny-random-llama", device="cpu").model
    with_adapter = PeftModel.from_pretrained(base, str(out / LORA_ADAPTER)).eval()
    ids = torch.randint(0, 2000, (1, 10))
    with torch.no_grad():
        assert torch.allclose(with_adapter(input_ids=ids).logits, merged.model(input_ids=ids).logits, atol=1e-4)
        assert not torch.allclose(load_model("tiny-random-llama", device="cpu").model(input_ids=ids).logits,
                                  merged.model(input_ids=ids).logits, atol=1e-4)


@pytest.mark.parametrize("change, message", [
    ({"finetune": {"weights": [1.0, 2.0]}}, "finetune.weights has 2 values but there are 4 exits"),
    ({"data": {"corpus": "/no/such/corpus"}}, "does not exist"),
    ({"finetune": {"seq_len": 100000}}, "fewer than finetune.seq_len"),
    ({"finetune": {"grad_accum": 1000}}, r"train chunks of 32 tokens; one optimiser step needs 4000"),
])
def test_bad_input_is_one_clear_error(tmp_path, change, message):
    config = replace(_config(tmp_path), **change)
    with pytest.raises(GreencodeError, match=message):
        run_finetune(config, output=tmp_path / "out", max_steps=1, echo=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_resume_without_checkpoint_and_empty_corpus(tmp_path):
    with pytest.raises(GreencodeError, match="no checkpoint to resume"):
        run_finetune(_config(tmp_path), output=tmp_path / "none", resume=True, echo=lambda _: None)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.py").write_bytes(b"\xff\xfe\x00")
    config = load_config(None, {"model.spec": "tiny-random-llama", "data.corpus": str(empty)})
    with pytest.raises(GreencodeError, match=r"no usable .* \(1 skipped as not UTF-8\)"):
        run_finetune(config, output=tmp_path / "out", echo=lambda _: None)


def test_cli_refuses_an_existing_output_in_one_line(tmp_path):
    existing = tmp_path / "taken"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    result = run_cli("train", "finetune", "--model", "tiny-random-llama", "--output", str(existing))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"greencode: error: {existing}: already exists; pass --overwrite to replace it, or another --output"]
    assert (existing / "keep.txt").read_text() == "mine"
