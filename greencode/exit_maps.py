"""Exit maps: a small affine map per exit point, applied to an exited hidden state before the model's
one final norm and LM head (a "tuned lens"). They keep the single shared head of LITE while costing
nothing at full depth: the final layer is decoded exactly as the base model decodes it.

    logits_e = lm_head(final_norm(W_e n(h_e) + b_e)),   n(h) = h / rms(h) when `normalize` (else h)

Normalising the input removes the large per-token scale differences of the residual stream, which a
least-squares fit would otherwise chase. W_e starts as the identity (plain LITE-style decoding of an intermediate layer). The shipped default
adaptation is a set of these, trained by `greencode train default` (train/exit_maps.py).

File format (`greencode-exit-maps/1`): tensors "<layer>.weight" (d, d) and "<layer>.bias" (d,) in
float16, metadata {format, hidden_size, exit_points (JSON), normalize (true|false), base_model}.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from greencode.atomic import atomic_write
from greencode.errors import GreencodeError

FORMAT = "greencode-exit-maps/1"


class ExitMaps(nn.Module):
    def __init__(self, hidden_size: int, exit_points: list[int], normalize: bool = False):
        super().__init__()
        self.hidden_size = hidden_size
        self.exit_points = list(exit_points)
        self.normalize = normalize
        self.maps = nn.ModuleDict({str(p): nn.Linear(hidden_size, hidden_size) for p in exit_points})
        with torch.no_grad():
            for linear in self.maps.values():
                linear.weight.copy_(torch.eye(hidden_size))
                linear.bias.zero_()

    def prepare(self, hidden: torch.Tensor) -> torch.Tensor:
        """The map's input: the state itself, or its RMS-normalised form."""
        if not self.normalize:
            return hidden
        return hidden * torch.rsqrt(hidden.float().pow(2).mean(-1, keepdim=True) + 1e-6).to(hidden.dtype)

    def forward(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        linear = self.maps[str(layer)]
        return linear(self.prepare(hidden).to(linear.weight.dtype)).to(hidden.dtype)

    def save(self, path: str | Path, base_model: str) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {f"{layer}.{kind}": getattr(linear, kind).detach().to("cpu", torch.float16).contiguous()
                   for layer, linear in self.maps.items() for kind in ("weight", "bias")}
        metadata = {"format": FORMAT, "hidden_size": str(self.hidden_size),
                    "exit_points": json.dumps(self.exit_points), "base_model": base_model,
                    "normalize": "true" if self.normalize else "false"}
        return atomic_write(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata))

    @classmethod
    def load(cls, path: str | Path, hidden_size: int, dtype=torch.float32) -> "ExitMaps":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError) as exc:
            raise GreencodeError(f"{path}: unreadable exit maps ({exc})") from None
        if metadata.get("format") != FORMAT:
            raise GreencodeError(f"{path}: not a greencode exit-maps file")
        if int(metadata["hidden_size"]) != hidden_size:
            raise GreencodeError(f"{path}: exit maps are for hidden size {metadata['hidden_size']}, "
                                 f"the model has {hidden_size}")
        maps = cls(hidden_size, json.loads(metadata["exit_points"]), metadata.get("normalize") == "true")
        maps.load_state_dict({f"maps.{key}": value.float() for key, value in tensors.items()})
        return maps.to(dtype).eval().requires_grad_(False)
