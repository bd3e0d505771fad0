"""The plugin process publishes its node's ResourceSlice only once the kubelet has confirmed the
registration, and says in its log and readiness what it waits for until then."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from typing import cast

import pytest
import pytest_asyncio

from computedomain.kube.config import Connection
from computedomain.plugin import app
from computedomain.plugin.app import Plugin
from computedomain.plugin.kubelet.health import StaticHealth
from computedomain.plugin.kubelet.slices import SlicePublisher
from computedomain.plugin.settings import PluginSettings
from support.waiting import eventually

REMINDER = "the kubelet has not registered the plugin"


class RecordingPublisher:
    """Stands in for the slice publisher: records that publishing began, then publishes forever."""

    def __init__(self) -> None:
        self.running = asyncio.Event()

    async def run(self) -> None:
        self.running.set()
        await asyncio.Event().wait()


class SyncedView:
    """A node view whose caches are loaded."""

    synced = True


@pytest_asyncio.fixture
async def plugin() -> AsyncIterator[Plugin]:
    settings = PluginSettings.from_env({"NODE_NAME": "n1", "HEALTH_SOURCE": "static"})
    plugin = Plugin(
        settings, Connection("https://127.0.0.1:6443", ssl.create_default_context()), StaticHealth()
    )
    yield plugin
    await plugin.kube.close()


def reminders(caplog: pytest.LogCaptureFixture) -> int:
    return sum(REMINDER in record.getMessage() for record in caplog.records)


async def test_publishing_waits_for_the_kubelet_s_confirmation(
    plugin: Plugin, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "REGISTRATION_LOG_INTERVAL", 0.05)
    caplog.set_level(logging.WARNING, logger=app.__name__)
    publisher = RecordingPublisher()
    task = asyncio.create_task(plugin._publish_once_registered(cast(SlicePublisher, publisher)))
    try:
        await eventually(lambda: reminders(caplog) >= 2, timeout=5, what="two reminders in the log")
        assert not publisher.running.is_set()

        # A refusal is no confirmation: still nothing published, still reminding.
        plugin._on_registration(False, "another plugin registered this driver")
        seen = reminders(caplog)
        await eventually(lambda: reminders(caplog) > seen, timeout=5, what="a reminder after the refusal")
        assert not publisher.running.is_set()
        assert str(plugin.settings.registration_socket) in caplog.records[-1].getMessage()

        plugin._on_registration(True, "")
        await asyncio.wait_for(publisher.running.wait(), 5)
        assert plugin.registered

        # A registration lost later (a kubelet that restarts registers the plugin again) keeps the
        # publisher running.
        plugin._on_registration(False, "")
        assert plugin.confirmed.is_set()
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_readiness_names_the_missing_registration(plugin: Plugin) -> None:
    plugin.serving.set()
    plugin.view = cast(app.KubeNodeView, SyncedView())
    assert plugin.readiness() == (False, "waiting for the kubelet's registration")
    plugin._on_registration(True, "")
    assert plugin.readiness() == (False, "ResourceSlice not published")
