"""SIGHUP: re-read the configuration and swap in new profiles and endpoint chains.

What can change without a restart is what `build_services` makes from the
file: the profiles, and each existing endpoint's challenge mode, profile and
renewal setting (the static challenge is read again too). The listener, the
token, the CA, the store, the CRL and Intune settings are bound at start-up:
a change to them is logged as needing a restart and otherwise ignored, and a
new endpoint path cannot be routed without one. An invalid file changes
nothing: the reason is logged and the running configuration stays.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import trio

from scepd.config import Config, ConfigError, load
from scepd.logs import event

log = logging.getLogger("scepd.reload")

# Config fields the reload applies; every other field needs a restart.
_RELOADABLE = {"path", "profiles", "endpoints", "static_challenge_source"}


def _profile_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, list[str]]:
    return {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(name for name in set(old) & set(new) if old[name] != new[name]),
    }


async def reload_config(
    current: Config,
    services: MutableMapping[str, Any],
    rebuild: Callable[[Config], Mapping[str, Any]],
) -> Config:
    """Load `current.path` again and apply it to `services` in place; returns the config now in force."""
    try:
        new = await trio.to_thread.run_sync(load, current.path)
    except ConfigError as e:
        event(log, logging.ERROR, "reload_rejected", path=current.path, key=e.key, reason=e.reason)
        return current
    restart = sorted(
        f.name
        for f in dataclasses.fields(Config)
        if f.name not in _RELOADABLE and getattr(new, f.name) != getattr(current, f.name)
    )
    old_paths = {ep.path for ep in current.endpoints}
    new_paths = {ep.path for ep in new.endpoints}
    if new_paths != old_paths:
        event(
            log,
            logging.ERROR,
            "reload_rejected",
            path=current.path,
            reason="endpoint paths changed (added or removed): that needs a restart",
        )
        return current
    # Only the reloadable parts take effect; the rest stays as started, so the next reload still reports it.
    new = dataclasses.replace(
        current, profiles=new.profiles, endpoints=new.endpoints, static_challenge_source=new.static_challenge_source
    )
    try:
        fresh = rebuild(new)
    except Exception as e:  # noqa: BLE001 - e.g. a secret source that cannot be read: keep serving the old chains
        event(log, logging.ERROR, "reload_rejected", path=current.path, reason=f"{type(e).__name__}: {e}")
        return current
    services.update(fresh)
    changes = _profile_changes(current.profiles, new.profiles)
    endpoints = sorted(ep.name for ep in new.endpoints if ep not in current.endpoints)
    event(
        log,
        logging.INFO,
        "config_reloaded",
        path=current.path,
        profiles_added=",".join(changes["added"]) or "-",
        profiles_removed=",".join(changes["removed"]) or "-",
        profiles_changed=",".join(changes["changed"]) or "-",
        endpoints_changed=",".join(endpoints) or "-",
    )
    if restart:
        event(log, logging.WARNING, "reload_restart_required", path=current.path, settings=",".join(restart))
    return new
