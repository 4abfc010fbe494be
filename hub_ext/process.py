"""Run external commands without a shell, behind an injectable seam.

Modules that manage host state (unix accounts, later units) take a
``runner`` argument so unit tests can replace the real processes with a fake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CommandResult:
    """What a finished command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0


CommandRunner = Callable[[Sequence[str]], Awaitable[CommandResult]]


class CommandError(RuntimeError):
    """A command exited non-zero where success was required."""

    def __init__(self, result: CommandResult, what: str = ""):
        self.result = result
        detail = result.stderr.strip() or result.stdout.strip() or "no output"
        prefix = f"{what}: " if what else ""
        super().__init__(
            f"{prefix}{' '.join(result.argv)} exited {result.returncode}: {detail}"
        )


async def run_command(argv: Sequence[str]) -> CommandResult:
    """Run argv (a list, never a shell string) and capture its output."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await proc.communicate()
    return CommandResult(
        argv=tuple(argv),
        returncode=proc.returncode,
        stdout=stdout.decode(errors="replace"),
        stderr=stderr.decode(errors="replace"),
    )
