"""Trajectories in batches: greedy continuations of many prompts at once, with every exit point's state.

The engine records a trajectory one token at a time (~14 tokens/s on one CPU core). Here the same greedy,
full-depth continuations come out of HF `generate` on a left-padded batch, with `output_hidden_states`:
at each step the state after layer l of the token being decided is exactly what full-depth decoding
sees at exit point l (the first token comes out of the prefill's last position, as in the engine).
Contexts are cut as in train/agent/trajectories.py (a uniform fraction of a file), nearest the cut.

The raw states are kept (float16) so the labels can be computed later through whatever exit maps and
shortlist head decoding will use: `to_trajectory_cache` turns them into the agent's TrajectoryCache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from train.assets.calibration import LANGUAGES, progress_line
from train.agent.trajectories import CONTEXT_FRACTION, TrajectoryCache, context_range


@dataclass
class RawTrajectories:
    exits: dict[int, "torch.Tensor"]  # layer -> (N, d) float16 raw hidden state of each generated token
    final_top1: "torch.Tensor"  # (N,) int64: the token full depth chose
    sample: "torch.Tensor"  # (N,) int64: which prompt it continues (tokens of one sample are contiguous)
    language: "torch.Tensor"  # (N,) int64: index into LANGUAGES
    sources: list  # per sample: {"file", "language", "context": [start, stop], "tokens"}

    def save(self, path, meta: dict):
        import json

        from safetensors.torch import save_file

        from greencode.files.atomic import atomic_write

        tensors = {f"exit.{p}": h.contiguous() for p, h in self.exits.items()}
        tensors.update(final_top1=self.final_top1, sample=self.sample, language=self.language)
        metadata = {"meta": json.dumps(meta), "sources": json.dumps(self.sources)}
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    @classmethod
    def load(cls, path) -> tuple["RawTrajectories", dict]:
        import json

        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
        exits = {int(k.split(".")[1]): v for k, v in tensors.items() if k.startswith("exit.")}
        return cls(dict(sorted(exits.items())), tensors["final_top1"], tensors["sample"], tensors["language"],
                   json.loads(metadata["sources"])), json.loads(metadata["meta"])


def _prompts(files_by_language: dict[str, list], tokenizer, samples_per_language: int, max_context: int,
             seed: int) -> list[tuple[str, str, int, list[int]]]:
    """(language, path, start, ids) per sample, languages alternating, files drawn without replacement."""
    rng = np.random.default_rng(seed)
    per_language = []
    for language, files in files_by_language.items():
        chosen = []
        for index in rng.permutation(len(files)):
            file = files[int(index)]
            ids = tokenizer(file.text, add_special_tokens=False)["input_ids"]
            if len(ids) < 8:
                continue
            start, stop = context_range(len(ids), rng, CONTEXT_FRACTION, max_context)
            chosen.append((language, file.path, start, ids[start:stop]))
            if len(chosen) == samples_per_language:
                break
        per_language.append(chosen)
    return [p for group in zip(*per_language) for p in group]


def generate_trajectories(loaded, files_by_language: dict[str, list], exit_points: list[int],
                          samples_per_language: int, tokens_per_sample: int, max_context: int = 128,
                          batch_size: int = 32, seed: int = 0, log=print) -> RawTrajectories:
    import torch

    model, tokenizer = loaded.model, loaded.tokenizer
    prompts = _prompts(files_by_language, tokenizer, samples_per_language, max_context, seed)
    prompts.sort(key=lambda p: len(p[3]))  # similar lengths per batch: less padding
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    exits: dict[int, list] = {p: [] for p in exit_points}
    final, sample, language, sources = [], [], [], []
    started, done_tokens, total_tokens = time.perf_counter(), 0, len(prompts) * tokens_per_sample
    last_log = 0.0
    for batch_start in range(0, len(prompts), batch_size):
        batch = prompts[batch_start:batch_start + batch_size]
        width = max(len(p[3]) for p in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (_, _, _, ids) in enumerate(batch):
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            mask[row, width - len(ids):] = 1
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=tokens_per_sample,
                                 do_sample=False, pad_token_id=pad,
                                 eos_token_id=eos, return_dict_in_generate=True, output_hidden_states=True)
        generated = out.sequences[:, width:]  # (B, T)
        steps = out.hidden_states  # per step: (embeddings, layer 1, ..., layer L) each (B, seq, d)
        for row, (lang, path, start, ids) in enumerate(batch):
            tokens = generated[row].tolist()
            keep = tokens.index(eos) + 1 if eos in tokens else len(tokens)  # stop after EOS, as the engine does
            for step in range(keep):
                for p in exit_points:
                    exits[p].append(steps[step][p][row, -1].to(torch.float16))
            final.append(generated[row, :keep])
            sample.append(torch.full((keep,), len(sources)))
            language.append(torch.full((keep,), LANGUAGES.index(lang)))
            sources.append({"file": path, "language": lang, "context": [start, start + len(ids)], "tokens": keep})
        done_tokens += len(batch) * tokens_per_sample
        if time.perf_counter() - last_log > 30 or batch_start + batch_size >= len(prompts):
            last_log = time.perf_counter()
            log(progress_line("generating trajectories", done_tokens, total_tokens, started))
    return RawTrajectories({p: torch.stack(v) for p, v in exits.items()}, torch.cat(final), torch.cat(sample),
                           torch.cat(language), sources)


def to_trajectory_cache(raw: RawTrajectories, loaded, maps, head, batch: int = 1024) -> TrajectoryCache:
    """The agent's cache: observations as agent_observation makes them (from the raw state), and each exit's
    token as decoding picks it: through the exit map, then `head` (train.assets.exit_maps.ExitHead: the shortlist)."""
    import torch

    from greencode.exits.agent import agent_observation

    adapter = loaded.adapter
    points = list(raw.exits)
    n, d = raw.final_top1.shape[0], next(iter(raw.exits.values())).shape[1]
    observations = np.zeros((n, len(points), d), np.float32)
    exit_top1 = np.zeros((n, len(points)), np.int64)
    with torch.inference_mode():
        for e, p in enumerate(points):
            for start in range(0, n, batch):
                h = raw.exits[p][start:start + batch].float()
                observations[start:start + batch, e] = agent_observation(adapter, h).reshape(h.shape).numpy()
                exit_top1[start:start + batch, e] = head.top1(maps(p, h) if maps is not None else h).numpy()
    return TrajectoryCache(observations, exit_top1, raw.final_top1.numpy().astype(np.int64),
                           raw.sample.numpy().astype(np.int64), tuple(points), loaded.num_layers, loaded.name,
                           {"generation": "greedy, full depth, HF generate in batches (train/agent/batched_trajectories.py)",
                            "sample_sources": raw.sources})
