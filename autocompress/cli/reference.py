"""The command-line reference, generated from the argparse parser (never written by hand).

``python -m autocompress.cli.reference`` (from a source checkout) rewrites ``docs/cli.md`` (every command's full
``--help``) and the synopsis between the ``<!-- cli-synopsis -->`` markers in
``README.md``; the test suite fails when either is out of date.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
from pathlib import Path

WIDTH = "100"  # argparse wraps to $COLUMNS: fixed, so the text does not depend on the terminal
START, END = "<!-- cli-synopsis:start -->", "<!-- cli-synopsis:end -->"


@contextlib.contextmanager
def _columns():
    """argparse wraps to $COLUMNS when it formats: fix it while the text is made."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        yield
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    from .main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [("autocompress", parser), *sub.choices.items()]


def reference() -> str:
    """docs/cli.md: every command's help, as ``autocompress COMMAND --help`` prints it."""
    parts = ["# Command-line reference", "",
             "Generated from the parser by `python -m autocompress.cli.reference`; do not edit by hand.", ""]
    for name, parser in _parsers():
        title = name if name == "autocompress" else f"autocompress {name}"
        with _columns():
            parts += [f"## `{title}`", "", "```", parser.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def synopsis() -> str:
    """One usage block per command, for the README."""
    usages = []
    for _, parser in _parsers()[1:]:
        with _columns():
            usage = parser.format_usage().strip()
        usages.append(re.sub(r"^usage: ", "", usage))
    return "\n".join(["```", *usages, "```"])


def readme_with_synopsis(text: str) -> str:
    """``text`` (the README) with the synopsis between its markers replaced."""
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{synopsis()}\n{END}{after}"


def main(root: Path | None = None) -> None:
    root = root or Path(__file__).resolve().parents[2]  # the checkout: autocompress/cli/reference.py
    if not (root / "README.md").is_file():
        raise SystemExit(f"{root} is not a source checkout of autocompress (no README.md); run this from one")
    (root / "docs").mkdir(exist_ok=True)
    (root / "docs" / "cli.md").write_text(reference() + "\n", encoding="utf-8")
    readme = root / "README.md"
    readme.write_text(readme_with_synopsis(readme.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"wrote {root / 'docs' / 'cli.md'} and the synopsis in {readme}")


if __name__ == "__main__":
    main()
