"""Every `semimtl-geo` command in the README parses against the real CLI; cheap ones run."""

import re
import shlex
from pathlib import Path

import click
import pytest

from semimtl_geo.cli.main import cli, main

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[list[str]]:
    """The `semimtl-geo ...` lines of the README's bash blocks, continuations joined."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        block = re.sub(r"\\\n\s*", " ", block)
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            for part in line.split(";"):
                part = part.strip().removeprefix("do ").strip()
                words = shlex.split(part) if part else []
                while words and words[0] != "semimtl-geo" and not words[0].endswith(
                    "/semimtl-geo"
                ):
                    words = words[1:]
                if words:
                    commands.append(words[1:])
    return commands


def _parse(argv: list[str]) -> None:
    group: click.Command = cli
    name = "semimtl-geo"
    while isinstance(group, click.Group):
        assert argv, f"incomplete command: {name}"
        sub = group.get_command(click.Context(group), argv[0])
        assert sub is not None, f"README names unknown command '{argv[0]}' under {name}"
        name, group, argv = argv[0], sub, argv[1:]
    with group.make_context(name, [a for a in argv if "$" not in a], resilient_parsing=False):
        pass


COMMANDS = readme_commands()


def test_readme_has_commands_for_every_subcommand() -> None:
    named = {c[0] for c in COMMANDS if c}
    assert set(cli.commands) <= named, f"README lacks examples of {set(cli.commands) - named}"


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_readme_command_parses(argv: list[str]) -> None:
    _parse(argv)


def test_readme_example_data_commands_run(tmp_path, monkeypatch) -> None:
    """The README's quick start: synthesize and prepare, run for real (small sizes)."""
    monkeypatch.chdir(tmp_path)
    synth = next(c for c in COMMANDS if c[0] == "synthesize-isprs" and "data/synth_raw" in c)
    prep = next(c for c in COMMANDS if c[0] == "prepare-isprs" and "data/synth_raw/potsdam" in c)
    assert main([*synth, "--size-potsdam", "200", "--size-vaihingen", "130"]) == 0
    assert main(prep) == 0
    assert (tmp_path / "data" / "isprs" / "manifest.json").is_file()
