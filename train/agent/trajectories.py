"""The trajectory cache: what the engine saw at every exit point of every generated token.

The paper's environment generated T tokens with the LLM inside each reset. Here that work happens
once, up front: for each sampled file, a context cut (uniform in [0.2, 0.6] of its tokens, at most
512 tokens, nearest the cut) is completed greedily at full depth by the engine with `record=True`,
and each token's observations (exactly what `agent:T` sees) and top-1 tokens are stored. The
environment then replays them and never runs the LLM.

On disk: `manifest.json` (model, exit points, observation form, shard list) and npz shards with
  observations (tokens, exit points, obs dim) float32 - the agent's input at each exit point
  exit_top1    (tokens, exit points) int64    - top-1 token decoded at each exit point
  final_top1   (tokens,) int64                - top-1 token of the final layer (the ground truth y)
  sample       (tokens,) int64                - which sample (episode) a token belongs to
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from greencode.files.atomic import atomic_write
from greencode.errors import GreencodeError

MANIFEST = "manifest.json"
FORMAT = "greencode-trajectories/1"
OBSERVATION_FORM = "greencode.exits.agent.agent_observation: final norm of the hidden state at the exit point, float32"
CONTEXT_FRACTION = (0.2, 0.6)  # paper IV-F: context share of a file, uniform
MAX_CONTEXT_TOKENS = 512  # nearest the cut
SHARD_TOKENS = 4096  # tokens per shard file


@dataclass(frozen=True)
class TrajectoryCache:
    """Replayable per-token, per-exit-point records; the tokens of one sample are contiguous."""

    observations: np.ndarray  # (N, E, D) float32
    exit_top1: np.ndarray  # (N, E) int64
    final_top1: np.ndarray  # (N,) int64
    sample: np.ndarray  # (N,) int64, non-decreasing
    exit_points: tuple[int, ...]  # E exit layers, ascending, below num_layers
    num_layers: int
    model_name: str = ""
    manifest: dict = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return int(self.final_top1.shape[0])

    @property
    def num_exits(self) -> int:
        return len(self.exit_points)

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[2])

    @property
    def correct(self) -> np.ndarray:
        """(N, E) bool: the exit point's top-1 equals the final layer's."""
        return self.exit_top1 == self.final_top1[:, None]

    @property
    def optimal_positions(self) -> np.ndarray:
        """(N,) l_opt as an exit-point index: the first exit point that agrees, else E (the final layer)."""
        correct = self.correct
        return np.where(correct.any(axis=1), correct.argmax(axis=1), self.num_exits)

    def layer_of(self, positions: np.ndarray) -> np.ndarray:
        """Exit-point indices (E = the final layer) -> layer numbers 1..L."""
        layers = np.asarray([*self.exit_points, self.num_layers])
        return layers[np.asarray(positions)]

    def sample_bounds(self) -> list[tuple[int, int]]:
        """[start, stop) token range of each sample, in order."""
        if self.num_tokens == 0:
            return []
        starts = np.flatnonzero(np.r_[True, self.sample[1:] != self.sample[:-1]])
        stops = np.r_[starts[1:], self.num_tokens]
        return list(zip(starts.tolist(), stops.tolist()))

    def split(self, held_out_fraction: float, seed: int) -> tuple["TrajectoryCache", "TrajectoryCache"]:
        """(train, held-out) by whole samples, chosen by seed; held-out is empty when there is one sample."""
        samples = np.unique(self.sample)
        rng = np.random.default_rng(seed)
        n_held = 0
        if len(samples) > 1 and held_out_fraction > 0:
            n_held = min(len(samples) - 1, max(1, int(round(len(samples) * held_out_fraction))))
        held = rng.permutation(samples)[:n_held]
        mask = np.isin(self.sample, held)
        return self._subset(~mask), self._subset(mask)

    def _subset(self, mask: np.ndarray) -> "TrajectoryCache":
        return TrajectoryCache(self.observations[mask], self.exit_top1[mask], self.final_top1[mask],
                               self.sample[mask], self.exit_points, self.num_layers, self.model_name,
                               self.manifest)


def check_compatible(cache: TrajectoryCache, where: str, model_name: str | None = None,
                     exit_points: list[int] | None = None, obs_dim: int | None = None) -> None:
    """A cache built for another model, exit layout or observation size is one clear error."""
    if cache.num_tokens == 0:
        raise GreencodeError(f"{where}: the trajectory cache is empty (0 tokens); rebuild it with "
                             "`greencode train trajectories --force`")
    if model_name is not None and cache.model_name != model_name:
        raise GreencodeError(f"{where}: the trajectory cache was built for model '{cache.model_name}', not "
                             f"'{model_name}'; rebuild it with `greencode train trajectories --force` or "
                             "pick another --trajectories directory")
    if exit_points is not None and list(cache.exit_points) != list(exit_points):
        raise GreencodeError(f"{where}: the trajectory cache has exit points {list(cache.exit_points)}, the "
                             f"model uses {list(exit_points)}; rebuild it with `greencode train trajectories --force`")
    if obs_dim is not None and cache.obs_dim != obs_dim:
        raise GreencodeError(f"{where}: the trajectory cache holds {cache.obs_dim}-wide observations, the model's "
                             f"are {obs_dim}; rebuild it with `greencode train trajectories --force`")


def save_cache(cache: TrajectoryCache, directory: str | Path, extra: dict | None = None) -> Path:
    """Write shards, then the manifest (last, so a cache without one is known to be incomplete)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MANIFEST).unlink(missing_ok=True)
    shards = []
    for index, start in enumerate(range(0, max(cache.num_tokens, 1), SHARD_TOKENS)):
        part = slice(start, start + SHARD_TOKENS)
        name = f"shard-{index:05d}.npz"
        arrays = {"observations": cache.observations[part], "exit_top1": cache.exit_top1[part],
                  "final_top1": cache.final_top1[part], "sample": cache.sample[part]}
        # np.savez appends .npz to names without it, so write through an open file.
        atomic_write(directory / name, lambda tmp: _savez(tmp, arrays))
        shards.append({"file": name, "tokens": int(arrays["final_top1"].shape[0])})
    manifest = {
        **cache.manifest, **(extra or {}),
        "format": FORMAT,
        "model": cache.model_name,
        "num_layers": cache.num_layers,
        "exit_points": list(cache.exit_points),
        "observation": {"form": OBSERVATION_FORM, "dim": cache.obs_dim, "dtype": "float32"},
        "tokens": cache.num_tokens,
        "samples": int(len(np.unique(cache.sample))),
        "shards": shards,
    }
    atomic_write(directory / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2)))
    return directory


def _savez(path: Path, arrays: dict) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def load_cache(directory: str | Path) -> TrajectoryCache:
    """Read a cache written by save_cache; a missing or damaged one is one clear error."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise GreencodeError(f"{directory}: no trajectory cache here (no {MANIFEST}); build one with "
                             "`greencode train trajectories`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise GreencodeError(f"{manifest_path}: unreadable manifest ({exc}); rebuild the cache with --force") from None
    if manifest.get("format") != FORMAT:
        raise GreencodeError(f"{manifest_path}: format {manifest.get('format')!r} is not {FORMAT!r}; rebuild the "
                             "cache with `greencode train trajectories --force`")
    parts = {key: [] for key in ("observations", "exit_top1", "final_top1", "sample")}
    for shard in manifest["shards"]:
        try:
            with np.load(directory / shard["file"], allow_pickle=False) as data:
                for key in parts:
                    parts[key].append(data[key])
        except (OSError, KeyError, ValueError) as exc:
            raise GreencodeError(f"{directory / shard['file']}: unreadable shard ({exc}); rebuild the cache "
                                 "with `greencode train trajectories --force`") from None
    points = tuple(manifest["exit_points"])
    dim = int(manifest["observation"]["dim"])
    joined = {key: np.concatenate(value) if value else None for key, value in parts.items()}
    if joined["final_top1"] is None:
        joined = {"observations": np.zeros((0, len(points), dim), np.float32),
                  "exit_top1": np.zeros((0, len(points)), np.int64),
                  "final_top1": np.zeros(0, np.int64), "sample": np.zeros(0, np.int64)}
    return TrajectoryCache(joined["observations"].astype(np.float32, copy=False), joined["exit_top1"],
                           joined["final_top1"], joined["sample"], points, int(manifest["num_layers"]),
                           manifest.get("model", ""), manifest)


def context_range(num_tokens: int, rng: np.random.Generator, fraction: tuple[float, float] = CONTEXT_FRACTION,
                  max_tokens: int = MAX_CONTEXT_TOKENS) -> tuple[int, int]:
    """[start, stop) of a context cut at a uniform fraction of a file (greencode/eval/cut.py's rule), at
    least one token."""
    from greencode.eval.cut import context_bounds

    start, cut = context_bounds(num_tokens, rng.uniform(*fraction), max_tokens)
    return (start, cut) if cut >= 1 else (0, 1)


def build_cache(loaded, exit_points: list[int], files: list, samples: int, tokens_per_sample: int,
                seed: int, progress=None, resume=None) -> TrajectoryCache:
    """Sample files, cut contexts and record every generated token through the engine (record=True).

    `files` are greencode.data.CodeFile; `progress(done, total)` is called after each sample. Files are
    drawn without replacement while they last (then again, with fresh cuts). `resume` (a
    train.agent.trajectory_resume.PartialCache) holds samples an interrupted build recorded: their random draws
    are replayed without running the model, and each new sample is handed to it.
    """
    from greencode.config import Config
    from greencode.runtime import engine_from_config

    if not files:
        raise GreencodeError("no files to build trajectories from; check [data].corpus")
    engine = engine_from_config(Config(), loaded, agent_path="", exit_points=exit_points,
                                max_context_tokens=MAX_CONTEXT_TOKENS)
    rng = np.random.default_rng(seed)
    rounds = -(-samples // len(files)) + 1
    candidates = np.concatenate([rng.permutation(len(files)) for _ in range(rounds)])
    observations, exit_top1, final_top1, sample_of, sources = ([list(part) for part in resume.restored]
                                                                if resume is not None else ([], [], [], [], []))
    already, drawn = len(sources), 0
    for index in candidates:
        if len(sources) == samples:
            break
        file = files[int(index)]
        ids = loaded.tokenizer(file.text, add_special_tokens=False)["input_ids"]
        if len(ids) < 8:  # nothing to cut a context from
            continue
        start, stop = context_range(len(ids), rng)
        drawn += 1
        if drawn <= already:  # recorded before an interruption: replay the draw, not the generation
            continue
        start += engine.encode(ids[start:stop], tokens_per_sample)[1]  # what the model window drops
        summary = engine.complete(ids[start:stop], max_new_tokens=tokens_per_sample, record=True)
        for event in summary.events:
            observations.append(event.trace.observations)
            exit_top1.append(event.trace.exit_top1)
            final_top1.append(event.trace.final_top1)
            sample_of.append(len(sources))
        sources.append({"file": file.path, "context": [start, stop], "tokens": len(summary.events)})
        if resume is not None:
            resume.record(observations, exit_top1, final_top1, sample_of, sources)
        if progress is not None:
            progress(len(sources), samples)
    dim = observations[0].shape[1] if observations else loaded.hidden_size
    return TrajectoryCache(
        np.stack(observations).astype(np.float32) if observations else np.zeros((0, len(exit_points), dim), np.float32),
        np.asarray(exit_top1, dtype=np.int64).reshape(-1, len(exit_points)),
        np.asarray(final_top1, dtype=np.int64), np.asarray(sample_of, dtype=np.int64),
        tuple(exit_points), loaded.num_layers, loaded.name,
        {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "seed": seed, "tokens_per_sample": tokens_per_sample,
         "context_fraction": list(CONTEXT_FRACTION), "max_context_tokens": MAX_CONTEXT_TOKENS,
         "generation": "greedy, full depth, greencode.decoding.engine record=True", "sample_sources": sources})


def _load_compatible(directory: Path, loaded, exit_points: list[int]) -> TrajectoryCache:
    cache = load_cache(directory)
    check_compatible(cache, str(directory), loaded.name, exit_points, loaded.hidden_size)
    return cache


def ensure_cache(config, loaded, exit_points: list[int], force: bool = False, progress=None) -> TrajectoryCache:
    """The cache at [agent].trajectories for this model and exit layout: loaded if present, else built.

    A present cache for another model or exit layout is an error (never silently replaced); force rebuilds.
    """
    from greencode.data import load_split

    from train.run_output import output_lock

    directory = Path(config.agent.trajectories)
    if not force and (directory / MANIFEST).is_file():  # written last: a finished cache, readable without the lock
        return _load_compatible(directory, loaded, exit_points)
    with output_lock(directory, "greencode train trajectories"):  # one build per folder, as every trainer
        from train.agent.trajectory_resume import PartialCache

        files = load_split(config.data, "train")
        settings = {"model": loaded.name, "exit_points": list(exit_points), "samples": config.agent.samples,
                    "tokens_per_sample": config.agent.tokens_per_sample, "seed": config.agent.seed,
                    "data": dataclasses.asdict(config.data)}
        partial = PartialCache.open(directory, settings, fresh=force)  # what an interrupted build kept
        try:
            cache = build_cache(loaded, exit_points, files, config.agent.samples, config.agent.tokens_per_sample,
                                config.agent.seed, progress, resume=partial)
        except KeyboardInterrupt:
            partial.flush()
            print(f"trajectories: {partial.samples_kept} of {config.agent.samples} samples kept in {partial.dir}; "
                  "rerun the same command to continue", file=sys.stderr, flush=True)
            raise
        save_cache(cache, directory, {"model_spec": loaded.spec, "corpus": config.data.corpus})
        partial.remove()
        check_compatible(cache, str(directory))
        return cache


def synthetic_cache(samples: int = 64, tokens_per_sample: int = 15, exit_points: tuple[int, ...] = (4, 6, 10),
                    num_layers: int = 12, obs_dim: int = 64, seed: int = 0) -> TrajectoryCache:
    """A cache with no LLM behind it, where the optimal decision is a known function of the observation.

    Each token draws l_opt uniformly in 0..E; exit point e agrees with the final layer iff e >= l_opt,
    and feature 0 of its observation is positive iff it agrees (the rest is noise). So "exit iff
    feature 0 > 0" is the optimal policy. For tests and the throughput benchmark.
    """
    rng = np.random.default_rng(seed)
    num_exits, n = len(exit_points), samples * tokens_per_sample
    opt = rng.integers(0, num_exits + 1, size=n)
    correct = np.arange(num_exits)[None, :] >= opt[:, None]
    observations = rng.standard_normal((n, num_exits, obs_dim)).astype(np.float32)
    observations[:, :, 0] = np.where(correct, 1.0, -1.0) * (0.5 + np.abs(observations[:, :, 0]))
    final_top1 = rng.integers(0, 1000, size=n)
    exit_top1 = np.where(correct, final_top1[:, None], final_top1[:, None] + 1 + np.arange(num_exits))
    return TrajectoryCache(observations, exit_top1.astype(np.int64), final_top1.astype(np.int64),
                           np.repeat(np.arange(samples), tokens_per_sample), tuple(exit_points), num_layers,
                           "synthetic", {"synthetic": True, "seed": seed})
