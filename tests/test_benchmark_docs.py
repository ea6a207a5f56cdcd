"""The benchmark scripts' usage examples reach ``--help`` and ``pydoc`` as written."""

import io
import tokenize
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_usage_line_continuations_survive_the_docstring(script: Path) -> None:
    """A shell continuation (``\\`` at a line's end) in a non-raw docstring is eaten by
    Python's string literal, which printed the commands as one line with runs of spaces."""
    tokens = tokenize.generate_tokens(io.StringIO(script.read_text()).readline)
    first = next(t for t in tokens if t.type == tokenize.STRING)
    if "\\\n" in first.string:
        prefix = first.string[: first.string.index('"')].lower()
        assert "r" in prefix, f"{script.name}: make the module docstring a raw string (r\"\"\")"
