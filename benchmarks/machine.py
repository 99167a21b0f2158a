"""What every benchmark prints first: the machine and the Python it ran on."""

from __future__ import annotations

import contextlib
import os
import platform
import sys


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe(extra: str = "") -> str:
    """Two lines: machine (platform, CPU, CPU count) and Python (plus ``extra``)."""
    return (f"machine: {platform.platform()} | {cpu_model()} | {os.cpu_count()} CPUs\n"
            f"python:  {platform.python_implementation()} {sys.version.split()[0]}{extra}")
