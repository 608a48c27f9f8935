"""docs/design.md's module tables name every module under syncd/, and nothing that is gone; README stays small.

The tables ("Modules and their owners") are how a newcomer finds a module's room; a module
added without a row, or a row left behind by a rename, makes them lie. The first cell of each
row lists its modules in backticks, relative to syncd/ (syncctl's with their `syncctl/` prefix).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"


def table_modules() -> set[str]:
    text = DESIGN.read_text()
    section = text.split("## Modules and their owners", 1)[1].split("\n## ", 1)[0]
    named: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith("| module") and not line.startswith("| ---"):
            first_cell = line.split("|")[1]
            named.update(re.findall(r"`([\w/]+\.py)`", first_cell))
    return named


def package_modules() -> set[str]:
    """Every module of syncd/ relative to it; a folder's __init__.py only where it holds more than a docstring."""
    found = set()
    for path in (ROOT / "syncd").rglob("*.py"):
        relative = path.relative_to(ROOT / "syncd").as_posix()
        if path.name == "__init__.py" and path.parent != ROOT / "syncd" and not _has_code(path):
            continue  # a folder's docstring: the folder has its own table
        found.add(relative)
    return found


def _has_code(path: Path) -> bool:
    body = re.sub(r'^"""[\s\S]*?"""', "", path.read_text().lstrip())
    return any(line.strip() and not line.startswith(("from __future__", "#")) for line in body.splitlines())


def test_every_module_under_syncd_has_a_row_in_the_design_doc():
    missing = package_modules() - table_modules()
    assert not missing, f"docs/design.md's module tables lack: {sorted(missing)}"


def test_every_module_the_design_doc_names_exists():
    stale = {name for name in table_modules()
             if not (ROOT / name).exists() and not (ROOT / "syncd" / name).exists()}
    assert not stale, f"docs/design.md names modules that do not exist: {sorted(stale)}"


def test_the_check_reads_the_tables():
    assert {"daemon.py", "db/daywrite.py", "sources/childproc.py", "syncctl/client.py"} <= table_modules()


def test_the_readme_stays_within_12_kb_and_links_its_detail_pages():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 12 * 1024, "README.md is over 12 KB: move detail to a docs/ page linked from it"
    for page in re.findall(r"\]\((docs/[\w.-]+\.md)", readme):
        assert (ROOT / page).exists(), page
