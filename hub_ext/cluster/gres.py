"""The cluster's GPUs as Slurm GRES (docs/cluster.md, "GPUs as GRES").

What NVML finds on a worker (``hub_ext.gpu.nvml.detect``, the same detection
as on one host) becomes that worker's ``gres.conf`` lines and its count in
``slurm.conf`` (``Gres=gpu:N``); the platform's GPU policy becomes the number
of GPUs a lab's job asks for (``--gres=gpu:N``). Slurm then picks the GPUs,
``ConstrainDevices`` hides the others from the job and Slurm sets its
``CUDA_VISIBLE_DEVICES``. Pure, apart from :func:`main`, which the slurm role
runs on each worker with GPUs and reads as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence

from hub_ext.gpu.nvml import Detection, NvmlUnavailable, detect, load_nvml
from hub_ext.gpu.policy import choose_gpus


def worker_gres(node: str, detection: Detection) -> dict:
    """One worker's GPUs for Slurm: ``count`` (slurm.conf's ``Gres=gpu:<count>``),
    ``gres_conf`` (a line per GPU naming its device file, which
    ``ConstrainDevices`` needs) and NVML's ``errors`` (a GPU NVML could not
    read is left out, as on one host)."""
    gpus = sorted(detection.gpus, key=lambda g: g.index)
    return {
        "count": len(gpus),
        "gres_conf": [f"NodeName={node} Name=gpu File={g.device}" for g in gpus],
        "errors": list(detection.errors),
    }


def lab_gpu_count(policy: str, worker_gpus: int, groups: Iterable[str] = (),
                  group_devices: Mapping[str, Sequence[int]] | None = None,
                  group_counts: Mapping[str, int] | None = None) -> int:
    """How many GPUs one lab's job asks for: the policy applied to a worker with
    ``worker_gpus`` GPUs. ``all``: every GPU of a worker; ``round-robin``: one;
    ``group``: the count the user's groups give (a group's index list counts
    only by its length: which GPUs a job gets is Slurm's choice). A GRES is one
    job's at a time, so on the cluster labs never share a GPU."""
    return len(choose_gpus(policy, range(worker_gpus), groups=groups,
                           group_devices=group_devices, group_counts=group_counts))


def lab_environment(gpus: int) -> dict[str, str]:
    """The GPU variables of a lab's job (named as on one host,
    hub_ext.gpu.policy.lab_environment), without ``CUDA_VISIBLE_DEVICES`` and
    ``NVIDIA_VISIBLE_DEVICES``: Slurm sets the first for the GPUs it allocated."""
    has = "1" if gpus else "0"
    return {
        "NVIDIA_DETECTED": "1",
        "JUPYTERHUB_GPU_ENABLED": "1",
        "ENABLE_GPU_SUPPORT": has,
        "ENABLE_GPUSTAT": has,
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m hub_ext.cluster.gres NODE``: this worker's GPUs as JSON (worker_gres)."""
    parser = argparse.ArgumentParser(prog="python -m hub_ext.cluster.gres", description=main.__doc__)
    parser.add_argument("node", help="this worker's Slurm node name (its hostname)")
    parser.add_argument("--nvml-module", default="pynvml", help="the NVML binding to import (a test seam)")
    args = parser.parse_args(argv)
    try:
        detection = detect(load_nvml(args.nvml_module))
    except NvmlUnavailable as e:
        detection = Detection(errors=(str(e),))
    json.dump(worker_gres(args.node, detection), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
