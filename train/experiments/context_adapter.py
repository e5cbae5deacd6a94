"""Offline experiment: does a context-aware exit adapter beat a per-position map?

    python -m train.experiments.context_adapter RUN PARTS LAYERS [EPOCHS]

RUN is a `greencode train default --output` folder holding its state parts (states-train.part*, states-validation.
part*); PARTS how many train parts to fit on; LAYERS exit points, comma-separated. For each exit point it fits,
from the same least-squares start and on the same tokens: (a) the shipped form, an affine map plus a rank-256
residual MLP, and (b) the same plus a 4-head causal self-attention over earlier positions' exit states (rotary
positions, 0.125 layer-units: Kangaroo's idea at this model's scale). Both train by KL to the final layer through
the shortlist head; it prints held-out (validation split) agreement with the final layer's top-1.
Measured 2026-12-07 (docs/results.md): attention adds nothing at exits 14 and 19, so the engine has no such adapter.
"""
import copy
import glob
import json
import sys
import time

import torch
from torch import nn
from train.assets.calibration import assemble
from train.assets.exit_maps import ExitHead, fit_least_squares
from greencode.exits.maps import ExitMaps
from greencode.model.load import load_model
from greencode.exits.shortlist import load_shortlist



def main():
    torch.manual_seed(0)
    RUN = sys.argv[1]
    parts_n, layers = int(sys.argv[2]), [int(x) for x in sys.argv[3].split(",")]
    epochs = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    loaded = load_model("default-base", device="cpu", adaptation=False)
    adapter = loaded.adapter
    shortlist = load_shortlist(f"{RUN}/shortlist.safetensors", loaded.tokenizer)
    head = ExitHead(adapter, shortlist)
    train = assemble(sorted(glob.glob(f"{RUN}/states-train.part*.safetensors"))[:parts_n])
    val = assemble(sorted(glob.glob(f"{RUN}/states-validation.part*.safetensors")))
    T = 512
    print("train tokens", train.count, "val", val.count, flush=True)


    def rope(x, base=10000.0):
        b, h, t, d = x.shape
        inv = 1.0 / (base ** (torch.arange(0, d, 2).float() / d))
        ang = torch.arange(t).float()[:, None] * inv[None]
        cos, sin = ang.cos(), ang.sin()
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-2)


    class Ctx(nn.Module):
        def __init__(self, maps: ExitMaps, layer, heads=4, hd=64, attention=True):
            super().__init__()
            self.maps, self.layer, self.heads, self.hd, self.attention = maps, layer, heads, hd, attention
            d = maps.hidden_size
            if attention:
                self.qkv = nn.Linear(d, 3 * heads * hd)
                self.o = nn.Linear(heads * hd, d, bias=False)
                nn.init.zeros_(self.o.weight)

        def forward(self, h):  # (B, T, d) raw states
            x = self.maps.prepare(h)
            out = self.maps(self.layer, h)
            if self.attention:
                b, t, _ = x.shape
                q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.hd).permute(2, 0, 3, 1, 4)
                a = nn.functional.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True)
                out = out + self.o(a.transpose(1, 2).reshape(b, t, -1))
            return out


    def kl_train(model, layer, epochs, batch_windows=8, lr=1e-3):
        windows = train.count // T
        steps = max(1, int(epochs * windows / batch_windows))
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
        rows_of = head.index_of[train.target_ids]
        probs_all = train.target_logprobs.exp() * (rows_of >= 0)
        order = torch.randperm(windows)
        started = time.time()
        for step in range(steps):
            w = order[(step * batch_windows) % windows:][:batch_windows]
            idx = (w[:, None] * T + torch.arange(T)[None]).reshape(-1)
            h = train.exits[layer][idx].float().view(len(w), T, -1)
            logq = torch.log_softmax(head.training_logits(model(h)).reshape(len(idx), -1), -1)
            loss = -(probs_all[idx] * logq.gather(1, rows_of[idx].clamp(min=0))).sum(1).mean()
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
            if step % 50 == 0:
                print(f"  step {step}/{steps} loss {loss.item():.3f} {time.time() - started:.0f}s", flush=True)


    @torch.no_grad()
    def val_agreement(model, layer):
        hits = 0
        for w in range(val.count // T):
            h = val.exits[layer][w * T:(w + 1) * T].float()[None]
            hits += int((head.top1(model(h)[0]) == val.final_top1[w * T:(w + 1) * T]).sum())
        return hits / (val.count // T * T)


    results = {}
    for layer in layers:
        sub = type(train)({layer: train.exits[layer]}, train.final, train.target_ids, train.target_logprobs, train.language)
        base = ExitMaps(576, [layer], normalize=True)
        fit_least_squares(base, sub)
        r = {"least_squares": val_agreement(Ctx(base, layer, attention=False), layer)}
        for name, attention, rank in (("affine+mlp256", False, 256), ("affine+mlp256+attention", True, 256)):
            maps = copy.deepcopy(base); maps.add_mlps(rank)
            model = Ctx(maps, layer, attention=attention).train()
            t0 = time.time(); kl_train(model, layer, epochs); model.eval()
            r[name] = val_agreement(model, layer); r[name + "_seconds"] = round(time.time() - t0)
            print(layer, name, r[name], flush=True)
        results[layer] = r
        print(json.dumps({layer: r}), flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
