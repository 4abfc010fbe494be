"""Slurm's command line for the lab spawner: pure builders and parsers, and
the few calls that run sbatch, squeue and scancel on the hub host.

The hub submits as root with ``--uid``/``--gid`` (it cannot sudo: its unit has
NoNewPrivileges), the job's environment is the spawner's (``--export=ALL``
over a clean environment), and the batch script execs the lab.
"""

from __future__ import annotations

import asyncio
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hub_ext.process import CommandResult

# squeue's states of a job that may still run the lab (JOB STATE CODES in squeue(1))
WAITING_STATES = frozenset({"PENDING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED"})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING"})
_JOB_ID = re.compile(r"\d+")
_MEM = re.compile(r"(\d+)([KMGT]?)")
_MEM_FACTOR_MIB = {"K": 1 / 1024, "": 1 / (1024 * 1024), "M": 1, "G": 1024, "T": 1024 * 1024}


# What a user is told of Slurm's most common reasons for a waiting job
# (squeue(1), JOB REASON CODES); the reason itself is always shown too.
WAITING_REASONS = {
    "None": "being scheduled",
    "Resources": "every worker is busy",
    "Priority": "other jobs are ahead in the queue",
    "ReqNodeNotAvail": "no worker is available (down or drained)",
    "PartitionDown": "the partition is down",
    "PartitionNodeLimit": "no worker can hold what the lab asks for",
}


class SlurmError(RuntimeError):
    """sbatch, squeue or scancel failed, or answered what this module cannot read."""


@dataclass(frozen=True)
class JobRequest:
    """What one lab asks of Slurm."""

    job_name: str
    partition: str
    uid: int
    gid: int
    workdir: str
    mem_limit: str | None = None  # systemd's notation: digits with K/M/G/T
    cpu_limit: float | None = None
    gpus: int = 0  # GPUs as GRES (hub_ext.cluster.gres)


@dataclass(frozen=True)
class JobStatus:
    """One line of ``squeue -o '%T|%N|%r'``: state, node (empty while pending), reason."""

    state: str
    node: str
    reason: str

    @property
    def waiting(self) -> bool:
        return self.state in WAITING_STATES

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES


def waiting_reason(reason: str) -> str:
    """Why a job waits, for a user: Slurm's reason, explained when it is a common one."""
    # "ReqNodeNotAvail, UnavailableNodes:th-w1": the code is before the comma
    explained = WAITING_REASONS.get(reason.split(",", 1)[0].strip())
    return f"{explained} (Slurm: {reason})" if explained else f"Slurm: {reason or 'no reason given'}"


def mem_mib(limit: str) -> int:
    """A memory limit in systemd's notation ("512M", "2G", "1073741824") in MiB, rounded up."""
    found = _MEM.fullmatch(str(limit).strip().upper())
    if not found:
        raise ValueError(f"memory limit {limit!r}: digits with an optional K, M, G or T suffix")
    return max(1, math.ceil(int(found.group(1)) * _MEM_FACTOR_MIB[found.group(2)]))


def sbatch_argv(req: JobRequest) -> list[str]:
    """sbatch reading the batch script from stdin; --parsable prints the job id."""
    argv = [
        "sbatch", "--parsable", f"--job-name={req.job_name}", f"--partition={req.partition}",
        f"--uid={req.uid}", f"--gid={req.gid}", f"--chdir={req.workdir}",
        "--nodes=1", "--ntasks=1", "--export=ALL", "--output=/dev/null", "--no-requeue",
    ]
    if req.cpu_limit:
        argv.append(f"--cpus-per-task={max(1, math.ceil(req.cpu_limit))}")
    if req.mem_limit:
        argv.append(f"--mem={mem_mib(req.mem_limit)}M")
    if req.gpus:
        argv.append(f"--gres=gpu:{req.gpus}")
    return argv


# A lab on a worker runs as a lab unit without sudo does on one host: under
# NoNewPrivileges (no setuid gain; the lab's own seccomp filters then install)
NO_NEW_PRIVILEGES = ["setpriv", "--no-new-privs"]


def batch_script(cmd: Sequence[str], env: Mapping[str, str]) -> str:
    """The job: set the lab's own variables (HOME, ...) over what sbatch
    exported, then exec the lab, under NoNewPrivileges, in place of the shell
    (Slurm signals it)."""
    lines = ["#!/bin/sh"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())]
    lines.append("exec " + shlex.join([*NO_NEW_PRIVILEGES, *cmd]))
    return "\n".join(lines) + "\n"


def parse_job_id(stdout: str) -> str:
    """sbatch --parsable prints "<id>" or "<id>;<cluster>"."""
    job_id = stdout.strip().split(";", 1)[0]
    if not _JOB_ID.fullmatch(job_id):
        raise SlurmError(f"sbatch printed no job id: {stdout.strip()!r}")
    return job_id


def parse_status(stdout: str) -> JobStatus | None:
    """squeue's line for one job; None when Slurm no longer lists it (ended)."""
    line = stdout.strip()
    if not line:
        return None
    state, node, reason = (line.split("|") + ["", ""])[:3]
    return JobStatus(state=state.strip(), node=node.strip(), reason=reason.strip())


async def run(argv: Sequence[str], stdin: str | None = None,
              env: Mapping[str, str] | None = None) -> CommandResult:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=dict(env) if env is not None else None,
    )
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    return CommandResult(argv=tuple(argv), returncode=proc.returncode,
                         stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"))
