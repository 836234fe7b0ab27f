"""A small Dockerfile reader for the image tests (runtime and operator images)."""

from __future__ import annotations

from pathlib import Path

Stage = list[tuple[str, str]]


def stages(path: Path) -> list[Stage]:
    """(instruction, argument) pairs per stage, comments dropped and continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    result: list[Stage] = []
    for line in logical:
        instruction, _, argument = line.partition(" ")
        if instruction.upper() == "FROM":
            result.append([])
        result[-1].append((instruction.upper(), argument.strip()))
    return result


def one(stage: Stage, instruction: str) -> str:
    """The argument of the stage's only ``instruction``; fails if there is not exactly one."""
    values = [argument for name, argument in stage if name == instruction]
    assert len(values) == 1, f"expected exactly one {instruction}, got {values}"
    return values[0]
