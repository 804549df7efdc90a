from __future__ import annotations

from pathlib import Path

from autocompress.cli.reference import readme_with_synopsis, reference

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "out of date: run python -m autocompress.cli.reference"


def test_docs_cli_md_is_the_parsers_help():
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    assert text == reference() + "\n", f"docs/cli.md is {REGENERATE}"
    for command in ("search", "worker", "apply", "latency", "profile", "report", "export", "show"):
        assert f"## `autocompress {command}`" in text


def test_the_readme_synopsis_is_the_parsers_usage():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_with_synopsis(readme) == readme, f"the README's command synopsis is {REGENERATE}"
    assert "autocompress worker [-h] --storage URL" in readme
