"""What machine this is: names for logs, configs and benchmark records."""

from __future__ import annotations

import platform


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
