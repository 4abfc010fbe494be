"""Benchmark and real-hardware check of hub_ext.gpu (docs/gpu.md, "On real hardware").

Run it on a host with an NVIDIA GPU and nvidia-ml-py importable (no hub, no
systemd needed):

    python3 tests/bench/gpu_hardware.py [--nvml pynvml] [--out result.json]

It prints one JSON document: the GPUs detect() found, the detection time (the
first, cold call including ``import pynvml`` and ``nvmlInit``, then the
median / max of 20 warm calls), and usage with a real GPU process: when
PyTorch is there, a child process allocates 1 GiB on GPU 0 and is moved into
a cgroup named like a lab unit (``/sys/fs/cgroup/jupyter-gpucheck-singleuser.service``,
as systemd would place it), so gpu_usage() must map its memory to the user
"gpucheck" through /proc/<pid>/cgroup. A child started with
CUDA_VISIBLE_DEVICES=<uuid> (what a lab gets) reports how many devices CUDA sees.
Nothing asserts a time: the numbers are the result. With --fake N it runs the
same code on tests/fake_nvml.py with N GPUs (for machines without a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hub_ext.gpu.nvml import Detection, NvmlUnavailable, detect, load_nvml  # noqa: E402
from hub_ext.gpu.policy import MODE_AUTO, lab_environment, resolve_mode, unit_properties  # noqa: E402
from hub_ext.gpu.usage import gpu_usage, read_proc_cgroup, usage_by_user  # noqa: E402

UNIT = "jupyter-gpucheck-singleuser.service"
CHILD = """
import sys, time, torch
x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda:0")
torch.cuda.synchronize()
print("ready", flush=True)
time.sleep(float(sys.argv[1]))
"""


def timed_detection(module: str, fake: int | None):
    started = time.perf_counter()
    if fake is None:
        try:
            nvml = load_nvml(module)
        except NvmlUnavailable as e:
            return None, Detection(errors=(str(e),)), {}
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from fake_nvml import FakeNvml, fake_gpu

        nvml = FakeNvml([fake_gpu(i) for i in range(fake)])
    first = detect(nvml)
    cold = time.perf_counter() - started
    warm = [detect(nvml).seconds for _ in range(20)]
    return nvml, first, {
        "cold_s_including_import": round(cold, 4),
        "first_detect_s": round(first.seconds, 4),
        "warm_median_s": round(statistics.median(warm), 4),
        "warm_max_s": round(max(warm), 4),
    }


def into_unit_cgroup(pid: int) -> str | None:
    """Move pid into a cgroup named like a lab unit; the error text if that fails."""
    path = Path("/sys/fs/cgroup") / UNIT
    try:
        path.mkdir(exist_ok=True)
        (path / "cgroup.procs").write_text(f"{pid}\n")
        return None
    except OSError as e:
        return f"{type(e).__name__}: {e}"


def torch_checks(nvml, detection) -> dict:
    result: dict = {}
    try:
        import torch  # noqa: F401
    except ImportError:
        return {"skipped": "PyTorch not importable: no GPU process to measure"}
    # what a lab sees with CUDA_VISIBLE_DEVICES=<uuid> (lab_environment)
    if detection.gpus:
        env = dict(os.environ, **lab_environment(True, True, detection.gpus[:1]))
        seen = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.cuda.device_count(), torch.cuda.get_device_name(0))"],
            env=env, capture_output=True, text=True, timeout=120,
        )
        result["cuda_visible_devices"] = env["CUDA_VISIBLE_DEVICES"]
        result["cuda_sees"] = (seen.stdout or seen.stderr).strip()[-300:]
    child = subprocess.Popen([sys.executable, "-c", CHILD, "60"], stdout=subprocess.PIPE, text=True)
    try:
        result["cgroup_move_error"] = into_unit_cgroup(child.pid)
        line = child.stdout.readline().strip()
        result["child_ready"] = line == "ready"
        result["child_pid"] = child.pid
        result["child_cgroup"] = read_proc_cgroup(child.pid)
        time.sleep(1)
        started = time.perf_counter()
        usage = gpu_usage(nvml, units={UNIT: "gpucheck"})
        result["usage_s"] = round(time.perf_counter() - started, 4)
        result["usage"] = [asdict(u) for u in usage]
        result["by_user"] = usage_by_user(usage)
    finally:
        child.kill()
        child.wait()
        try:
            (Path("/sys/fs/cgroup") / UNIT).rmdir()
        except OSError:
            pass
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nvml", default="pynvml")
    parser.add_argument("--fake", type=int, default=None)
    parser.add_argument("--out")
    args = parser.parse_args()
    nvml, detection, times = timed_detection(args.nvml, args.fake)
    report = {
        "nvml_module": getattr(nvml, "__file__", "fake" if nvml is not None else None),
        "detection": detection.as_dict(),
        "timing": times,
        "enabled_in_auto_mode": resolve_mode(MODE_AUTO, detection),
        "unit_properties_round_robin_first": unit_properties(True, detection.gpus[:1]),
        "lab_environment_first": lab_environment(True, bool(detection.gpus), detection.gpus[:1]),
    }
    if args.fake is None and detection.gpus:
        report["torch"] = torch_checks(nvml, detection)
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
