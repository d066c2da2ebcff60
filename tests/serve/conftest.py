"""Serve fixtures: the real model app on the session's Ray, on a free port."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from serve import ModelSettings, ServeSettings, deploy, shutdown

TEST_MODEL = "smollm2-135m"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def serve_settings() -> ServeSettings:
    """Settings of the test app: the bundled model on a small context, a port nobody holds."""
    return ServeSettings(
        port=_free_port(),
        app_name="troupe-models-test",
        route_prefix="/serve-test",
        # One llama.cpp thread: two collapse when other processes hold a core (see engine tests).
        models=[
            ModelSettings(
                name=TEST_MODEL, n_ctx=1024, n_threads=1, num_cpus=0.5, max_ongoing_requests=8
            )
        ],
    )


@pytest.fixture(scope="session")
def serve_base_url(ray_session: None, serve_settings: ServeSettings) -> Iterator[str]:
    """Runs the model app on the session's Ray; deletes only this app afterwards."""
    base_url = deploy(serve_settings)
    try:
        yield base_url
    finally:
        shutdown(serve_settings)
