"""The knob's calibration, as the shipped manifest records it (train/assets/knob.py measures it):

    "knob": {"confirm": C, "ramp": R, "table": {"0.9": {"python": {"agreement": .., "modelled_speedup": ..},
             "java": {...}}, ...}, "calibration": {what it was measured on}}

C and R are what agent:T means on this model (greencode.exits.policies.Agent); the table gives each T a
measured meaning on held-out code ("at T, X% of tokens equal full depth's"), shown by `greencode info` and
beside the TUI's knob. A manifest without "knob" (today's older builds) means C = 0, R = 0 and no table.
"""

from __future__ import annotations

from greencode.errors import GreencodeError


def shipped_knob(info: dict) -> dict:
    """The "knob" entry of a loaded model's adaptation manifest ({} when it has none), checked."""
    knob = (info.get("adaptation") or {}).get("knob") or {}
    if not knob:
        return {}
    confirm, ramp = knob.get("confirm", 0.0), knob.get("ramp", 0)
    if not (isinstance(confirm, (int, float)) and 0 <= confirm <= 1 and isinstance(ramp, int) and ramp >= 0):
        raise GreencodeError(f"manifest.json: knob confirm {confirm!r} must be in [0, 1] and ramp {ramp!r} a whole "
                             "number >= 0; rebuild the assets with `greencode train default --install`")
    return knob


def knob_for(info: dict, agent_file: str | None) -> dict:
    """The calibrated knob when agent:T runs the model's own agent; {} for any other agent file."""
    knob = shipped_knob(info)
    return knob if knob and agent_file and agent_file == info.get("agent_path") else {}


def agent_defaults(info: dict, agent_file: str | None) -> tuple[float, int]:
    """(C, R) agent:T uses: the model's calibrated ones for its own agent, (0, 0) for any other agent file."""
    knob = knob_for(info, agent_file)
    return (float(knob.get("confirm", 0.0)), int(knob.get("ramp", 0))) if knob else (0.0, 0)


def knob_figures(knob: dict, threshold: float, tolerance: float = 0.026) -> tuple[str, float, float] | None:
    """(the nearest calibrated T, token agreement with full depth, modelled speed-up), means over the
    languages; None without a table or a calibrated T within `tolerance` of `threshold`."""
    table = (knob or {}).get("table") or {}
    if not table:
        return None
    nearest = min(table, key=lambda t: abs(float(t) - threshold))
    if abs(float(nearest) - threshold) > tolerance:
        return None
    figures = list(table[nearest].values())
    return (nearest, sum(f["agreement"] for f in figures) / len(figures),
            sum(f["modelled_speedup"] for f in figures) / len(figures))


def knob_meaning(knob: dict, threshold: float) -> str | None:
    """'T=0.9: 95% of tokens as full depth's, 1.31x modelled (held-out)', or None (knob_figures)."""
    figures = knob_figures(knob, threshold)
    if figures is None:
        return None
    nearest, agreement, speed = figures
    return f"T={nearest}: {agreement:.0%} of tokens as full depth's, {speed:.2f}x modelled (held-out)"
