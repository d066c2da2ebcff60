"""Shared fixtures: one local Ray cluster per test session, started only when a test needs it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Bundled models load from site-packages; a hub lookup would hang on these offline machines.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Starts a private local Ray for this session and shuts down only that one.

    ``address="local"`` never joins a cluster that happens to run on the machine. Logical CPUs are
    over-declared because agents and Serve replicas take fractions of a CPU; the real work is
    bounded by llama.cpp's thread count.
    """
    import ray

    # Workers import test helpers (consumer classes) by module name: give them our sys.path.
    root = str(Path(__file__).resolve().parent.parent)
    paths = [p for p in sys.path if p.startswith(root)]
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])
    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        yield
    finally:
        ray.shutdown()
