"""No object scepd builds shows a secret in its repr or str (issue 13 point 4).

A repr reaches logs through tracebacks, `%r` and debuggers; the PIN, the static
challenge and the Intune client secret must never be in one.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scepd.config import load
from scepd.intune.auth import ClientSecret
from scepd.keys.pkcs11.config import TokenConfig
from scepd.keys.pkcs11.worker import WorkerConfig
from scepd.wiring import open_site
from tests.support.daemon import init_state

CHALLENGE = "repr-static-challenge-91Zq"
PIN = "7359-pin-in-no-repr"


def reachable(root: Any, limit: int = 20000) -> Iterator[Any]:
    """scepd's own objects (and the containers, partials and closures between them) reachable from `root`."""
    seen: set[int] = set()
    todo = [root]
    while todo and len(seen) < limit:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, bool, type(None), type)):
            continue
        seen.add(id(obj))
        mod = type(obj).__module__ or ""
        if isinstance(obj, dict):
            todo += list(obj.keys()) + list(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            todo += list(obj)
        elif isinstance(obj, functools.partial):
            todo += [obj.func, *obj.args, *obj.keywords.values()]
        elif isinstance(obj, types.MethodType):
            todo.append(obj.__self__)
        elif isinstance(obj, types.FunctionType):
            todo += [c.cell_contents for c in obj.__closure__ or () if c.cell_contents is not None]
        elif mod.startswith("scepd"):
            yield obj
            if dataclasses.is_dataclass(obj):
                todo += [getattr(obj, f.name) for f in dataclasses.fields(obj)]
            if hasattr(obj, "__dict__"):
                todo += list(vars(obj).values())
            todo += [getattr(obj, s) for s in getattr(type(obj), "__slots__", ()) if hasattr(obj, s)]


def test_token_and_worker_configs_hide_the_pin() -> None:
    cfg = TokenConfig(module="/usr/lib/softhsm/libsofthsm2.so", token_label="scepd", pin=PIN, workers=2)
    worker = WorkerConfig(**dataclasses.asdict(cfg))  # what a token worker process builds from its socket
    assert worker.pin == PIN and worker.token_label == "scepd"
    for obj in (cfg, worker):
        assert PIN not in repr(obj) and PIN not in str(obj) and PIN not in f"{obj!r} {obj}"
    assert "token_label='scepd'" in repr(worker)  # the rest still helps whoever reads it


def test_intune_client_secret_hidden() -> None:
    secret = ClientSecret("intune-client-secret-0xdead")
    assert "intune-client-secret-0xdead" not in repr(secret) + str(secret)


async def test_nothing_a_daemon_builds_shows_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("SOFTHSM2_CONF", os.environ.get("SOFTHSM2_CONF", ""))
    init_state(tmp_path, CHALLENGE, workers=1)
    pin = (tmp_path / "secrets" / "token.pin").read_text().strip()
    assert len(pin) >= 8
    config = load(tmp_path / "scepd.toml")
    secrets = (pin, CHALLENGE)
    kinds: set[str] = set()
    async with open_site(config) as site:
        for obj in reachable((site, config)):
            kinds.add(type(obj).__name__)
            try:
                text = repr(obj) + "\n" + str(obj)
            except Exception:  # noqa: BLE001 - a repr that fails shows nothing either
                continue
            for secret in secrets:
                assert secret not in text, (type(obj), text[:300])
    # The walk did reach what holds the secrets: the token pool's config and the static challenge step.
    assert {"TokenConfig", "StaticChallenge", "Config", "TokenPool", "ScepService"} <= kinds, ", ".join(sorted(kinds))
