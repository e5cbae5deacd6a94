"""The exported exit agent: a plain torch MLP read from safetensors (never a pickle).

File format (`greencode-agent/1`): tensors of an nn.Sequential of Linear layers (keys "0.weight",
"0.bias", "2.weight", ...; activations between them, none after the last), and metadata naming the
architecture and what the agent was trained for:

    format, net_arch (JSON list), activation (tanh|relu), hidden_size, exit_points (JSON list),
    model, observation (see OBSERVATION), position_feature (true|false)

Loading an agent trained for another hidden size or exit layout fails with one clear line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from greencode.files.atomic import atomic_write
from greencode.errors import GreencodeError

FORMAT = "greencode-agent/1"
OBSERVATION = "final_norm(hidden)"  # the state at an exit point, normalised by the model's final norm
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
EXIT_ACTION = 1  # actions: 0 continue, 1 exit


def agent_observation(adapter, hidden: torch.Tensor, exit_index: int | None = None,
                      n_exits: int | None = None) -> torch.Tensor:
    """What the agent sees at an exit point: the final-normed hidden state of the current token, float32.

    Training (trajectories) and inference both call this, so the two can never disagree. With the
    optional position feature the exit's index (scaled to [0, 1]) is appended.
    """
    obs = adapter.final_norm(hidden).reshape(-1).float()
    if exit_index is not None:
        obs = torch.cat([obs, obs.new_tensor([exit_index / max(1, n_exits - 1)])])
    return obs


def build_mlp(in_features: int, net_arch: list[int], activation: str = "tanh", n_actions: int = 2) -> nn.Sequential:
    if activation not in ACTIVATIONS:
        raise GreencodeError(f"unknown agent activation {activation!r}; allowed: {', '.join(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    width = in_features
    for units in net_arch:
        layers += [nn.Linear(width, units), ACTIVATIONS[activation]()]
        width = units
    layers.append(nn.Linear(width, n_actions))
    return nn.Sequential(*layers)


def save_agent(path: str | Path, state_dict: dict, net_arch: list[int], activation: str, hidden_size: int,
               exit_points: list[int], model_name: str, position_feature: bool = False) -> Path:
    """Write an agent file atomically (temp file + rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": FORMAT, "net_arch": json.dumps(list(net_arch)), "activation": activation,
        "hidden_size": str(hidden_size), "exit_points": json.dumps(list(exit_points)), "model": model_name,
        "observation": OBSERVATION, "position_feature": "true" if position_feature else "false",
    }
    tensors = {key: value.detach().to("cpu", torch.float32).contiguous() for key, value in state_dict.items()}
    return atomic_write(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata))


def _json_metadata(path: Path, metadata: dict, key: str):
    if key not in metadata:
        raise GreencodeError(f"{path}: agent metadata has no '{key}'; re-export the agent with `greencode train agent`")
    try:
        return json.loads(metadata[key])
    except (json.JSONDecodeError, TypeError):
        raise GreencodeError(f"{path}: agent metadata '{key}' = {metadata[key][:60]!r} is not valid JSON") from None


def _positive_ints(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)


@dataclass(frozen=True)
class AgentLayout:
    """What an agent file's metadata declares, checked field by field and against its tensor shapes."""

    hidden_size: int
    exit_points: list
    net_arch: list
    activation: str
    position_feature: bool

    @property
    def in_features(self) -> int:
        return self.hidden_size + (1 if self.position_feature else 0)

    def shapes(self) -> dict[str, list[int]]:
        """The tensor shapes an nn.Sequential of this layout has ("0.weight": [units, in_features], ...)."""
        expected, width = {}, self.in_features
        for index, units in enumerate([*self.net_arch, 2]):
            expected[f"{2 * index}.weight"], expected[f"{2 * index}.bias"] = [units, width], [units]
            width = units
        return expected

    @classmethod
    def read(cls, path: Path, metadata: dict, shapes: dict[str, list[int]]) -> "AgentLayout":
        hidden = metadata.get("hidden_size")
        if hidden is None:
            raise GreencodeError(f"{path}: agent metadata has no 'hidden_size'; re-export the agent")
        if not str(hidden).isdigit() or int(hidden) <= 0:
            raise GreencodeError(f"{path}: agent metadata 'hidden_size' = {hidden[:40]!r} is not a positive integer")
        exits = _json_metadata(path, metadata, "exit_points")
        if not _positive_ints(exits) or exits != sorted(set(exits)):
            raise GreencodeError(f"{path}: agent metadata 'exit_points' must be an ascending JSON list of layers, "
                                 f"got {metadata['exit_points'][:60]!r}")
        arch = _json_metadata(path, metadata, "net_arch")
        if not _positive_ints(arch):
            raise GreencodeError(f"{path}: agent metadata 'net_arch' must be a JSON list of layer widths like "
                                 f"[64, 64], got {metadata['net_arch'][:60]!r}")
        observation = metadata.get("observation", OBSERVATION)  # files without the key predate it: the same
        if observation != OBSERVATION:
            raise GreencodeError(f"{path}: agent observes {observation[:60]!r}, this engine computes {OBSERVATION!r} "
                                 "(plus the exit index when position_feature); retrain it with `greencode train agent`")
        if metadata.get("position_feature", "false") not in ("true", "false"):
            raise GreencodeError(f"{path}: agent metadata 'position_feature' = {metadata['position_feature'][:40]!r}; "
                                 "expected true or false")
        activation = metadata.get("activation", "tanh")
        if activation not in ACTIVATIONS:
            raise GreencodeError(f"{path}: unknown agent activation {activation[:40]!r}; allowed: {', '.join(ACTIVATIONS)}")
        layout = cls(int(hidden), exits, arch, activation, metadata.get("position_feature") == "true")
        if layout.shapes() != shapes:
            raise GreencodeError(f"{path}: agent metadata (hidden_size {layout.hidden_size}, net_arch {arch}) does not "
                                 f"match its tensors ({_describe(shapes)}); the file is damaged: re-export it")
        return layout


def _describe(shapes: dict[str, list[int]]) -> str:
    listed = [f"{key} {'x'.join(map(str, shape))}" for key, shape in sorted(shapes.items())]
    return ", ".join(listed[:6]) + (", ..." if len(listed) > 6 else "") if listed else "no tensors"


class ExitAgent:
    """P(exit) for an observation; `decide` compares it with the threshold T."""

    def __init__(self, net: nn.Sequential, metadata: dict, path: str = ""):
        self.net = net.eval()
        self.metadata = metadata
        self.path = path
        self.position_feature = metadata.get("position_feature") == "true"
        self.exit_points = json.loads(metadata["exit_points"])

    @classmethod
    def load(cls, path: str | Path, hidden_size: int | None = None,
             exit_points: list[int] | None = None) -> "ExitAgent":
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise GreencodeError(f"{path}: agent file not found (train one with `greencode train agent`)")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                shapes = {key: list(handle.get_slice(key).get_shape()) for key in handle.keys()}
                if metadata.get("format") != FORMAT:
                    raise GreencodeError(f"{path}: not a greencode agent file (format {metadata.get('format')!r})")
                # everything the metadata claims is checked against the tensor shapes before anything is built
                layout = AgentLayout.read(path, metadata, shapes)
                tensors = {key: handle.get_tensor(key) for key in shapes}
        except (SafetensorError, OSError, ValueError) as exc:
            raise GreencodeError(f"{path}: not a greencode agent file ({exc})") from None
        if hidden_size is not None and layout.hidden_size != hidden_size:
            raise GreencodeError(
                f"{path}: agent was trained for hidden size {layout.hidden_size} ({metadata.get('model')}), "
                f"this model has {hidden_size}; train an agent for it with `greencode train agent`"
            )
        if exit_points is not None and list(exit_points) != layout.exit_points:
            raise GreencodeError(
                f"{path}: agent was trained for exit points {layout.exit_points}, the engine uses {list(exit_points)}; "
                "set [exits].points to match or retrain"
            )
        net = build_mlp(layout.in_features, layout.net_arch, layout.activation)
        try:
            net.load_state_dict(tensors)
        except RuntimeError as exc:
            raise GreencodeError(f"{path}: agent weights do not match its declared architecture ({exc})"[:300]) from None
        return cls(net, metadata, str(path))

    @torch.no_grad()
    def prob_exit(self, obs: torch.Tensor) -> torch.Tensor:
        """P(exit) from the policy's softmax, for one observation (D,) or a batch (B, D)."""
        return torch.softmax(self.net(obs), dim=-1)[..., EXIT_ACTION]
