"""Self-distilling LITE on tiny random models: the loss, the teacher, its cache, CPU sizes, bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from greencode.config import replace
from greencode.errors import GreencodeError
from greencode.exits.points import lite_weights
from greencode.model.load import ASSETS, load_model
from tests.train.lite.test_finetune import _config as _any_config
from tests.train.lite.test_finetune import _corpus
from train.lite.finetune import RUN_JSON, run_finetune
from train.lite.loss import distill_loss, head_logits, measure_exits, sample_positions
from train.lite.schedule import step_size
from train.lite.teacher import Teacher, TeacherCache, open_or_build_cache
from tests.cli import run_cli


def _config(tmp_path, **finetune):
    """Exits over the whole vocabulary unless a test says otherwise (a shortlist shipped with the default
    model would otherwise apply to the tiny models, which share its tokenizer)."""
    return replace(_any_config(tmp_path, **finetune), exits={"shortlist": 0})


def _kl_by_hand(teacher_logits, student_logits):
    """KL(p || q) per position, averaged, written out with softmax sums."""
    p = torch.softmax(teacher_logits.double(), -1)
    q = torch.softmax(student_logits.double(), -1)
    return (p * (p.log() - q.log())).sum(-1).mean()


@pytest.mark.parametrize("fraction, use_shortlist", [(1.0, False), (0.4, False), (1.0, True), (0.5, True)])
def test_distill_loss_is_the_weighted_kl_plus_the_final_term(tiny_model, fraction, use_shortlist):
    torch.manual_seed(2)
    ids = torch.randint(0, 2000, (2, 10))
    points = [4, 6, 10]
    weights = lite_weights(tiny_model.num_layers, "geometric", points)
    positions = sample_positions(10, fraction)
    shortlist = torch.tensor(sorted(torch.randperm(2000)[:50].tolist())) if use_shortlist else None
    teacher_logits = torch.randn(2, 10, tiny_model.model.config.vocab_size) * 3
    with torch.no_grad():
        out = tiny_model.model(input_ids=ids, output_hidden_states=True)
        loss, per_layer = distill_loss(tiny_model.adapter, out.hidden_states, out.logits, teacher_logits, weights,
                                       keep_final=0.7, positions=positions, shortlist=shortlist)
    picked = list(range(10)) if positions is None else positions.tolist()
    expected = {12: _kl_by_hand(teacher_logits, out.logits)}
    for layer in points:
        exit_logits = tiny_model.adapter.lm_head(tiny_model.adapter.final_norm(out.hidden_states[layer][:, picked]))
        target = teacher_logits[:, picked]
        if shortlist is not None:  # both distributions renormalised over the shortlist
            exit_logits, target = exit_logits[..., shortlist], target[..., shortlist]
        expected[layer] = _kl_by_hand(target, exit_logits)
    for layer, value in expected.items():
        assert per_layer[layer].item() == pytest.approx(value.item(), rel=1e-4, abs=1e-6)
    total = sum(weights[layer] * expected[layer] for layer in weights) / sum(weights.values()) + 0.7 * expected[12]
    assert loss.item() == pytest.approx(total.item(), rel=1e-4)


def test_the_final_term_is_zero_for_a_teacher_equal_to_the_student(tiny_llama):
    ids = torch.randint(0, 2000, (1, 8))
    teacher = Teacher(load_model("tiny-random-llama", device="cpu").model, "copy")
    with torch.no_grad():
        out = tiny_llama.model(input_ids=ids, output_hidden_states=True)
        _, per_layer = distill_loss(tiny_llama.adapter, out.hidden_states, out.logits, teacher.logits(ids),
                                    lite_weights(12, "uniform", [4]), keep_final=1.0)
    assert per_layer[12].item() == pytest.approx(0.0, abs=1e-5) and per_layer[4].item() > 0.01


def test_shortlist_head_is_the_rows_of_the_full_head(tiny_model):
    hidden = torch.randn(2, 3, tiny_model.hidden_size)
    ids = torch.tensor([5, 17, 900, 1999])
    with torch.no_grad():
        assert torch.allclose(head_logits(tiny_model.adapter, hidden, ids),
                              tiny_model.adapter.logits(hidden)[..., ids], atol=1e-5)


def test_agreement_against_a_reference_and_over_a_shortlist(tiny_llama):
    chunks = torch.randint(0, 2000, (2, 12))
    own = measure_exits(tiny_llama.model, tiny_llama.adapter, chunks, [4, 11])
    same = measure_exits(tiny_llama.model, tiny_llama.adapter, chunks, [4, 11],
                         reference=lambda ids: tiny_llama.model(input_ids=ids).logits)
    assert same["agreement"] == own["agreement"] and same["final_agreement"] == 1.0
    # A shortlist of one token: every exit says that token, so it agrees exactly where the final layer does.
    final_top1 = tiny_llama.model(input_ids=chunks).logits[:, :-1].argmax(-1)
    token = int(final_top1.flatten().mode().values)
    one = measure_exits(tiny_llama.model, tiny_llama.adapter, chunks, [4], shortlist=torch.tensor([token]))
    assert one["agreement"][4] == pytest.approx((final_top1 == token).float().mean().item())


def test_distillation_raises_agreement_with_the_teacher_and_keeps_full_depth(tmp_path):
    out = tmp_path / "lite"
    lines = []
    # keep_final 1, not the default 100: a random model's final layer is nearly flat, and a guard that strong
    # leaves its exits too little room in 24 steps.
    info = run_finetune(_config(tmp_path, learning_rate=2e-3, keep_final=1.0), output=out, max_steps=24,
                        echo=lines.append)
    assert info["targets"] == "distill" and info["agreement_reference"] == "teacher final layer"
    assert info["teacher"] == "tiny-random-llama (frozen at the start)" and info["keep_final"] == 1.0
    for layer in ("4", "6", "10"):
        assert info["agreement_after"][layer] > info["agreement_before"][layer] + 0.03, layer
    # A random model's final distribution is nearly flat, so its top-1 flips easily; on a real model it holds.
    assert info["final_agreement_before"] == 1.0 and info["final_agreement_after"] > 0.3
    assert set(info["by_language_after"]) == {"python"}
    assert any(line.startswith("step 1/24") and "tokens/s" in line and "ETA" in line for line in lines)
    assert json.loads((out / "greencode.json").read_text())["agreement_after"] == info["agreement_after"]


def test_teacher_with_another_vocabulary_is_refused(tmp_path):
    other = load_model("tiny-random-llama", device="cpu")
    other.tokenizer.add_tokens(["<not-in-the-student>"])
    other.model.resize_token_embeddings(len(other.tokenizer))
    other.model.save_pretrained(tmp_path / "other")
    other.tokenizer.save_pretrained(tmp_path / "other")
    config = replace(_config(tmp_path), finetune={"teacher": str(tmp_path / "other")})
    with pytest.raises(GreencodeError, match=r"finetune.teacher: .*other has another tokenizer or vocabulary"):
        run_finetune(config, output=tmp_path / "out", max_steps=1, echo=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_cpu_sizes_apply_only_where_unset():
    auto = SimpleNamespace(batch_size=0, grad_accum=0, max_steps=0, seq_len=256, lora="auto", lora_rank=16,
                           learning_rate=0.0)
    cpu = step_size(auto, on_gpu=False)
    assert (cpu.batch_size, cpu.grad_accum, cpu.max_steps, cpu.lora, cpu.learning_rate) == (2, 4, 100, True, 3e-4)
    assert cpu.notes[0] == ("CPU: batch 2 x accum 4 x 256 tokens per step; the paper's 4 x 32 is for GPUs, "
                            "set [finetune] to override")
    assert cpu.notes[2].startswith("CPU: LoRA rank 16 on every linear layer")
    gpu = step_size(auto, on_gpu=True)  # the paper's: all weights at 1e-5
    assert (gpu.batch_size, gpu.grad_accum, gpu.max_steps, gpu.notes, gpu.lora, gpu.learning_rate) == (
        4, 32, -1, (), False, 1e-5)
    chosen = step_size(SimpleNamespace(batch_size=8, grad_accum=2, max_steps=-1, seq_len=64, lora=False, lora_rank=16,
                                       learning_rate=2e-5), on_gpu=False, max_steps=5)
    assert (chosen.batch_size, chosen.grad_accum, chosen.max_steps, chosen.notes, chosen.lora, chosen.learning_rate) == (
        8, 2, 5, (), False, 2e-5)
    lora_on_gpu = step_size(SimpleNamespace(**{**vars(auto), "lora": True}), on_gpu=True)
    assert (lora_on_gpu.lora, lora_on_gpu.learning_rate) == (True, 3e-4)


def test_finetune_lora_takes_true_false_or_auto():
    from greencode.config import load_config

    assert load_config(overrides={"finetune.lora": True}).finetune.lora is True
    assert load_config(overrides={}).finetune.lora == "auto"
    for bad, shown in (("yes", "'yes' is not allowed; choose one of: auto, true, false"), (1, "must be bool or str, got int 1")):
        with pytest.raises(GreencodeError, match=shown):
            load_config(overrides={"finetune.lora": bad})


def test_the_teacher_cache_gives_the_live_teachers_logits_and_is_reused(tmp_path, tiny_llama):
    teacher = Teacher(load_model("tiny-random-llama", device="cpu").model, "tiny")
    chunks = torch.randint(0, 2000, (70, 8))  # two shards
    cache = open_or_build_cache(tmp_path / "cache", teacher, chunks, echo=lambda _: None)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "manifest.json", "states-00000.safetensors", "states-00001.safetensors"]
    teacher.cache = cache
    picked = torch.tensor([3, 69, 64])
    cached = teacher.logits(chunks[picked], picked)
    live = Teacher(teacher.model, "tiny").logits(chunks[picked])
    assert torch.allclose(cached, live, atol=0.05, rtol=0.01)
    assert (cached.argmax(-1) == live.argmax(-1)).float().mean() > 0.95
    lines = []
    open_or_build_cache(tmp_path / "cache", teacher, chunks, echo=lines.append)
    assert lines == ["teacher cache: reusing " + str(tmp_path / "cache") + " (70 chunks)"]
    with pytest.raises(GreencodeError, match="was built for another run \\(chunks, fingerprint differ\\)"):
        open_or_build_cache(tmp_path / "cache", teacher, chunks[:60], echo=lambda _: None)


def test_ctrl_c_while_caching_the_teacher_leaves_nothing(tmp_path):
    teacher = Teacher(load_model("tiny-random-llama", device="cpu").model, "tiny")

    def ctrl_c_after_the_first_shard(line):
        if line.startswith("teacher cache: 64/"):
            os.kill(os.getpid(), signal.SIGINT)  # the real signal, raised as KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        open_or_build_cache(tmp_path / "cache", teacher, torch.randint(0, 2000, (200, 8)),
                            echo=ctrl_c_after_the_first_shard)
    assert list(tmp_path.iterdir()) == []


def test_training_from_the_teacher_cache(tmp_path):
    config = _config(tmp_path, teacher_cache=str(tmp_path / "teacher"))
    info = run_finetune(config, output=tmp_path / "lite", max_steps=3, echo=lambda _: None)
    manifest = json.loads((tmp_path / "teacher" / "manifest.json").read_text())
    assert manifest["chunks"] == 3 * 4 and info["steps"] == 3  # only the chunks the run reads
    assert TeacherCache(tmp_path / "teacher", manifest).states(torch.tensor([0, 11])).shape == (2, 32, 64)


def test_cli_says_the_cpu_sizes_and_ctrl_c_during_teacher_caching_is_one_line(tmp_path):
    corpus = _corpus(tmp_path, files=150)
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "greencode.cli", "train", "finetune", "--model", "tiny-random-llama",
               "--corpus", str(corpus), "--output", str(tmp_path / "out"), "--max-steps", "3000",
               "--finetune.seq_len", "8", "--model.device", "cpu",  # batch and accumulation left to the CPU rule
               "--finetune.teacher_cache", str(tmp_path / "teacher"), "--finetune.validation_tokens", "64"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "teacher cache: 64/" in line:
            process.send_signal(signal.SIGINT)
            break
    rest = process.communicate(timeout=120)[1]
    assert process.returncode == 130, "".join(seen) + rest
    assert seen[0].strip() == ("greencode train finetune: CPU: batch 2 x accum 4 x 8 tokens per step; the paper's "
                               "4 x 32 is for GPUs, set [finetune] to override")
    assert rest.strip().splitlines()[-1] == (
        "greencode train finetune: interrupted before training started; nothing half-written was left")
    assert "Traceback" not in rest
    assert not (tmp_path / "teacher").exists() and not list(tmp_path.glob("teacher.partial-*"))
    assert not (tmp_path / "out" / RUN_JSON).exists()


def test_labels_ignore_the_teacher_settings(tmp_path):
    """targets = labels is eq. 1: no teacher is loaded, even a bad one."""
    config = replace(_config(tmp_path), finetune={"targets": "labels", "teacher": "/no/such/teacher"})
    info = run_finetune(config, output=tmp_path / "out", max_steps=1, echo=lambda _: None)
    assert info["teacher"] is None and info["keep_final"] is None



def test_the_exit_shortlist_is_the_models_own_or_the_shipped_one_for_its_tokenizer(tmp_path):
    import dataclasses

    from train.lite.finetune import exit_shortlist

    loaded = load_model("tiny-random-llama", device="cpu")
    own = dataclasses.replace(loaded, info={"shortlist": torch.tensor([7, 3, 11, 5])})
    config = _any_config(tmp_path)  # [exits].shortlist = -1: the model's own
    assert exit_shortlist(config, own).tolist() == [7, 3, 11, 5]
    assert exit_shortlist(replace(config, exits={"shortlist": 2}), own).tolist() == [7, 3]
    assert exit_shortlist(replace(config, exits={"shortlist": 0}), own) is None
    # No shortlist of its own: the shipped default's, which belongs to the same tokenizer.
    from greencode.model.load import ASSETS, shipped_adaptation
    from greencode.exits.shortlist import load_shortlist

    shipped = load_shortlist(ASSETS / shipped_adaptation()["shortlist"], loaded.tokenizer)
    no_own = dataclasses.replace(loaded, info={"shortlist": None})
    assert exit_shortlist(replace(config, exits={"shortlist": 8}), no_own).tolist() == shipped[:8].tolist()
    assert exit_shortlist(config, no_own).tolist() == shipped.tolist()


def test_distillation_over_a_shortlist(tmp_path, monkeypatch):
    import train.lite.finetune

    (tmp_path / "ids").mkdir()
    tiny = load_model("tiny-random-llama", device="cpu")
    ids = torch.tensor([tiny.tokenizer((_corpus(tmp_path / "ids") / "mod_0.py").read_text() * 4)["input_ids"]])
    with torch.no_grad():  # the teacher's (random) top-1 tokens on this code, and some others
        teacher_top1 = set(tiny.model(input_ids=ids).logits.argmax(-1).flatten().tolist())
    shortlist = torch.tensor(sorted(teacher_top1 | set(range(1000, 1200))))
    monkeypatch.setattr(train.lite.finetune, "exit_shortlist", lambda config, loaded: shortlist)
    info = run_finetune(_config(tmp_path, learning_rate=2e-3, keep_final=1.0), output=tmp_path / "lite", max_steps=12,
                        echo=lambda _: None)
    assert info["shortlist"] == len(shortlist)
    mean = lambda a: sum(a.values()) / len(a)  # noqa: E731
    assert mean(info["agreement_after"]) > mean(info["agreement_before"]) + 0.03


def test_the_step_benchmark_times_every_variant_in_one_run(tmp_path):
    from train.lite.bench import run_step_benchmark

    lines = []
    result = run_step_benchmark(_config(tmp_path, seq_len=16, batch_size=2), rounds=1, echo=lines.append)
    assert [(r["targets"], r["exit_head"], r["weights"]) for r in result["rows"]] == [
        ("labels", "full", "full"), ("distill", "full", "full"), ("distill", "shortlist", "full"),
        ("labels", "full", "LoRA"), ("distill", "full", "LoRA"), ("distill", "shortlist", "LoRA")]
    assert all(r["tokens_per_s"] > 0 for r in result["rows"]) and result["rows"][0]["vs_labels_full_head_full_weights"] == 1.0
    assert result["shortlist_source"] == "the chunks' most frequent" and 0 < result["shortlist_tokens"] <= 8192
    assert lines[-1] == "round 1/1 done"


def test_train_default_from_a_lite_model_records_its_run(tmp_path):
    from tests.train.assets.test_recipe import TINY_RECIPE, tiny_config, two_language_corpus
    from tests.train.lite.test_finetune import FAST
    from train.assets.recipe import build_default

    config = tiny_config(two_language_corpus(tmp_path / "corpus"))
    lite = tmp_path / "lite"
    run_finetune(replace(config, model={"spec": "tiny-random-llama"}, finetune=FAST), output=lite, max_steps=2,
                 echo=lambda _: None)
    manifest = build_default(config, tmp_path / "build", TINY_RECIPE, log=lambda _: None, spec=str(lite))
    assert manifest["lite"]["model"] == str(lite) and manifest["lite"]["steps"] == 2
    assert manifest["lite"]["targets"] == "distill" and set(manifest["lite"]["by_language_after"]) == {"python", "java"}
    assert manifest["recipe"]["command"] == f"greencode train default --from {lite}"
    assert json.loads((tmp_path / "build" / "manifest.json").read_text())["lite"] == manifest["lite"]


def _greencode(*args: str):
    return run_cli(*args)


def test_a_lite_model_loads_the_build_installed_into_its_folder(tmp_path):
    """`train default --from DIR --install` puts the build into DIR/adaptation, and `--model DIR` uses it."""
    from tests.train.assets.test_recipe import TINY_RECIPE, tiny_config, two_language_corpus
    from tests.train.lite.test_finetune import FAST
    from train.assets.recipe import build_default, check_fits

    config = tiny_config(two_language_corpus(tmp_path / "corpus"))
    lite = tmp_path / "lite"
    run_finetune(replace(config, model={"spec": "tiny-random-llama"}, finetune=FAST), output=lite, max_steps=2,
                 echo=lambda _: None)
    assert load_model(str(lite), device="cpu").adapter.exit_maps is None  # nothing installed yet
    build_default(config, tmp_path / "build", TINY_RECIPE, log=lambda _: None, spec=str(lite))
    # A build goes only into the model it was calibrated on: not into the shipped default (checked in-process:
    # the command would write greencode/assets/), nor into another model's folder.
    with pytest.raises(GreencodeError, match=f"built on {lite}, not default-base"):
        check_fits(tmp_path / "build", None)
    shipped_before = sorted(path.name for path in ASSETS.iterdir())
    shutil.copytree(lite, tmp_path / "lite2", ignore=shutil.ignore_patterns("checkpoints"))
    refused = _greencode("train", "default", "--from", str(tmp_path / "lite2"), "--output", str(tmp_path / "build"),
                         "--install-only")
    assert refused.returncode == 2 and f"built on {lite}, not {tmp_path / 'lite2'}" in refused.stderr
    assert not (tmp_path / "lite2" / "adaptation").exists()
    assert sorted(path.name for path in ASSETS.iterdir()) == shipped_before
    installed = _greencode("train", "default", "--from", str(lite), "--output", str(tmp_path / "build"), "--install-only")
    assert installed.returncode == 0, installed.stderr
    assert (lite / "adaptation" / "manifest.json").is_file()

    loaded = load_model(str(lite), device="cpu")
    assert loaded.adapter.exit_maps is not None and loaded.name == f"{lite} + its exit maps"
    assert Path(loaded.info["agent_path"]).parent == lite / "adaptation"
    assert loaded.info["base_model"] == "tiny-random-llama"  # greencode.json is read beside the adaptation
    assert len(loaded.info["shortlist"]) == TINY_RECIPE.shortlist
    assert load_model(str(lite), device="cpu", adaptation=False).adapter.exit_maps is None
    from greencode.config import load_config
    from greencode.info import model_info

    facts = model_info(replace(load_config(None), model={"spec": str(lite)}))
    lite_run = json.loads((lite / "greencode.json").read_text())
    assert facts["agreement_after"] == lite_run["agreement_after"]  # the fine-tuning's figures, not the maps'
    assert facts["maps_agreement_after"] == json.loads((lite / "adaptation" / "manifest.json").read_text())[
        "adaptation"]["agreement_after"]
    code = str(tmp_path / "corpus" / "py" / "files" / "atomic.py")
    completed = _greencode("complete", code, "--model", str(lite), "--policy", "agent:0.5", "--max-new-tokens", "4")
    assert completed.returncode == 0, completed.stderr
    assert "no exit agent" not in completed.stderr  # no fallback note: the model's own agent was found

    (lite / "adaptation" / "manifest.json").write_text("{not json")
    damaged = _greencode("complete", code, "--model", str(lite), "--max-new-tokens", "2")
    assert damaged.returncode == 2 and len(damaged.stderr.strip().splitlines()) == 1, damaged.stderr
    assert "adaptation/manifest.json: unreadable" in damaged.stderr and "--install" in damaged.stderr


@pytest.mark.parametrize("extra, message", [
    (["--install"], "not a model directory (no config.json)"),
    ([], "not a model directory (no config.json)"),
])
def test_train_default_from_bad_input_is_one_line(tmp_path, extra, message):
    (tmp_path / "lite").mkdir()
    result = run_cli("train", "default", "--from", str(tmp_path / "lite"), "--output", str(tmp_path / "build"), *extra)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert not (tmp_path / "build").exists()


def test_a_bounded_run_tokenises_only_a_sample_of_the_corpus(tmp_path):
    from train.lite.finetune import prepare_data

    config = _config(tmp_path)
    tokenizer = load_model("tiny-random-llama", device="cpu").tokenizer
    everything, _, _ = prepare_data(config, tokenizer, 4)
    bounded, validation, _ = prepare_data(config, tokenizer, 4, max_steps=1)
    assert 4 <= len(bounded) < len(everything)
    assert validation["python"].shape[1] == 32
