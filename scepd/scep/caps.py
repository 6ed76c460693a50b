"""GetCACaps reply body (RFC 8894 3.5.2)."""

from __future__ import annotations

from collections.abc import Iterable


def caps_text(caps: Iterable[str]) -> bytes:
    """One capability per line; clients split on newlines and some choke on a blank one."""
    lines = [c.strip() for c in caps if c.strip()]
    return ("\n".join(lines) + "\n").encode("ascii") if lines else b""
