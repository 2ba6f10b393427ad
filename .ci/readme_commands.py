"""The README's own commands, for CI to run as written (so the two cannot drift apart).

python3 .ci/readme_commands.py install   # the install line(s) of the README's "### Tests" block
python3 .ci/readme_commands.py test      # its full test command (the last pytest line)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def tests_block(text: str) -> list[str]:
    """The commands of the first bash block after the "### Tests" heading, comments stripped."""
    section = text.split("\n### Tests\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    if not block:
        raise SystemExit("README.md: no bash block under '### Tests'")
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def main() -> None:
    commands = tests_block(README.read_text())
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role == "install":
        chosen = [c for c in commands if c.startswith("pip install")]
    elif role == "test":
        chosen = [c for c in commands if c.startswith("python -m pytest")][-1:]
    else:
        raise SystemExit("usage: readme_commands.py install|test")
    if not chosen:
        raise SystemExit(f"README.md: no {role} command in the Tests block")
    print("\n".join(chosen))


if __name__ == "__main__":
    main()
