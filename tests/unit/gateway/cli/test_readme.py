"""The README's commands run as written: each `blindpost` line of its walkthrough names a
command that exists and arguments it accepts, with one consistent prefix."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from gateway.cli.program import main

README = Path(__file__).parents[4] / "README.md"


def _walkthrough() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Using it"):]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, "the README's walkthrough has no sh block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def _parse(argv: list[str]) -> None:
    """Resolve ``argv`` to a command and parse its arguments, as running it would."""
    command: click.Command = main
    ctx = click.Context(main, info_name="blindpost")
    while isinstance(command, click.Group):
        name, argv = argv[0], argv[1:]
        found = command.get_command(ctx, name)
        assert found is not None, f"no command {name!r}"
        command = found
        ctx = click.Context(command, info_name=name, parent=ctx)
    command.make_context(command.name, argv, parent=ctx.parent)


def test_every_blindpost_line_of_the_walkthrough_parses(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _walkthrough()
    assert lines[0].startswith(". .venv/bin/activate")
    commands = [shlex.split(line, comments=True) for line in lines]
    blindpost = [argv for argv in commands if argv and argv[0] == "blindpost"]
    assert len(blindpost) >= 8
    # The files the walkthrough names (keys, the downloaded file) exist by then.
    monkeypatch.chdir(tmp_path)
    for argv in blindpost:
        for before, word in zip(["", *argv], argv, strict=False):
            if re.fullmatch(r"[\w-]+\.(key|pub|age|csv)", word) or before == "--key":
                (tmp_path / word).touch()
        if "--out" in argv:
            (tmp_path / argv[argv.index("--out") + 1]).mkdir(exist_ok=True)
    for argv in blindpost:
        _parse(argv[1:])
    # One prefix: no line reaches for another copy of the program.
    assert not [line for line in lines if ".venv/bin/blindpost" in line or "$B" in line]
