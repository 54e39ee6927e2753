"""Run every ```python block of docs/*.md and README.md, so the docs cannot drift from the code.

Each block runs in a fresh module namespace, with the project root as the working directory and
a private ``BOOKSTORE_DB``. A block opts out only with the line ``<!-- not-tested: reason -->``
right before its fence; it is then reported as skipped with that reason.
"""

from __future__ import annotations

import re
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from workflowhttp.workflow import STATES, draw

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = (
    "getting-started.md",
    "lifecycle.md",
    "listeners.md",
    "controllers.md",
    "responses.md",
    "deployment.md",
    "security.md",
    "middleware.md",
    "events.md",
    "performance.md",
    "proxy.md",
    "hooks.md",
    "openapi.md",
    "trace.md",
    "testing.md",
    "architecture.md",
)
FILES = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]

_FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
_OPT_OUT = re.compile(r"^<!--\s*not-tested:\s*(\S.*?)\s*-->$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    file: Path
    language: str
    index: int  # 1-based among the file's blocks of this language
    line: int  # the line of the first code line
    code: str
    opt_out: str | None

    @property
    def id(self) -> str:
        return f"{self.file.name}:{self.index}"


def fenced_blocks(path: Path) -> list[Block]:
    """Return the fenced code blocks of ``path``, with the opt-out comment preceding each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    counts: dict[str, int] = {}
    previous = ""  # the last non-blank line before the current one, outside code
    number = 0
    while number < len(lines):
        opening = _FENCE.match(lines[number])
        if opening is None:
            if lines[number].strip():
                previous = lines[number].strip()
            number += 1
            continue
        language = opening.group(2).lower()
        start = number + 1
        number = start
        while number < len(lines) and lines[number].strip() != "```":
            number += 1
        if number == len(lines):
            raise AssertionError(f"{path.name}:{start}: unclosed code fence")
        counts[language] = counts.get(language, 0) + 1
        skipped = _OPT_OUT.match(previous)
        blocks.append(
            Block(
                file=path,
                language=language,
                index=counts[language],
                line=start + 1,
                code=textwrap.dedent("\n".join(lines[start:number])),
                opt_out=skipped.group(1) if skipped else None,
            )
        )
        previous = "```"
        number += 1
    return blocks


def _python_blocks() -> list[object]:
    params = []
    for path in FILES:
        for block in fenced_blocks(path):
            if block.language != "python":
                continue
            skip = pytest.mark.skip(reason=f"not-tested: {block.opt_out}")
            marks = [skip] if block.opt_out else []
            params.append(pytest.param(block, id=block.id, marks=marks))
    return params


@pytest.mark.parametrize("block", _python_blocks())
def test_python_block(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.setenv("BOOKSTORE_DB", str(tmp_path / "bookstore.sqlite3"))
    name = "docs_" + re.sub(r"\W", "_", block.id)
    module = types.ModuleType(name)
    module.__file__ = str(block.file)
    # dataclasses, msgspec and typing resolve annotations through sys.modules[__module__].
    monkeypatch.setitem(sys.modules, name, module)
    # Leading blank lines make tracebacks point at the Markdown file's own line numbers.
    source = "\n" * (block.line - 1) + block.code
    exec(compile(source, str(block.file), "exec"), module.__dict__)


def test_every_page_exists_and_has_runnable_snippets() -> None:
    for page in PAGES:
        path = DOCS / page
        assert path.is_file(), f"docs/{page} is missing"
        blocks = [b for b in fenced_blocks(path) if b.language == "python"]
        assert blocks, f"docs/{page} has no python snippet"
        assert sum(b.opt_out is not None for b in blocks) <= 1, f"docs/{page}: too many opt-outs"


def test_readme_links_to_existing_pages() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#]+\.md)\)", readme):
        assert (ROOT / target).is_file(), f"README links to a missing {target}"


def test_lifecycle_diagram_is_the_generated_one() -> None:
    """The Mermaid diagram pasted into lifecycle.md is what ``workflowhttp graph`` prints."""
    mermaid = [b for b in fenced_blocks(DOCS / "lifecycle.md") if b.language == "mermaid"]
    assert len(mermaid) == 1, "lifecycle.md needs exactly one ```mermaid block"
    assert _lines(mermaid[0].code) == _lines(str(draw("mermaid"))), (
        "regenerate it with: python -m workflowhttp graph"
    )
    for state in STATES:
        assert f'state "{state}" as {state}' in mermaid[0].code


def test_proxy_diagram_is_the_generated_one() -> None:
    """The diagram in proxy.md is what ``workflowhttp graph --workflow proxy`` prints."""
    mermaid = [b for b in fenced_blocks(DOCS / "proxy.md") if b.language == "mermaid"]
    assert len(mermaid) == 1, "proxy.md needs exactly one ```mermaid block"
    assert _lines(mermaid[0].code) == _lines(str(draw("mermaid", workflow="proxy"))), (
        "regenerate it with: python -m workflowhttp graph --workflow proxy"
    )


def _lines(text: str) -> list[str]:
    """Compare diagrams line by line, ignoring trailing blanks (editors strip them)."""
    return [line.rstrip() for line in text.strip().splitlines()]


def test_block_parser_reads_opt_outs(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n```python\nx = 1\n```\n\n<!-- not-tested: needs a network -->\n"
        "```python\ny = 2\n```\n```sh\nls\n```\n",
        encoding="utf-8",
    )
    first, second, shell = fenced_blocks(page)
    assert (first.id, first.line, first.code, first.opt_out) == ("page.md:1", 4, "x = 1", None)
    assert (second.id, second.opt_out) == ("page.md:2", "needs a network")
    assert (shell.language, shell.code) == ("sh", "ls")
