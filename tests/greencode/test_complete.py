import pytest

from greencode.commands.complete import prompt_at
from greencode.errors import GreencodeError
from tests.cli import run_cli

TEXT = "def f(x):\n    return x\n\nprint(f(2))\n"


def test_prompt_at_cuts_before_the_cursor():
    assert prompt_at(TEXT, None) == TEXT
    assert prompt_at(TEXT, "2:5") == "def f(x):\n    "
    assert prompt_at(TEXT, "1:4") == "def"
    assert prompt_at(TEXT, "2:99") == "def f(x):\n    return x"  # past the end of the line
    for bad in ("0:1", "9:1", "x:y", "2:0"):
        with pytest.raises(GreencodeError):
            prompt_at(TEXT, bad)


def _run(*args):
    return run_cli("complete", *args)


def test_complete_streams_and_summarises(tmp_path):
    code = tmp_path / "a.py"
    code.write_text(TEXT)
    result = _run(str(code), "--model", "tiny-random-opt", "--policy", "fixed:4", "--max-new-tokens", "5")
    assert result.returncode == 0, result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert "fixed:4: 5 tokens" in summary.replace("\n", " ") or "fixed:4: 5 tokens" in result.stdout
    assert "(estimate)" in result.stdout and "J saved vs full depth" in result.stdout.replace("\n", " ")


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "no such file"),
    (["{file}", "--at", "50:1"], "the file has"),
    (["{file}", "--policy", "warp"], "unknown policy"),
    (["{file}", "--max-new-tokens", "0"], "max_new_tokens"),
])
def test_complete_bad_input_is_one_line(tmp_path, args, message):
    code = tmp_path / "a.py"
    code.write_text(TEXT)
    filled = [a.format(file=code, missing=tmp_path / "missing.py") for a in args]
    result = _run(*filled, "--model", "tiny-random-opt")
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
