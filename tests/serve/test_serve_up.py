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
        base_url = capsys.readouterr().out.split()[2]
        seen.append(httpx.get(f"{base_url}/models", timeout=30).json())
        raise KeyboardInterrupt

    monkeypatch.setattr(_cli, "wait_for_interrupt", interrupt_after_a_look)
    monkeypatch.setattr(_cli, "_check_port_free", lambda host, port: None)

    assert _cli.main(["up", "--config", str(config)]) == 0

    assert seen and [card["id"] for card in seen[0]["data"]] == ["remote"]  # type: ignore[index]
    applications = ray_serve.status().applications
    assert "troupe-up-test" not in applications
    assert serve_settings.app_name in applications
    assert httpx.get(f"{serve_base_url}/models", timeout=30).status_code == 200
