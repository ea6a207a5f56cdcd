"""Every row of docs/errors.md, run verbatim: exit status and one-sentence message.

The table is the documentation users read; this test keeps it true. Each row runs in a
fresh copy (hard links) of the folder :func:`_error_sandbox.build_sandbox` writes, so the
rows do not depend on each other.
"""

import os
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from _cli_text import without_logging_errors
from _error_sandbox import build_sandbox

from semimtl_geo.cli.main import cli, main

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


def table_rows() -> list[tuple[str, str, int, str]]:
    """``(situation, command, exit status, message)`` of every table row in the doc."""
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| ") or "`semimtl-geo " not in line:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 4, line
        situation, command, status, message = cells
        rows.append((situation, command.strip("`"), int(status), message))
    return rows


ROWS = table_rows()


def _pattern(message: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in message.split("…")]
    return re.compile(r"Error: " + ".*?".join(parts) + r"\s*$", re.MULTILINE)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return build_sandbox(tmp_path_factory.mktemp("errors") / "sandbox")


def test_the_table_covers_every_command():
    commands = {shlex.split(cmd)[1] for _, cmd, _, _ in ROWS}
    assert set(cli.commands) <= commands, set(cli.commands) - commands
    assert len(ROWS) >= 60


@pytest.mark.parametrize(("situation", "command", "status", "message"), ROWS,
                         ids=[f"{r[1].split()[1]}: {r[0]}" for r in ROWS])
def test_error_row(pristine, tmp_path, monkeypatch, capsys, situation, command, status,
                   message):
    if "(no GPU)" in situation and torch.cuda.is_available():
        pytest.skip("this row describes a machine without CUDA")
    sandbox = tmp_path / "sandbox"
    shutil.copytree(pristine, sandbox, copy_function=os.link, symlinks=True)
    monkeypatch.chdir(sandbox)
    argv = shlex.split(command)
    assert argv[0] == "semimtl-geo"
    assert main(argv[1:]) == status
    err = without_logging_errors(capsys.readouterr().err)
    assert "Traceback" not in err
    assert _pattern(message).search(err), f"expected: Error: {message}\ngot:\n{err[-1500:]}"
