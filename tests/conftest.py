"""Shared fixtures: one local Ray cluster per test session, started only when a test needs it."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from serve import ServeSettings

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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def serve_settings() -> ServeSettings:
    """The test model app: the bundled chat and embeddings models, a port nobody holds.

    One llama.cpp thread: with two, its threads spin on a barrier and generation collapses
    (~0.3 tok/s instead of ~38) whenever another process holds one of the two cores.
    """
    from serve import (
        LlamaCppSettings,
        PassthroughSettings,
        SentenceTransformersSettings,
        ServeSettings,
    )

    return ServeSettings(
        port=_free_port(),
        app_name="troupe-models-test",
        route_prefix="/serve-test",
        models=[
            LlamaCppSettings(
                name="smollm2-135m", n_ctx=1024, n_threads=1, num_cpus=0.5, max_ongoing_requests=8
            ),
            SentenceTransformersSettings(name="minilm-l6-v2", num_cpus=0.25, max_inputs=16),
            # Nothing listens there: every call fails over to the local model.
            PassthroughSettings(
                name="offline-remote",
                base_url=f"http://127.0.0.1:{_free_port()}/v1",
                timeout_s=5,
                fallbacks=["smollm2-135m"],
            ),
        ],
    )


@pytest.fixture(scope="session")
def serve_base_url(ray_session: None, serve_settings: ServeSettings) -> Iterator[str]:
    """Runs the model app once per session on the session's Ray; deletes only this app."""
    from serve import deploy, shutdown

    base_url = deploy(serve_settings)
    try:
        yield base_url
    finally:
        shutdown(serve_settings)
