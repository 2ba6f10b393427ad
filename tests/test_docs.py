"""The documents as a reader meets them: links that land, a README that stays short and says the
same in both languages, commands that the command line accepts, and code in functions one can read."""

from __future__ import annotations

import ast
import importlib
import re
import shlex
from dataclasses import fields
from pathlib import Path

import pytest

from cifar_onnx.settings import Settings

REPO = Path(__file__).resolve().parent.parent
README, README_UK = REPO / "README.md", REPO / "README.uk.md"
DOCUMENTS = [README, README_UK, *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "RESULTS.md"]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(text: str) -> list[tuple[int, str]]:
    """(level, title) of every heading outside code blocks."""
    prose = FENCE.sub("", text)
    return [(len(m.group(1)), m.group(2)) for m in re.finditer(r"^(#{1,6}) (.+)$", prose, re.M)]


def anchors(path: Path) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as on GitHub."""
    counts: dict[str, int] = {}
    for _, title in headings(path.read_text()):
        base = slug(title)
        counts[base] = counts.get(base, -1) + 1
    return {f"{base}-{n}" if n else base for base, top in counts.items() for n in range(top + 1)}


@pytest.mark.parametrize("doc", DOCUMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_lands(doc: Path) -> None:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", doc.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        lands = dest.exists() and (not anchor or dest.suffix != ".md" or anchor in anchors(dest))
        if not lands:
            broken.append(target)
    assert not broken, f"{doc.name}: links that land nowhere: {broken}"


def test_readme_is_short_and_free_of_run_logs() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b|\d\d:\d\d UTC", text), "dates belong in docs/HISTORY.md"
    assert not re.search(r"EPYC|Xeon|Zen \d|Ryzen|Core i\d", text), "CPU models belong in benchmarks/RESULTS.md"


def _code(text: str) -> list[str]:
    """Code blocks with comments removed: the commands, whatever language explains them."""
    blocks = []
    for block in FENCE.findall(text):
        lines = [line.split("  #")[0].rstrip() for line in block.splitlines()]
        blocks.append("\n".join(line for line in lines if line and not line.lstrip().startswith("#")))
    return blocks


def test_ukrainian_readme_says_the_same_section_for_section() -> None:
    en, uk = README.read_text(), README_UK.read_text()
    assert [level for level, _ in headings(en)] == [level for level, _ in headings(uk)]
    assert _code(en) == _code(uk)
    setting = re.compile(r"CIFAR_ONNX_[A-Z0-9_]+")
    assert set(setting.findall(en)) == set(setting.findall(uk))
    assert re.findall(r"<!-- table:(\w+) -->", en) == re.findall(r"<!-- table:(\w+) -->", uk)


def test_every_setting_is_in_the_readme_table() -> None:
    table = README.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    missing = [f"CIFAR_ONNX_{f.name.upper()}" for f in fields(Settings) if f"CIFAR_ONNX_{f.name.upper()}" not in table]
    assert not missing


def _commands(text: str) -> list[str]:
    """Every `python -m training.X ...` line of the documents' code blocks, continuations joined."""
    found = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split("  #")[0].strip()
            found += [part.strip() for part in command.split("&&") if part.strip().startswith("python -m training.")]
    return found


REPRODUCE = sorted({c for doc in (README, REPO / "docs" / "MODEL.md") for c in _commands(doc.read_text())})


@pytest.mark.parametrize("command", REPRODUCE)
def test_documented_training_commands_are_accepted_by_the_cli(command: str) -> None:
    words = shlex.split(command.replace("$R", "/tmp/runs").replace("...", ""))
    module = importlib.import_module(words[2])
    try:
        module.parser().parse_args(words[3:])
    except SystemExit as stop:
        pytest.fail(f"{command!r}: the command line refuses it (exit {stop.code})")


def test_reproduce_block_covers_every_served_file() -> None:
    reproduce = (REPO / "docs" / "MODEL.md").read_text().split("## Reproduce", 1)[1]
    for meta in (REPO / "model").glob("*.json"):
        assert f"--name {meta.stem}" in reproduce, f"MODEL.md does not say how to remake {meta.stem}"


def _functions(root: Path) -> list[tuple[str, int]]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found.append((f"{path.relative_to(REPO)}:{node.name}", node.end_lineno - node.lineno + 1))
    return found


def test_no_function_is_longer_than_80_lines() -> None:
    roots = [REPO / "src" / "cifar_onnx", REPO / "training", REPO / "benchmarks"]
    long = [(name, n) for root in roots for name, n in _functions(root) if n > 80]
    assert not long, f"split these into named steps: {long}"
