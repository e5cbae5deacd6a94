"""Exit layer -> colour band, shallow (green) to the final layer (red).

The TUI draws the bands with the classes band-0..band-4 from tui/app.tcss; `greencode complete` uses
BAND_COLOURS directly. A test keeps the two palettes identical.
"""

from __future__ import annotations

BANDS = 5  # band 0..3 split the early layers by depth; band 4 is the final layer
BAND_COLOURS = ("#3fb950", "#a5d63f", "#e3c341", "#f0883e", "#f85149")  # green ... red


def band_of(exit_layer: int, num_layers: int) -> int:
    if exit_layer >= num_layers:
        return BANDS - 1
    return min(BANDS - 2, max(0, (exit_layer - 1) * (BANDS - 1) // max(1, num_layers - 1)))


def band_class(exit_layer: int, num_layers: int) -> str:
    """The component class a token exiting at this layer is drawn with."""
    return f"band-{band_of(exit_layer, num_layers)}"


def band_layers(exit_points: list[int], num_layers: int) -> list[tuple[int, list[int]]]:
    """[(band, exit layers in it)] for the bands that hold an exit layer (the final layer included)."""
    grouped: dict[int, list[int]] = {}
    for layer in [*exit_points, num_layers]:
        grouped.setdefault(band_of(layer, num_layers), []).append(layer)
    return sorted(grouped.items())


def band_label(layers: list[int], num_layers: int) -> str:
    if layers == [num_layers]:
        return f"{num_layers} (full)"
    return str(layers[0]) if len(layers) == 1 else f"{layers[0]}-{layers[-1]}"


def band_colour(exit_layer: int, num_layers: int) -> str:
    return BAND_COLOURS[band_of(exit_layer, num_layers)]
