"""The kubelet plugin's process loads no pydantic: it runs on every GPU node, where pydantic, its core and
pydantic-settings would cost about 14 MiB of resident memory together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

OPERATOR = Path(__file__).resolve().parents[3] / "operator"

# What `python -m computedomain.plugin` loads before it serves: its entry point, every module of the
# plugin package (app.py's own imports and the lazily imported ones alike), the API client that the
# entry point names itself to, and what it builds from them: its settings, a client and a cache.
_SCRIPT = textwrap.dedent(
    """
    import json, pkgutil, ssl, sys
    import computedomain.plugin
    import computedomain.plugin.__main__
    from computedomain.kube.client import Kube, identify
    from computedomain.kube.config import Connection
    from computedomain.kube.store import Store
    from computedomain.plugin.settings import PluginSettings

    for module in pkgutil.walk_packages(computedomain.plugin.__path__, "computedomain.plugin."):
        __import__(module.name)
    identify("computedomain-kubelet-plugin")
    settings = PluginSettings.from_env({"NODE_NAME": "n1", "HEALTH_SOURCE": "static"})
    kube = Kube(Connection("https://127.0.0.1:6443", ssl.create_default_context()))
    store = Store()
    store.put("k", {"metadata": {"name": "x"}})
    assert store.get("k") == {"metadata": {"name": "x"}}
    print(json.dumps({"modules": sorted(sys.modules), "codec": kube.codec.name}))
    """
)
# Loaded only where needed: NVML's bindings with HEALTH_SOURCE=nvml or a driver root that does not
# tell the driver version, the YAML parser for a kubeconfig file (never in a pod).
_NOT_LOADED = ("pydantic", "pydantic_core", "pydantic_settings", "pynvml", "yaml")


def test_the_plugin_process_loads_no_pydantic() -> None:
    env = {**os.environ, "PYTHONPATH": str(OPERATOR)}
    env.pop("KUBECONFIG", None)
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    found = json.loads(done.stdout)
    modules = set(found["modules"])
    assert "computedomain.plugin.app" in modules
    assert "grpc" in modules
    loaded = sorted(m for m in modules if m.partition(".")[0] in _NOT_LOADED)
    assert loaded == []
    assert found["codec"] == "json"
