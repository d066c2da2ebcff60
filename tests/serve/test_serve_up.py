"""`troupe up`: deploys the model app from a settings file, serves until interrupted, cleans up."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from serve import ServeSettings

pytestmark = pytest.mark.ray


def test_up_serves_until_interrupted_then_deletes_only_its_app(
    serve_base_url: str,
    serve_settings: ServeSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ray import serve as ray_serve

    from agents import _cli

    config = tmp_path / "troupe.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "serve": {
                    # Serve already listens on the session's port: `up` joins it.
                    "port": serve_settings.port,
                    "app_name": "troupe-up-test",
                    "route_prefix": "/up-test",
                    "models": [
                        {
                            "engine": "passthrough",
                            "name": "remote",
                            "base_url": "http://127.0.0.1:9/v1",
                        }
                    ],
                }
            }
        )
    )
    seen: list[object] = []

    def interrupt_after_a_look() -> None:
        direct_line, proxy_line = capsys.readouterr().out.splitlines()
        direct_url, proxy_url = direct_line.split()[2], proxy_line.split()[-1]
        assert proxy_url == f"http://127.0.0.1:{serve_settings.port}/up-test/v1"
        assert direct_url != proxy_url
        for url in (direct_url, proxy_url):
            seen.append(httpx.get(f"{url}/models", timeout=30).json())
        raise KeyboardInterrupt

    monkeypatch.setattr(_cli, "wait_for_interrupt", interrupt_after_a_look)
    monkeypatch.setattr(_cli, "_check_port_free", lambda host, port, **_: None)

    assert _cli.main(["up", "--config", str(config)]) == 0

    assert len(seen) == 2
    for listing in seen:
        assert [card["id"] for card in listing["data"]] == ["remote"]  # type: ignore[index]
    applications = ray_serve.status().applications
    assert "troupe-up-test" not in applications
    assert serve_settings.app_name in applications
    assert httpx.get(f"{serve_base_url}/models", timeout=30).status_code == 200
