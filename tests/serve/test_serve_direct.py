"""The ingress replica's direct HTTP listener: unit tests, then the real app on Ray."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable, Iterator

import httpx
import openai
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from protocols import ConfigurationError
from serve import PassthroughSettings, ServeSettings, deploy, proxy_url, shutdown
from serve._direct import DirectListener, free_port


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, str]:
        return {"object": "list"}

    @app.get("/slow")
    async def slow() -> dict[str, bool]:
        await asyncio.sleep(0.3)
        return {"done": True}

    return app


def _serve(
    check: Callable[[DirectListener, httpx.AsyncClient], Awaitable[None]],
    *,
    host: str = "127.0.0.1",
    prefix: str = "/",
) -> None:
    async def main() -> None:
        listener = DirectListener(_app(), host=host, port=0, route_prefix=prefix)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{listener.port}") as client:
                await check(listener, client)
        finally:
            await listener.close()

    asyncio.run(main())


def test_serves_the_app_at_its_port() -> None:
    async def check(listener: DirectListener, client: httpx.AsyncClient) -> None:
        assert listener.serving
        assert (await client.get("/v1/models")).json() == {"object": "list"}
        assert listener.url("10.0.0.7") == f"http://127.0.0.1:{listener.port}/v1"

    _serve(check)


def test_route_prefix_is_the_root_path_and_other_paths_are_openai_404s() -> None:
    async def check(listener: DirectListener, client: httpx.AsyncClient) -> None:
        assert (await client.get("/models-api/v1/models")).status_code == 200
        outside = await client.get("/v1/models")
        assert outside.status_code == 404
        assert outside.json()["error"]["code"] == "unknown_url"
        assert "/models-api" in outside.json()["error"]["message"]
        # A path that only starts with the prefix's letters is outside it too.
        assert (await client.get("/models-apix/v1/models")).status_code == 404
        assert listener.url("10.0.0.7") == f"http://127.0.0.1:{listener.port}/models-api/v1"

    _serve(check, prefix="/models-api/")


def test_a_wildcard_host_gives_the_node_address() -> None:
    async def check(listener: DirectListener, client: httpx.AsyncClient) -> None:
        assert listener.url("10.0.0.7") == f"http://10.0.0.7:{listener.port}/v1"
        assert (await client.get("/v1/models")).status_code == 200

    _serve(check, host="0.0.0.0")


def test_a_port_in_use_says_which_setting_to_change() -> None:
    async def main() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(ConfigurationError, match=f"127.0.0.1:{port}.*serve.direct_port"):
                DirectListener(_app(), host="127.0.0.1", port=port)

    asyncio.run(main())


def test_close_finishes_requests_in_flight_then_frees_the_port() -> None:
    async def main() -> None:
        listener = DirectListener(_app(), host="127.0.0.1", port=0)
        port = listener.port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            in_flight = asyncio.create_task(client.get("/slow"))
            await asyncio.sleep(0.1)
            await listener.close()
            assert (await in_flight).json() == {"done": True}
        assert not listener.serving
        # The port is free again: a restarted replica binds it at once.
        again = DirectListener(_app(), host="127.0.0.1", port=port)
        await again.close()

    asyncio.run(main())


def test_every_request_is_observed_with_its_route_status_and_time() -> None:
    seen: list[tuple[str, str, int, float]] = []
    app = _app()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    async def main() -> None:
        listener = DirectListener(
            app,
            host="127.0.0.1",
            port=0,
            route_prefix="/p",
            observe=lambda *request: seen.append(request),
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{listener.port}") as client:
                assert (await client.get("/p/v1/models")).status_code == 200
                assert (await client.post("/p/v1/models")).status_code == 405
                assert (await client.get("/elsewhere")).status_code == 404
                with contextlib.suppress(httpx.HTTPError, RuntimeError):
                    await client.get("/p/boom")
        finally:
            await listener.close()

    asyncio.run(main())

    assert [(route, method, status) for route, method, status, _ in seen] == [
        ("/v1/models", "GET", 200),
        ("/v1/models", "POST", 405),
        ("other", "GET", 404),
        ("other", "GET", 500),
    ]
    assert all(seconds > 0 for *_, seconds in seen)


def test_needs_a_running_event_loop() -> None:
    with pytest.raises(RuntimeError, match="no running event loop"):
        DirectListener(_app(), host="127.0.0.1", port=0)


def test_free_port_is_bindable() -> None:
    port = free_port("127.0.0.1")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize("direct_port", [0, None, 8001])
def test_settings_accept_a_port_zero_or_none(direct_port: int | None) -> None:
    assert ServeSettings(direct_port=direct_port).direct_port == direct_port


def test_direct_port_must_differ_from_the_proxy_port() -> None:
    with pytest.raises(ValidationError, match="direct_port 8000 is the Serve proxy's port"):
        ServeSettings(port=8000, direct_port=8000)


@pytest.mark.parametrize(
    ("host", "replica_node", "expected"),
    [
        ("127.0.0.1", "here", "direct"),
        ("127.0.0.1", "elsewhere", "proxy"),  # another node's loopback is out of reach
        ("0.0.0.0", "elsewhere", "direct"),
    ],
)
def test_client_url_is_the_direct_one_where_it_can_be_reached(
    host: str, replica_node: str, expected: str
) -> None:
    from serve._app import client_url

    direct, proxy = "http://10.0.0.7:8001/v1", "http://127.0.0.1:8000/v1"
    url = client_url((direct, replica_node), direct_host=host, proxy=proxy, here="here")
    assert url == (direct if expected == "direct" else proxy)
    assert client_url(None, direct_host=host, proxy=proxy, here="here") == proxy


# --- on Ray: a small app whose only model is a passthrough, so replicas start in a second ---


def _passthrough_settings(proxy_port: int, **fields: object) -> ServeSettings:
    # Nothing listens at the passthrough's URL; these tests only need the app up. The proxy port
    # is the session's: one Serve proxy serves every app of the cluster.
    return ServeSettings(
        port=proxy_port,
        app_name="troupe-direct-test",
        route_prefix="/direct-test",
        models=[
            PassthroughSettings(
                name="remote", base_url=f"http://127.0.0.1:{free_port('127.0.0.1')}/v1"
            )
        ],
        **fields,
    )


@pytest.fixture
def direct_app(
    ray_session: None, serve_settings: ServeSettings
) -> Iterator[tuple[ServeSettings, str]]:
    settings = _passthrough_settings(serve_settings.port)
    url = deploy(settings)
    try:
        yield settings, url
    finally:
        shutdown(settings)


def _ids(base_url: str) -> list[str]:
    client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=30)
    return [card.id for card in client.models.list()]


@pytest.mark.ray
def test_deploy_returns_the_direct_url_and_the_proxy_serves_the_same_api(
    direct_app: tuple[ServeSettings, str],
) -> None:
    settings, url = direct_app
    assert url.startswith("http://127.0.0.1:") and url.endswith("/direct-test/v1")
    assert url != settings.base_url

    assert _ids(url) == _ids(settings.base_url) == ["remote"]


@pytest.mark.ray
def test_a_restarted_ingress_replica_listens_on_the_same_url(
    direct_app: tuple[ServeSettings, str],
) -> None:
    import ray
    from ray import serve

    _, url = direct_app
    [replica] = [
        actor
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if actor["namespace"] == "serve"
        and "troupe-direct-test" in actor["name"]
        and "openai-ingress" in actor["name"]
    ]
    ray.kill(ray.get_actor(replica["name"], namespace="serve"), no_restart=True)

    deadline = time.monotonic() + 120
    while True:
        try:
            assert _ids(url) == ["remote"]
            break
        except openai.APIConnectionError:
            assert time.monotonic() < deadline, "the restarted replica never listened again"
            time.sleep(0.5)
    # Serve marks the app healthy again a moment after the new replica starts serving.
    while serve.status().applications["troupe-direct-test"].status != "RUNNING":
        assert time.monotonic() < deadline, "Serve never saw the restarted replica as healthy"
        time.sleep(0.5)


@pytest.mark.ray
def test_without_a_direct_port_deploy_returns_the_running_proxys_url(
    serve_base_url: str, serve_settings: ServeSettings
) -> None:
    # Serve already listens on the session's port: it keeps that one, not the settings' port.
    settings = _passthrough_settings(free_port("127.0.0.1"), direct_port=None)
    url = deploy(settings)
    try:
        assert url == f"http://127.0.0.1:{serve_settings.port}/direct-test/v1"
        assert proxy_url(settings) == url
        assert _ids(url) == ["remote"]
    finally:
        shutdown(settings)


@pytest.mark.ray
def test_a_busy_direct_port_fails_the_deploy_saying_which_setting(
    ray_session: None, serve_settings: ServeSettings
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = _passthrough_settings(serve_settings.port).model_copy(
            update={"app_name": "troupe-direct-busy", "direct_port": taken.getsockname()[1]}
        )
        try:
            with pytest.raises(RuntimeError, match="serve.direct_port"):
                deploy(settings)
        finally:
            shutdown(settings)


@pytest.mark.ray
def test_direct_requests_are_counted_in_ray_metrics(
    direct_app: tuple[ServeSettings, str],
) -> None:
    import ray

    _, url = direct_app
    for _ in range(3):
        assert httpx.get(f"{url}/models", timeout=30).status_code == 200
    # Each node's metrics agent serves what its workers report (every few seconds): what the
    # dashboard's metrics view and any Prometheus read.
    port = ray._private.worker.global_worker.node.metrics_export_port
    deadline = time.monotonic() + 60
    while True:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        counts = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("ray_troupe_direct_http_requests")
            and 'application="troupe-direct-test"' in line
            and 'route="/v1/models"' in line
            and 'status_code="200"' in line
        ]
        if counts and sum(counts) >= 3:
            break
        assert time.monotonic() < deadline, "the direct listener's requests never showed up"
        time.sleep(1)


@pytest.mark.ray
def test_a_redeploy_with_a_fixed_port_takes_it_over(
    ray_session: None, serve_settings: ServeSettings
) -> None:
    settings = _passthrough_settings(serve_settings.port).model_copy(
        update={"app_name": "troupe-direct-redeploy", "direct_port": free_port("127.0.0.1")}
    )
    try:
        url = deploy(settings)
        assert _ids(url) == ["remote"]
        # A changed setting replaces the replica: the new one binds the port the old one freed.
        assert deploy(settings.model_copy(update={"api_keys": ["k"]})) == url
        assert httpx.get(f"{url}/models", timeout=30).status_code == 401
        headers = {"Authorization": "Bearer k"}
        assert httpx.get(f"{url}/models", headers=headers, timeout=30).status_code == 200
    finally:
        shutdown(settings)
