"""GPU detection (NVML), assignment policy and per-user usage."""
