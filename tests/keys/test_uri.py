from __future__ import annotations

import pytest

from scepd.keys.uri import Pkcs11Uri, Pkcs11UriError


def test_full_uri() -> None:
    uri = Pkcs11Uri.parse(
        "pkcs11:token=scepd;object=ca-key;type=private"
        "?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/scepd/pin"
    )
    assert uri == Pkcs11Uri(
        token="scepd",
        object="ca-key",
        type="private",
        module_path="/usr/lib/softhsm/libsofthsm2.so",
        pin_source="file:/etc/scepd/pin",
    )


def test_percent_decoding_and_id_bytes() -> None:
    uri = Pkcs11Uri.parse(
        "pkcs11:manufacturer=SoftHSM%20project;serial=651736fa;model=SoftHSM%20v2;object=my%3Bkey%C3%A9;id=%01%ab%FF"
    )
    assert uri.manufacturer == "SoftHSM project"
    assert uri.model == "SoftHSM v2"
    assert uri.object == "my;keyé"
    assert uri.id == b"\x01\xab\xff"


@pytest.mark.parametrize(
    "text",
    [
        "pkcs11:token=scepd;object=ca-key;type=private",
        "pkcs11:token=a%20b;object=x%3By;id=%00%10;type=cert?module-path=/m.so&pin-source=env:PIN",
        "pkcs11:object=%E2%82%AC",
    ],
)
def test_round_trip(text: str) -> None:
    uri = Pkcs11Uri.parse(text)
    assert Pkcs11Uri.parse(str(uri)) == uri


def test_str() -> None:
    uri = Pkcs11Uri(token="scepd", object="ca key", id=b"\x01", type="private", pin_source="file:/p")
    assert str(uri) == "pkcs11:token=scepd;object=ca%20key;id=%01;type=private?pin-source=file:/p"


def test_pin_value_refused() -> None:
    with pytest.raises(Pkcs11UriError, match="pin-value is refused"):
        Pkcs11Uri.parse("pkcs11:token=scepd;object=ca?pin-value=1234")


@pytest.mark.parametrize(
    "bad",
    [
        "token=scepd",  # no scheme
        "pkcs11:token=scepd;token=other",  # duplicate
        "pkcs11:colour=blue",  # unknown attribute
        "pkcs11:type=sometimes",  # bad type
        "pkcs11:object",  # no '='
        "pkcs11:object=%FF",  # not UTF-8
        "pkcs11:object=x?module-colour=1",
    ],
)
def test_rejects(bad: str) -> None:
    with pytest.raises(Pkcs11UriError):
        Pkcs11Uri.parse(bad)


def test_is_value_error() -> None:
    assert issubclass(Pkcs11UriError, ValueError)
