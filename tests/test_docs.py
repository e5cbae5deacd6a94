"""The user docs stay true to the tree: README.md is a short page whose commands table names exactly the
commands `greencode` has, every relative link in README.md and docs/*.md reaches a file and heading that
exist, and docs/results.md is dated, newest first, each entry with its machine."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results.md"
README_MAX_LINES = 250
_FENCE = re.compile(r"^```.*?^```", flags=re.M | re.S)


def _prose(path: Path) -> str:
    """A page without its fenced code blocks (a '#' or '](' inside code is not a heading or a link)."""
    return _FENCE.sub("", path.read_text())


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6} (.+)$", _prose(path), flags=re.M):
        anchor = github_anchor(heading)
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path) if path else page
        if not linked.exists():
            broken.append(f"{page.name}: {target} (no such file)")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{page.name}: {target} (no such heading)")
    return broken


def test_readme_is_a_short_page():
    assert len(README.read_text().splitlines()) <= README_MAX_LINES


def test_every_relative_link_resolves():
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    assert [problem for page in pages for problem in broken_links(page)] == []


def test_link_check_catches_a_missing_heading(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n## Two words\n\n[ok](#two-words) [bad](#three-words) [gone](b.md)\n")
    assert broken_links(tmp_path / "a.md") == ["a.md: #three-words (no such heading)", "a.md: b.md (no such file)"]


def _cli_commands() -> set[str]:
    from greencode.cli import app

    root = typer.main.get_command(app)
    names = set()
    for name, command in root.commands.items():
        subcommands = getattr(command, "commands", None)
        names |= {f"{name} {sub}" for sub in subcommands} if subcommands else {name}
    return names


def test_readme_commands_table_names_every_command():
    table = [line for line in README.read_text().splitlines() if line.startswith("| `greencode ")]
    documented = {re.match(r"\| `greencode ((?:train )?[\w-]+)", line).group(1) for line in table}
    assert documented == _cli_commands()


def test_results_are_dated_newest_first_each_with_its_machine():
    sections = re.split(r"^## ", _prose(RESULTS), flags=re.M)[1:]
    dates = []
    for section in sections:
        heading = section.splitlines()[0]
        match = re.match(r"(\d{4}-\d{2}-\d{2}): \S", heading)
        assert match, f"results.md: '## {heading}' does not start with 'YYYY-MM-DD: '"
        dates.append(date.fromisoformat(match.group(1)))
        assert re.search(r"machine", section, flags=re.I), f"results.md: '{heading}' does not say its machine"
    assert dates and dates == sorted(dates, reverse=True)
