"""The README's settings example is a valid settings file (docs that rot mislead users)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from agents import TroupeSettings


def test_readme_settings_example_loads() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, flags=re.S)
    assert blocks, "README has no yaml settings example"
    settings = TroupeSettings.model_validate(yaml.safe_load(blocks[0]))
    assert settings.agents.executors == 2
    assert [m.name for m in settings.serve.models] == ["smollm2-135m", "minilm-l6-v2"]
