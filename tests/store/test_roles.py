"""Every store backend (SQLite, PostgreSQL) answers every role protocol, with the same signatures.

A second backend is checked by adding it to `BACKENDS`. mypy verifies the
parameter and return types (scepd/store/sqlite/__init__.py assigns the class to
`Store`); this test checks what mypy cannot see at run time and keeps the
protocols honest: no public store method outside a protocol, and a check that
does fail for a backend that lacks a method or changes a signature.
"""

from __future__ import annotations

import inspect

import pytest

from scepd.store.postgres import PostgresStore
from scepd.store.roles import ROLES, Store
from scepd.store.sqlite import SqliteStore

BACKENDS: list[type] = [SqliteStore, PostgresStore]
# Public names of a backend that belong to opening it, not to any role.
LIFECYCLE = {"connect", "open", "path", "database"}
_MISSING = object()


def members(protocol: type) -> set[str]:
    """The names a protocol declares itself (not what every class has)."""
    return {
        name
        for klass in protocol.__mro__
        if klass not in (object,) and getattr(klass, "_is_protocol", False)
        for name in vars(klass)
        if not name.startswith("_")
    }


def mismatches(backend: type, protocol: type) -> list[str]:
    """How `backend` fails to implement `protocol`: missing names, sync/async or parameter differences."""
    problems = []
    for name in sorted(members(protocol)):
        wanted = inspect.getattr_static(protocol, name)
        found = inspect.getattr_static(backend, name, _MISSING)
        if found is _MISSING:
            problems.append(f"{name}: missing")
            continue
        if isinstance(wanted, property):
            if not isinstance(found, property):
                problems.append(f"{name}: not a property")
            continue
        if inspect.iscoroutinefunction(wanted) != inspect.iscoroutinefunction(found):
            problems.append(f"{name}: async differs")
        shape = [(p.name, p.kind, p.default) for p in inspect.signature(wanted).parameters.values()]
        given = [(p.name, p.kind, p.default) for p in inspect.signature(found).parameters.values()]
        if shape != given:
            problems.append(f"{name}: parameters {given} instead of {shape}")
    return problems


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("protocol", [*ROLES, Store], ids=lambda p: p.__name__)
def test_backend_implements_every_role(backend: type, protocol: type) -> None:
    assert members(protocol), f"{protocol.__name__} declares nothing"
    assert mismatches(backend, protocol) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_has_no_public_method_outside_the_protocols(backend: type) -> None:
    """Whatever a caller can reach on a store is in a role, so a second backend offers it too."""
    public = {name for name in dir(backend) if not name.startswith("_")}
    assert public - members(Store) - LIFECYCLE == set()


def test_roles_do_not_overlap() -> None:
    """One method, one role: a backend never has to decide which of two contracts a name follows."""
    seen: dict[str, str] = {}
    for role in ROLES:
        for name in members(role):
            assert name not in seen, f"{name} is in {seen[name]} and {role.__name__}"
            seen[name] = role.__name__


async def test_an_open_store_is_an_instance_of_every_role(store: Store) -> None:
    for role in [*ROLES, Store]:
        assert isinstance(store, role)


class Incomplete:
    """A would-be backend with one method missing and one signature changed."""

    fault = None

    async def ping(self) -> None: ...

    async def consume_challenge(self, digest: str) -> bool:  # `now` forgotten
        return False


def test_the_check_fails_for_a_backend_that_does_not_conform() -> None:
    from scepd.store.roles import Challenges, StoreHealth

    assert mismatches(Incomplete, StoreHealth) == ["fault: not a property"]
    problems = mismatches(Incomplete, Challenges)
    assert problems[0] == "add_challenge: missing"
    assert problems[1].startswith("consume_challenge: parameters")
    assert not isinstance(Incomplete(), Challenges)
