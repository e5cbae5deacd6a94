"""The root's mounts: a front end that fails to import stays listed, says why, and refuses to run."""

from __future__ import annotations

import sys

import typer
from typer.testing import CliRunner

from greencode.cli import COMMANDS, GROUPS
from greencode.mount import mount_commands, mount_group


def _app_without(monkeypatch, broken: str) -> typer.Typer:
    monkeypatch.setitem(sys.modules, broken, None)  # `import broken` now raises ImportError
    app = typer.Typer(rich_markup_mode=None)
    app.callback()(lambda: None)
    mount_commands(app, COMMANDS)
    for name, spec in GROUPS.items():
        mount_group(app, name, spec)
    return app


def test_a_front_end_that_fails_to_import_is_named_in_help(monkeypatch):
    app = _app_without(monkeypatch, "tui.cli")
    listed = CliRunner().invoke(app, ["--help"])
    assert listed.exit_code == 0
    assert "UNAVAILABLE: tui.cli failed to import" in listed.output
    assert "serve" in listed.output and "train" in listed.output


def test_calling_it_is_one_error_naming_the_part(monkeypatch):
    from greencode.errors import GreencodeError

    app = _app_without(monkeypatch, "train.cli")
    called = CliRunner().invoke(app, ["train", "agent", "--timesteps", "5"])
    assert called.exit_code != 0
    assert isinstance(called.exception, GreencodeError)
    assert "greencode train` is unavailable: train.cli failed to import" in str(called.exception)


def test_every_mount_of_the_real_root_imports():
    from greencode.mount import load_spec

    for spec in [*COMMANDS.values(), *GROUPS.values()]:
        assert not isinstance(load_spec(spec), Exception), spec


def test_help_answers_without_importing_the_heavy_libraries():
    """A new interpreter: what `greencode --help` imports is only visible from a fresh process."""
    import subprocess

    from tests.cli import REPO

    probe = ("import sys\nsys.argv = ['greencode', '--help']\nimport greencode.cli\n"
             "try:\n    greencode.cli.main()\nexcept SystemExit:\n    pass\n"
             "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'textual', 'stable_baselines3') if m in sys.modules))")
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert ran.returncode == 0, ran.stderr
    assert "tui" in ran.stdout and "train" in ran.stdout
    assert ran.stdout.strip().splitlines()[-1] == "HEAVY []"
