"""PKCS#11 URIs (RFC 7512), the way a key is named in the configuration.

    pkcs11:token=scepd;object=ca-key;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/scepd/pin

Secrets never live in the configuration, so `pin-value` is refused; name a
`pin-source` (file:PATH, env:NAME, credential:NAME) instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from urllib.parse import quote, unquote_to_bytes

_PATH_ATTRS = ("token", "manufacturer", "serial", "model", "object", "id", "type")
_QUERY_ATTRS = {"module-path": "module_path", "module-name": "module_name", "pin-source": "pin_source"}
_TYPES = ("public", "private", "cert", "secret-key", "data")
# RFC 7512 pk11-pchar / pk11-qchar: unreserved plus these may appear unencoded.
_PATH_SAFE = ":[]@!$'()*+,="
_QUERY_SAFE = "/?|:[]@!$'()*+,=/"


class Pkcs11UriError(ValueError):
    """The string is not a PKCS#11 URI scepd accepts."""


def _text(name: str, raw: str) -> str:
    try:
        return unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise Pkcs11UriError(f"pkcs11 URI attribute {name!r} is not UTF-8 after percent-decoding") from None


@dataclass(frozen=True)
class Pkcs11Uri:
    token: str | None = None
    manufacturer: str | None = None
    serial: str | None = None
    model: str | None = None
    object: str | None = None
    id: bytes | None = None
    type: str | None = None
    module_path: str | None = None
    module_name: str | None = None
    pin_source: str | None = None

    @classmethod
    def parse(cls, uri: str) -> Pkcs11Uri:
        if not uri.lower().startswith("pkcs11:"):
            raise Pkcs11UriError(f"not a PKCS#11 URI (must start with 'pkcs11:'): {uri!r}")
        body = uri[len("pkcs11:") :]
        path, _, query = body.partition("?")
        values: dict[str, object] = {}
        for part in filter(None, path.split(";")):
            name, eq, raw = part.partition("=")
            if not eq:
                raise Pkcs11UriError(f"pkcs11 URI path attribute without '=': {part!r}")
            if name not in _PATH_ATTRS:
                raise Pkcs11UriError(f"unsupported pkcs11 URI path attribute {name!r}")
            if name in values:
                raise Pkcs11UriError(f"pkcs11 URI attribute {name!r} given twice")
            values[name] = unquote_to_bytes(raw) if name == "id" else _text(name, raw)
        for part in filter(None, query.split("&")):
            name, eq, raw = part.partition("=")
            if name == "pin-value":
                raise Pkcs11UriError(
                    "pin-value is refused: secrets never live in the configuration; "
                    "use pin-source=file:PATH, env:NAME or credential:NAME"
                )
            if not eq:
                raise Pkcs11UriError(f"pkcs11 URI query attribute without '=': {part!r}")
            if name not in _QUERY_ATTRS:
                raise Pkcs11UriError(f"unsupported pkcs11 URI query attribute {name!r}")
            key = _QUERY_ATTRS[name]
            if key in values:
                raise Pkcs11UriError(f"pkcs11 URI attribute {name!r} given twice")
            values[key] = _text(name, raw)
        if "type" in values and values["type"] not in _TYPES:
            raise Pkcs11UriError(f"pkcs11 URI type must be one of {', '.join(_TYPES)}: {values['type']!r}")
        return cls(**values)  # type: ignore[arg-type]

    def __str__(self) -> str:
        path = []
        for name in _PATH_ATTRS:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "id":
                path.append("id=" + "".join(f"%{b:02X}" for b in value))
            else:
                path.append(f"{name}={quote(value, safe=_PATH_SAFE)}")
        query = [
            f"{attr}={quote(getattr(self, key), safe=_QUERY_SAFE)}"
            for attr, key in _QUERY_ATTRS.items()
            if getattr(self, key) is not None
        ]
        return "pkcs11:" + ";".join(path) + ("?" + "&".join(query) if query else "")

    def __repr__(self) -> str:
        set_ = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if getattr(self, f.name) is not None
        )
        return f"Pkcs11Uri({set_})"


@dataclass(frozen=True)
class TokenIdentity:
    """What identifies the token scepd logs in to: the [token] settings, and once
    the token is open, what the token itself reports (CK_TOKEN_INFO)."""

    label: str
    module: str | None = None
    manufacturer: str | None = None
    serial: str | None = None
    model: str | None = None


def key_on_token(uri: str, token: TokenIdentity) -> str:
    """The object label a key URI names, refusing a URI that names another token.

    scepd opens one token ([token] label and module). A URI whose token=,
    manufacturer=, serial=, model= or module-path= says otherwise is a
    configuration mistake: ignoring those attributes would quietly sign with a
    key of the same label on the wrong token. Attributes the identity leaves
    None (not known yet) are not compared.
    """
    parsed = Pkcs11Uri.parse(uri)
    if not parsed.object:
        raise Pkcs11UriError(f"{uri}: the key URI must name the object (object=...)")
    wrong = [
        f"{attr}={mine!r} but the token's is {theirs!r}"
        for attr, mine, theirs in (
            ("token", parsed.token, token.label),
            ("manufacturer", parsed.manufacturer, token.manufacturer),
            ("serial", parsed.serial, token.serial),
            ("model", parsed.model, token.model),
            ("module-path", _real(parsed.module_path), _real(token.module)),
        )
        if mine is not None and theirs is not None and mine != theirs
    ]
    if wrong:
        raise Pkcs11UriError(f"{uri} names another token than the one configured in [token]: " + "; ".join(wrong))
    return parsed.object


def _real(path: str | None) -> str | None:
    """Module paths compared as files: a symlink to the configured module is the same module."""
    return os.path.realpath(path) if path is not None else None
