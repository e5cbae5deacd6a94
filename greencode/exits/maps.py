"""Exit maps: a small affine map per exit point, applied to an exited hidden state before the model's
one final norm and LM head (a "tuned lens"). They keep the single shared head of LITE while costing
nothing at full depth: the final layer is decoded exactly as the base model decodes it.

    logits_e = lm_head(final_norm(W_e n(h_e) + b_e)),   n(h) = h / rms(h) when `normalize` (else h)

Normalising the input removes the large per-token scale differences of the residual stream, which a
least-squares fit would otherwise chase. W_e starts as the identity (plain LITE-style decoding of an intermediate layer). The shipped default
adaptation is a set of these (with a low-rank MLP each), trained by `greencode train default` (train/assets/exit_maps.py).

Optionally each exit also has a small low-rank residual MLP on the same input (version 2):

    logits_e = lm_head(final_norm(W_e n(h_e) + b_e + U_e gelu(V_e n(h_e) + c_e)))   V_e: (r, d), U_e: (d, r)

U_e starts at zero, so a fresh MLP changes nothing. It costs 2 r d multiply-adds per exit (the shipped r = 256: 8% of a layer).

File format, safetensors with float16 tensors and metadata {format, hidden_size, exit_points (JSON),
normalize (true|false), base_model}:
- `greencode-exit-maps/1`: "<layer>.weight" (d, d) and "<layer>.bias" (d,).
- `greencode-exit-maps/2`: the same, plus metadata mlp_rank (0 = none) and, when it is above 0,
  "<layer>.mlp.down.weight" (r, d), "<layer>.mlp.down.bias" (r,), "<layer>.mlp.up.weight" (d, r).
Version 1 files still load (as maps without an MLP).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from greencode.files.atomic import atomic_write
from greencode.errors import GreencodeError

FORMAT = "greencode-exit-maps/2"
FORMATS = ("greencode-exit-maps/1", FORMAT)


class LowRankMLP(nn.Module):
    """x -> up(gelu(down(x))), with `up` zero at the start (an exact no-op until trained)."""

    def __init__(self, hidden_size: int, rank: int):
        super().__init__()
        self.down = nn.Linear(hidden_size, rank)
        self.up = nn.Linear(rank, hidden_size, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(nn.functional.gelu(self.down(x)))


class ExitMaps(nn.Module):
    def __init__(self, hidden_size: int, exit_points: list[int], normalize: bool = False, mlp_rank: int = 0):
        super().__init__()
        self.hidden_size = hidden_size
        self.exit_points = list(exit_points)
        self.normalize = normalize
        self.mlp_rank = mlp_rank
        self.maps = nn.ModuleDict({str(p): nn.Linear(hidden_size, hidden_size) for p in exit_points})
        self.mlps = nn.ModuleDict({str(p): LowRankMLP(hidden_size, mlp_rank) for p in exit_points} if mlp_rank else {})
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
        x = self.prepare(hidden).to(linear.weight.dtype)
        out = linear(x)
        if self.mlp_rank:
            out = out + self.mlps[str(layer)](x)
        return out.to(hidden.dtype)

    def add_mlps(self, rank: int) -> None:
        """Give every exit a fresh low-rank residual MLP (a no-op until trained)."""
        self.mlp_rank = rank
        self.mlps = nn.ModuleDict({str(p): LowRankMLP(self.hidden_size, rank) for p in self.exit_points})

    def save(self, path: str | Path, base_model: str) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {f"{layer}.{kind}": getattr(linear, kind).detach().to("cpu", torch.float16).contiguous()
                   for layer, linear in self.maps.items() for kind in ("weight", "bias")}
        tensors.update({f"{layer}.mlp.{name}": value.detach().to("cpu", torch.float16).contiguous()
                        for layer, mlp in self.mlps.items() for name, value in mlp.state_dict().items()})
        metadata = {"format": FORMAT, "hidden_size": str(self.hidden_size),
                    "exit_points": json.dumps(self.exit_points), "base_model": base_model,
                    "normalize": "true" if self.normalize else "false", "mlp_rank": str(self.mlp_rank)}
        return atomic_write(path, lambda temporary: save_file(tensors, str(temporary), metadata=metadata))

    @classmethod
    def load(cls, path: str | Path, hidden_size: int, dtype=torch.float32,
             exit_points: list[int] | None = None) -> "ExitMaps":
        """Read a version 1 or 2 file; another hidden size or (when given) other exit points is one clear line."""
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except (SafetensorError, OSError) as exc:
            raise GreencodeError(f"{path}: unreadable exit maps ({exc})") from None
        found = metadata.get("format")
        if found not in FORMATS:
            if str(found).startswith("greencode-exit-maps/"):  # a layout this engine does not compute
                raise GreencodeError(f"{path}: exit maps in format {found[:40]!r}; this engine computes "
                                     f"{', '.join(FORMATS)}; rebuild them with `greencode train default`")
            raise GreencodeError(f"{path}: not a greencode exit-maps file (format {found!r})")
        try:  # metadata written by hand or damaged: one line, never a KeyError or ValueError
            size, points = int(metadata["hidden_size"]), json.loads(metadata["exit_points"])
            mlp_rank = int(metadata.get("mlp_rank", "0"))
        except (KeyError, ValueError, TypeError) as exc:
            raise GreencodeError(f"{path}: damaged exit-maps metadata ({type(exc).__name__}: {exc}); "
                                 "rebuild them with `greencode train default`") from None
        if size != hidden_size:
            raise GreencodeError(f"{path}: exit maps are for hidden size {size}, "
                                 f"the model has {hidden_size}; rebuild them with `greencode train default`")
        if exit_points is not None and list(exit_points) != points:
            raise GreencodeError(f"{path}: exit maps are for exit points {points}, the model uses {list(exit_points)}; "
                                 "rebuild them with `greencode train default`")
        maps = cls(hidden_size, points, metadata.get("normalize") == "true", mlp_rank)
        state = {(f"mlps.{key.replace('.mlp.', '.', 1)}" if ".mlp." in key else f"maps.{key}"): value.float()
                 for key, value in tensors.items()}
        try:
            maps.load_state_dict(state)
        except RuntimeError as exc:
            raise GreencodeError(f"{path}: damaged exit maps ({str(exc).splitlines()[0]})") from None
        return maps.to(dtype).eval().requires_grad_(False)
