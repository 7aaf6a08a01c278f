"""Print the README's set-up commands, one per line, exactly as the README prints them.

They are the fenced ``bash`` blocks of the section whose heading starts with "Set-up"; each
block holds one command. ``.ci/run`` runs what this prints, so CI runs what a new user types.
"""

import sys


def setup_commands(readme: str) -> list[str]:
    commands, in_section, block = [], False, None
    for line in readme.splitlines():
        if line.startswith("## "):
            in_section = line[3:].lower().startswith("set-up")
            continue
        if not in_section:
            continue
        if block is None and line.strip() == "```bash":
            block = []
        elif block is not None and line.strip() == "```":
            # One command per block; a line ending in a backslash continues on the next.
            parts = [part.strip().removesuffix("\\").strip() for part in block]
            commands.append(" ".join(part for part in parts if part))
            block = None
        elif block is not None:
            block.append(line)
    return commands


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as file:
        print("\n".join(setup_commands(file.read())))
