"""A command's config: greencode.toml (or `--config FILE`), then dotted overrides of any key after the
command, spaCy style (`--agent.threshold 0.8`, `--exits.points "[4,8]"`), then the command's own options.

Commands in greencode/commands/, tui/ and train/ import this module, never greencode.cli: the root mounts
them, so they sit below it.
"""

from __future__ import annotations

from greencode.errors import GreencodeError

OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}  # context settings of every command


def parse_dotted_args(args: list[str]) -> dict:
    """["--agent.threshold", "0.9", "--tui.mode=block"] -> {"agent.threshold": 0.9, "tui.mode": "block"}."""
    from greencode.config import parse_override_value

    overrides: dict = {}
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if not arg.startswith("--") or "." not in arg.split("=")[0]:
            raise GreencodeError(f"unexpected argument {arg!r}; config overrides look like --section.key VALUE")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if not rest:
                raise GreencodeError(f"--{key} needs a value")
            value = rest.pop(0)
        overrides[key] = parse_override_value(value)
    return overrides


def load_context_config(ctx, **explicit):
    """The config for a command (`ctx` is its typer.Context): file, then dotted overrides, then the command's own options."""
    from greencode.config import load_config

    overrides = parse_dotted_args(ctx.args)
    overrides.update({key: value for key, value in explicit.items() if value is not None})
    root_obj = ctx.find_root().obj or {}
    return load_config(root_obj.get("config_path"), overrides)
