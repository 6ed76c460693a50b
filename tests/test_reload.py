"""SIGHUP's reload (scepd/reload.py) against config files on disk and a stand-in for the service builder:
what is applied, what is refused and kept, what is only reported. The daemon-level reload is in
tests/e2e/test_operations.py; this runs in milliseconds."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from scepd.config import Config, load
from scepd.reload import reload_config

BASE = """
[token]
label = "scepd"
pin = "file:secrets/pin"

[ca]
key = "pkcs11:object=ca"
certificate = "ca.pem"

[store]
path = "db.sqlite3"

[challenge]
static = "env:SCEPD_CHALLENGE"

[profiles.default]
validity_days = 365
"""


class Builder:
    """Stands in for the daemon's `rebuild`: records the configs it was given, or fails as told."""

    def __init__(self) -> None:
        self.built: list[Config] = []
        self.fault: Exception | None = None

    def __call__(self, config: Config) -> Mapping[str, Any]:
        if self.fault is not None:
            raise self.fault
        self.built.append(config)
        return {ep.path: ("chain", ep.profile) for ep in config.endpoints}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "scepd.toml"
    p.write_text(BASE)
    return p


def events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "scepd.reload"]


async def test_a_new_profile_setting_is_applied_in_place(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    current = load(path)
    services: dict[str, Any] = {"/scep": "old chain"}
    build = Builder()
    path.write_text(BASE.replace("validity_days = 365", "validity_days = 30") + "\n[profiles.extra]\n")
    with caplog.at_level(logging.INFO, logger="scepd.reload"):
        new = await reload_config(current, services, build)
    assert new.profiles["default"].validity.days == 30 and "extra" in new.profiles
    assert [c.profiles["default"].validity.days for c in build.built] == [30]
    assert services == {"/scep": ("chain", "default")}
    [line] = events(caplog)
    assert "event=config_reloaded" in line and "profiles_added=extra" in line and "profiles_changed=default" in line


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda text: text.replace("[token]", "[token"), "not valid TOML"),
        (lambda text: text.replace("validity_days = 365", "validity_days = -1"), "validity_days"),
        (lambda text: text + '\n[endpoints.more]\npath = "/more"\nchallenge = "static"\n', "endpoint paths changed"),
    ],
)
async def test_a_bad_or_unroutable_file_changes_nothing(
    path: Path, caplog: pytest.LogCaptureFixture, edit: Any, reason: str
) -> None:
    current = load(path)
    services: dict[str, Any] = {"/scep": "old chain"}
    build = Builder()
    path.write_text(edit(BASE))
    with caplog.at_level(logging.INFO, logger="scepd.reload"):
        assert await reload_config(current, services, build) is current
    assert services == {"/scep": "old chain"} and build.built == []
    [line] = events(caplog)
    assert "event=reload_rejected" in line and reason in line, line


async def test_a_builder_fault_keeps_the_running_chains(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    current = load(path)
    services: dict[str, Any] = {"/scep": "old chain"}
    build = Builder()
    build.fault = OSError("secrets/challenge: Permission denied")
    path.write_text(BASE.replace("validity_days = 365", "validity_days = 30"))
    with caplog.at_level(logging.INFO, logger="scepd.reload"):
        assert await reload_config(current, services, build) is current
    assert services == {"/scep": "old chain"}
    [line] = events(caplog)
    assert "event=reload_rejected" in line and "OSError" in line and "Permission denied" in line


async def test_settings_bound_at_start_up_are_reported_not_applied(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    current = load(path)
    services: dict[str, Any] = {}
    path.write_text(BASE.replace('path = "db.sqlite3"', 'path = "elsewhere.sqlite3"'))
    with caplog.at_level(logging.INFO, logger="scepd.reload"):
        new = await reload_config(current, services, Builder())
    assert new.store_path == current.store_path  # still the store it started with
    assert any("event=reload_restart_required" in m and "settings=store_path" in m for m in events(caplog)), events(
        caplog
    )
