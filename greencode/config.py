"""greencode.toml -> frozen dataclasses.

Every mistake (unknown key, wrong type, out-of-range value, invalid TOML) is one GreencodeError
naming the file, the key and what is allowed. Defaults here match the commented greencode.toml.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from greencode.errors import GreencodeError

DEFAULT_CONFIG_NAME = "greencode.toml"
# What the sampler and its random generators accept, shared by the config, the server's schema and the engine.
MAX_TEMPERATURE = 100.0  # past it sampling is uniform anyway, and logits / T leave float32's range sooner or later
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a 64-bit integer
MAX_TRAINING_SEED = 2**32 - 1  # training seeds numpy's global generator too (transformers, SB3), which is 32-bit
MAX_CONFIG_BYTES = 1 << 20  # a config is a few KiB; anything past 1 MiB is not one (e.g. /dev/zero)


def _opt(default: Any, *, lo: float | None = None, hi: float | None = None,
         choices: tuple | None = None, doc: str = "", items: type | None = None) -> Any:
    """A field with its allowed range or choices attached for validation (for a list: of each item, whose
    type `items` is)."""
    meta = {"lo": lo, "hi": hi, "choices": choices, "doc": doc, "items": items}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelConfig:
    spec: str = _opt("default")  # default | default-base | tiny-random-* | HF dir | .gguf | hub id
    dtype: str = _opt("float32", choices=("float32", "bfloat16", "float16"))
    device: str = _opt("auto")  # auto | cpu | cuda | cuda:N
    weights: str = _opt("auto", choices=("auto", "fp32", "fp16", "int8"))  # greencode.model.weights.FORMS
    cache_dir: str = _opt("")  # "" = $GREENCODE_CACHE or $XDG_CACHE_HOME/greencode


@dataclass(frozen=True)
class ExitsConfig:
    points: list = _opt([])  # [] = the paper's rule for the model's depth
    shortlist: int = _opt(-1, lo=-1)  # exit-head tokens: -1 the model's shortlist, 0 the whole vocabulary, K its first K


@dataclass(frozen=True)
class DataConfig:
    corpus: str = _opt("stdlib")  # stdlib | DIR | GLOB | ZIP | FILE.jsonl | hf:NAME
    language: str = _opt("auto", choices=("auto", "python", "java"))
    max_files: int = _opt(0, lo=0)  # 0 = all
    split_seed: str = _opt("greencode")  # salt of the path hash that picks train/validation/test
    validation_fraction: float = _opt(0.05, lo=0.0, hi=0.5)
    test_fraction: float = _opt(0.05, lo=0.0, hi=0.5)


@dataclass(frozen=True)
class FinetuneConfig:
    output: str = _opt("runs/lite")
    targets: str = _opt("distill", choices=("distill", "labels"))  # distill: KL to the frozen teacher; labels: eq. 1
    keep_final: float = _opt(100.0, lo=0.0)  # distill: weight on the final layer's KL to the teacher (a guard: 0 at the start)
    teacher: str = _opt("")  # distill: "" = the model being fine-tuned, frozen as it starts; else a spec
    teacher_cache: str = _opt("")  # distill: "" = teacher runs per batch; DIR = its final states cached there
    learning_rate: float = _opt(0.0, lo=0.0, hi=1.0)  # 0 = auto: 1e-5 with full weights (paper), 3e-4 with LoRA
    batch_size: int = _opt(0, lo=0)  # 0 = auto: 4 on a GPU (paper), 2 on a CPU
    grad_accum: int = _opt(0, lo=0)  # 0 = auto: 32 on a GPU (paper), 4 on a CPU
    epochs: float = _opt(1.0, lo=0.0)
    max_steps: int = _opt(0, lo=-1)  # 0 = auto: 100 on a CPU, the epochs on a GPU; -1 = run the epochs
    seq_len: int = _opt(256, lo=8)
    weights: Any = _opt("geometric")  # geometric | uniform | [w per exit point..., w final]
    exit_position_fraction: float = _opt(1.0, lo=0.0, hi=1.0)  # share of positions whose exit losses count
    lora: bool | str = _opt("auto", choices=("auto", True, False))  # auto: LoRA on a CPU, full weights on a GPU (paper)
    lora_rank: int = _opt(16, lo=1)
    lora_alpha: int = _opt(32, lo=1)
    bf16: str = _opt("auto", choices=("auto", "on", "off"))
    save_steps: int = _opt(200, lo=1)
    logging_steps: int = _opt(10, lo=1)
    validation_tokens: int = _opt(20000, lo=1)
    seed: int = _opt(0, lo=0, hi=MAX_TRAINING_SEED)


@dataclass(frozen=True)
class RewardConfig:
    alpha: float = _opt(0.3, lo=0.0, hi=1.0)  # penalty per exit point for exiting late
    beta: float = _opt(0.5, lo=0.0, hi=1.0)  # penalty per exit point for exiting early (wrong token)
    gamma: float = _opt(0.5, lo=0.0, hi=1.0)  # penalty for continuing past the optimal exit
    epsilon: float = _opt(0.05, lo=0.0, hi=1.0)  # small penalty for the rare wrong late exit


@dataclass(frozen=True)
class AgentConfig:
    path: str = _opt("")  # exported agent (.safetensors); "" = the one shipped with the model, if any
    threshold: float = _opt(0.9, lo=0.0, hi=1.0)
    output: str = _opt("runs/agent")
    trajectories: str = _opt("runs/trajectories")
    samples: int = _opt(400, lo=1)  # files sampled for the trajectory cache
    tokens_per_sample: int = _opt(15, lo=1)
    timesteps: int = _opt(500_000, lo=1)
    n_steps: int = _opt(4096, lo=2)
    batch_size: int = _opt(512, lo=2)
    n_epochs: int = _opt(6, lo=1)
    learning_rate: float = _opt(5e-5, lo=0.0, hi=1.0)
    gamma: float = _opt(0.99, lo=0.0, hi=1.0)
    net_arch: list = _opt([64, 64], lo=1, hi=65536, items=int)  # hidden layer widths of the agent's MLP
    n_envs: int = _opt(1, lo=1)
    position_feature: bool = _opt(False)
    seed: int = _opt(0, lo=0, hi=MAX_TRAINING_SEED)
    reward: RewardConfig = field(default_factory=RewardConfig)


@dataclass(frozen=True)
class EngineConfig:
    policy: str = _opt("agent:0.9")  # full | fixed:N | confidence:P | entropy:H | agent:T[:C[:R]]
    max_new_tokens: int = _opt(15, lo=1)
    max_context_tokens: int = _opt(512, lo=1)
    temperature: float = _opt(0.0, lo=0.0, hi=MAX_TEMPERATURE)  # 0 = greedy
    top_p: float = _opt(1.0, lo=0.0, hi=1.0)
    seed: int = _opt(0, lo=0, hi=MAX_SEED)
    token_healing: bool = _opt(True)  # a prompt cut mid-word completes the word (text prompts)
    prefix_cache: int = _opt(4, lo=0)  # prompts whose prefill KV cache is kept for reuse; 0 = off
    prefix_cache_mb: int = _opt(256, lo=0)  # memory bound of those caches together


@dataclass(frozen=True)
class EnergyConfig:
    source: str = _opt("auto", choices=("auto", "zeus", "estimate"))
    watts: float = _opt(0.0, lo=0.0)  # estimate: busy power in W; 0 = cpu_watts_per_core * threads
    cpu_watts_per_core: float = _opt(10.0, lo=0.0)


@dataclass(frozen=True)
class TuiConfig:
    model: str = _opt("")  # "" = [model].spec
    agent: str = _opt("")  # "" = [agent].path
    policy: str = _opt("")  # "" = [engine].policy
    idle_ms: int = _opt(700, lo=0)  # 0 = complete only on the explicit key
    mode: str = _opt("line", choices=("line", "block"))
    block_tokens: int = _opt(48, lo=1)


@dataclass(frozen=True)
class ServeConfig:
    host: str = _opt("127.0.0.1")
    port: int = _opt(8080, lo=1, hi=65535)
    token: str = _opt("")  # bearer token; "" = no auth
    max_body_bytes: int = _opt(1_000_000, lo=1)
    max_input_chars: int = _opt(100_000, lo=1)
    max_new_tokens_cap: int = _opt(256, lo=1)
    queue_limit: int = _opt(16, lo=0)
    threads: int = _opt(0, lo=0)  # torch CPU threads for generation; 0 = torch's default (one per core)
    allow_unauthenticated: bool = _opt(False)  # serve a non-loopback host without a token
    body_timeout_s: float = _opt(10.0, lo=0.1, hi=3600.0)  # request headers and body must arrive within this
    limit_concurrency: int = _opt(64, lo=1)  # open connections at once; 503 past it
    limit_sending: int = _opt(16, lo=1)  # connections still sending their request at once; past it the oldest close
    timeout_keep_alive_s: float = _opt(5.0, lo=0.1, hi=3600.0)  # idle keep-alive connections close after this
    model_id: str = _opt("greencode")  # the model name clients see and may send (/v1/models, /api/tags, answers)
    allowed_origins: list = _opt([])  # browser Origins served besides loopback ones, e.g. "https://*.example.com"


@dataclass(frozen=True)
class EvalConfig:
    samples: int = _opt(1000, lo=1)
    context_fraction: float = _opt(0.2, lo=0.0, hi=1.0)
    max_context_tokens: int = _opt(512, lo=1)
    max_new_tokens: int = _opt(15, lo=1)
    policies: list = _opt(["full", "fixed:14", "confidence:0.9"])
    thresholds: list = _opt([0.6, 0.8, 0.9, 0.92])
    out: str = _opt("runs/eval")
    split: str = _opt("test", choices=("test", "all"))  # all = every file the model's calibration did not read


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    exits: ExitsConfig = field(default_factory=ExitsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    tui: TuiConfig = field(default_factory=TuiConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    origin: str = "built-in defaults"  # where the values came from, for error messages


def _type_ok(value: Any, annotation: Any) -> bool:
    if annotation in (Any, "Any"):
        return isinstance(value, (str, list))
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _check_finite(value: Any, where: str, dotted: str) -> None:
    """NaN and inf pass every range check and later turn into non-JSON output: refuse them by name."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, float) and not math.isfinite(item):
            raise GreencodeError(f"{where}: '{dotted}' = {value!r} is not a finite number; give a plain number")


def _toml_spelling(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _type_name(annotation: Any) -> str:
    if typing.get_args(annotation) and annotation is not Any:  # a union such as bool | str
        return " or ".join(_type_name(part) for part in typing.get_args(annotation))
    return {Any: "a string or a list"}.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _build(cls: type, values: dict, where: str, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.name != "origin"}
    kwargs = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            raise GreencodeError(
                f"{where}: unknown key '{dotted}'; allowed in [{prefix.rstrip('.') or 'top level'}]: "
                f"{', '.join(sorted(known))}"
            )
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise GreencodeError(f"{where}: '{dotted}' must be a table ([{dotted}])")
            kwargs[key] = _build(annotation, value, where, f"{dotted}.")
            continue
        _check_finite(value, where, dotted)
        if not _type_ok(value, annotation):
            raise GreencodeError(
                f"{where}: '{dotted}' must be {_type_name(annotation)}, got {type(value).__name__} {value!r}"
            )
        meta = known[key].metadata
        if annotation is float and isinstance(value, int):
            value = float(value)
        if meta.get("choices") and value not in meta["choices"]:
            raise GreencodeError(
                f"{where}: '{dotted}' = {value!r} is not allowed; choose one of: "
                f"{', '.join(_toml_spelling(choice) for choice in meta['choices'])}"
            )
        lo, hi = meta.get("lo"), meta.get("hi")
        if isinstance(value, list) and meta.get("items") is not None:
            _check_items(value, meta["items"], lo, hi, where, dotted)
        elif (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            raise GreencodeError(f"{where}: '{dotted}' = {value!r} is out of range; allowed: {bounds}")
        kwargs[key] = value
    return cls(**kwargs)


def _check_items(value: list, kind: type, lo, hi, where: str, dotted: str) -> None:
    for item in value:
        if not _type_ok(item, kind) or (lo is not None and item < lo) or (hi is not None and item > hi):
            bounds = f"[{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            raise GreencodeError(f"{where}: '{dotted}' = {value!r} holds {item!r}; each must be {kind.__name__} "
                                 f"in {bounds}")


def _check_policies(config: Config, where: str) -> None:
    """Policy strings follow the one grammar and threshold rule (greencode.exits.policies); layers and agent
    files are checked against the model when it is loaded."""
    from greencode.exits.policies import split_policy

    named = {"engine.policy": [config.engine.policy], "tui.policy": [config.tui.policy] if config.tui.policy else [],
             "eval.policies": list(config.eval.policies)}
    for key, texts in named.items():
        for text in texts:
            if not isinstance(text, str):
                raise GreencodeError(f"{where}: '{key}' must hold policy strings, got {text!r}")
            try:
                split_policy(text)
            except GreencodeError as exc:
                raise GreencodeError(f"{where}: '{key}': {exc}") from None


def check_reward(reward, where: str = "agent") -> None:
    """The reward rule (paper eq. 2 and 3): alpha, beta, gamma, epsilon in [0, 1] and alpha <= beta, else one
    clear error. load_config applies it to every file; train/agent/env.py to whatever reward it is handed."""
    for name in ("alpha", "beta", "gamma", "epsilon"):
        value = getattr(reward, name)
        if not 0.0 <= value <= 1.0:
            raise GreencodeError(f"{where}: 'agent.reward.{name}' = {value} is out of range; allowed: [0.0, 1.0]")
    if reward.alpha > reward.beta:
        raise GreencodeError(
            f"{where}: 'agent.reward.alpha' ({reward.alpha}) must be <= 'agent.reward.beta' ({reward.beta}); "
            "exiting late must cost no more than exiting early"
        )


def _deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override_value(text: str) -> Any:
    """Read a command-line value as TOML (numbers, booleans, lists), else as a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def overrides_to_dict(overrides: dict[str, Any]) -> dict:
    """{"agent.reward.alpha": 0.2} -> {"agent": {"reward": {"alpha": 0.2}}}."""
    nested: dict = {}
    for dotted, value in overrides.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise GreencodeError(f"command line: '{dotted}' mixes a value and a table")
        node[leaf] = value
    return nested


def read_toml(path: Path) -> dict:
    """A regular file of at most MAX_CONFIG_BYTES, read through one open handle (no stat/read race)."""
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below like any non-file
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise GreencodeError(f"{path}: a config must be a regular file (this is a device, pipe or "
                                     "directory); pass --config FILE.toml")
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise GreencodeError(f"{path}: config file not found (pass --config FILE or create greencode.toml)") from None
    except IsADirectoryError:
        raise GreencodeError(f"{path}: a config must be a regular file, this is a directory; "
                             "pass --config FILE.toml") from None
    except OSError as exc:
        raise GreencodeError(f"{path}: cannot read config file: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise GreencodeError(f"{path}: config file is larger than {MAX_CONFIG_BYTES} bytes; "
                             "a greencode.toml is a few KiB")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise GreencodeError(f"{path}: config file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise GreencodeError(f"{path}: invalid TOML: {exc}") from None


def find_default_config() -> Path | None:
    """./greencode.toml if present, else none (built-in defaults)."""
    here = Path.cwd() / DEFAULT_CONFIG_NAME
    return here if here.is_file() else None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load a config file (or the defaults) and apply dotted overrides on top."""
    values: dict = {}
    where = "built-in defaults"
    file = Path(path) if path is not None else find_default_config()
    if file is not None:
        values = read_toml(file)
        where = str(file)
    if overrides:
        values = _deep_merge(values, overrides_to_dict(overrides))
        where = f"{where} + command line" if file is not None else "command line"
    config = _build(Config, values, where, "")
    check_reward(config.agent.reward, where)
    _check_policies(config, where)
    return dataclasses.replace(config, origin=where)


def replace(config: Config, **sections: dict[str, Any]) -> Config:
    """A copy with some keys changed, validated like the file: replace(cfg, engine={"policy": "full"})."""
    flat = {f"{sec}.{key}": value for sec, kv in sections.items() for key, value in kv.items()}
    current = {name: dataclasses.asdict(getattr(config, name)) for name in sections}
    merged = _deep_merge(current, overrides_to_dict(flat))
    rebuilt = {name: _build(type(getattr(config, name)), merged[name], config.origin, f"{name}.")
               for name in sections}
    return dataclasses.replace(config, **rebuilt)


