from __future__ import annotations

import datetime as dt
import socket
import tomllib
from pathlib import Path
from typing import Any

import pytest

from scepd.config import ConfigError, parse, read_secret

BASE: dict[str, Any] = {
    "token": {"label": "scepd", "pin": "file:secrets/pin"},
    "ca": {"key": "pkcs11:object=ca", "certificate": "ca.pem"},
    "store": {"path": "db.sqlite3"},
    "challenge": {"static": "env:SCEPD_CHALLENGE"},
}


def with_(**changes: Any) -> dict[str, Any]:
    data = {k: dict(v) for k, v in BASE.items()}
    for dotted, value in changes.items():
        section, _, key = dotted.partition("__")
        data.setdefault(section, {})
        if value is None:
            data[section].pop(key, None)
        else:
            data[section][key] = value
    return data


def test_defaults_resolve_relative_paths() -> None:
    config = parse(with_(), Path("/etc/scepd/scepd.toml"))
    assert config.ca.certificate == Path("/etc/scepd/ca.pem")
    assert config.token.pin_source == "file:/etc/scepd/secrets/pin"
    assert config.listen_port == 8080
    assert config.processes == 1
    assert config.node_name == socket.gethostname() and config.leader_lease_seconds == 30.0
    assert [e.path for e in config.endpoints] == ["/scep"]
    assert config.profiles["default"].validity == dt.timedelta(days=365)


@pytest.mark.parametrize(
    ("changes", "key", "words"),
    [
        ({"token__pin": "hunter2"}, "token.pin", "secret source"),
        ({"token__pin": None}, "token.pin", "required"),
        ({"ca__key": "/path/to/key.pem"}, "ca.key", "PKCS#11 URI"),
        ({"server__listen": "localhost"}, "server.listen", "HOST:PORT"),
        ({"token__workers": -1}, "token.workers", "between"),
        ({"token__workers": True}, "token.workers", "boolean"),
        ({"server__processes": 0}, "server.processes", "between 1 and 64"),
        ({"server__processes": 65}, "server.processes", "between 1 and 64"),
        ({"server__leader_lease_seconds": 0.5}, "server.leader_lease_seconds", "between 1 and 600"),
        ({"server__leader_lease_seconds": 601}, "server.leader_lease_seconds", "between 1 and 600"),
        ({"server__leader_lease_seconds": "30"}, "server.leader_lease_seconds", "must be"),
        ({"server__node_name": ""}, "server.node_name", "printable"),
        ({"server__node_name": "a\nb"}, "server.node_name", "printable"),
        ({"token__colour": "blue"}, "token.colour", "unknown"),
        ({"challenge__static": None}, "endpoints.default.challenge", "challenge.static"),
        ({"ca__ra_key": "pkcs11:object=ra"}, "ca.ra_key", "go together"),
        ({"ca__hash": "md5"}, "ca.hash", "sha256"),
    ],
)
def test_invalid_settings_name_the_key(changes: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(with_(**changes), Path("/x/scepd.toml"))
    assert info.value.key == key
    assert words in str(info.value)


def test_node_name_and_lease_are_read() -> None:
    config = parse(with_(server__node_name="ca-2.example", server__leader_lease_seconds=2.5), Path("/x/scepd.toml"))
    assert (config.node_name, config.leader_lease_seconds) == ("ca-2.example", 2.5)


def test_endpoint_must_name_existing_profile() -> None:
    data = with_()
    data["endpoints"] = {"intune": {"path": "/intune", "challenge": "onetime", "profile": "device"}}
    with pytest.raises(ConfigError) as info:
        parse(data, Path("/x/scepd.toml"))
    assert info.value.key == "endpoints.intune.profile"


def test_profile_validation() -> None:
    data = with_()
    data["profiles"] = {"device": {"min_rsa_bits": 1024}}
    with pytest.raises(ConfigError) as info:
        parse(data, Path("/x/scepd.toml"))
    assert info.value.key == "profiles.device.min_rsa_bits"


def test_secret_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pin").write_text("1234\n")
    assert read_secret(f"file:{tmp_path / 'pin'}") == "1234"
    monkeypatch.setenv("SCEPD_TEST_SECRET", "s3cret")
    assert read_secret("env:SCEPD_TEST_SECRET") == "s3cret"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_secret("credential:pin") == "1234"
    for bad in ("plain-secret", "1234", "file:", "env:", "credential:", "credential:../pin", "credential:a/b"):
        with pytest.raises(ConfigError):
            read_secret(bad)
    with pytest.raises(ConfigError):
        read_secret("env:SCEPD_NO_SUCH_VAR")


def test_crl_defaults_and_settings() -> None:
    config = parse(with_(), Path("/etc/scepd/scepd.toml"))
    assert config.crl.path == "/crl/ca.crl"
    assert config.crl.lifetime == dt.timedelta(hours=24)
    assert config.crl.file is None
    assert config.crl.check_interval_seconds == 10
    assert (config.ca.crl_url, config.ca.ocsp_url, config.ca.issuer_url) == (None, None, None)

    config = parse(
        with_(
            crl__path="/pki/scepd.crl",
            crl__lifetime_hours=1.5,
            crl__file="ca.crl",
            crl__check_interval_seconds=2,
            ca__crl_url="http://pki.example/crl/ca.crl",
            ca__ocsp_url="http://ocsp.example/",
            ca__issuer_url="http://pki.example/ca.cer",
        ),
        Path("/etc/scepd/scepd.toml"),
    )
    assert config.crl.path == "/pki/scepd.crl"
    assert config.crl.lifetime == dt.timedelta(minutes=90)
    assert config.crl.file == Path("/etc/scepd/ca.crl")
    assert config.crl.check_interval_seconds == 2.0
    assert config.ca.crl_url == "http://pki.example/crl/ca.crl"
    assert config.ca.ocsp_url == "http://ocsp.example/"
    assert config.ca.issuer_url == "http://pki.example/ca.cer"


@pytest.mark.parametrize(
    ("changes", "key", "words"),
    [
        ({"crl__path": "crl"}, "crl.path", "start with /"),
        ({"crl__path": "/scep"}, "crl.path", "SCEP endpoint"),
        ({"crl__lifetime_hours": 0}, "crl.lifetime_hours", "more than 0"),
        ({"crl__lifetime_hours": "24"}, "crl.lifetime_hours", "int or float"),
        ({"crl__check_interval_seconds": 0}, "crl.check_interval_seconds", "between"),
        ({"crl__refresh": True}, "crl.refresh", "unknown"),
        ({"ca__crl_url": "ftp://pki.example/ca.crl"}, "ca.crl_url", "URL"),
        ({"ca__ocsp_url": "ocsp.example"}, "ca.ocsp_url", "URL"),
    ],
)
def test_invalid_crl_settings_name_the_key(changes: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(with_(**changes), Path("/x/scepd.toml"))
    assert info.value.key == key
    assert words in str(info.value)


def test_approval_profiles_cannot_serve_intune_endpoints() -> None:
    """A held Intune request would be issued on a poll without the success notification."""
    data = with_()
    data["intune"] = {"tenant": "contoso.onmicrosoft.com", "client_id": "app", "client_secret": "env:SECRET"}
    data["profiles"] = {"held": {"approval": True}}
    data["endpoints"] = {"intune": {"path": "/intune", "challenge": "intune", "profile": "held"}}
    with pytest.raises(ConfigError) as info:
        parse(data, Path("/x/scepd.toml"))
    assert info.value.key == "endpoints.intune.profile"
    assert "approval" in str(info.value)
    data["endpoints"]["intune"]["challenge"] = "onetime"
    assert parse(data, Path("/x/scepd.toml")).profiles["held"].approval


def test_key_layout_warning_only_without_an_ra() -> None:
    from scepd.config import key_layout_warnings

    [warning] = key_layout_warnings(parse(with_(), Path("/etc/scepd/scepd.toml")))
    assert (
        warning.startswith("event=ca_key_opens_envelopes ")
        and "scepd ca ra-init --config /etc/scepd/scepd.toml" in warning
    )
    with_ra = with_(ca__ra_key="pkcs11:object=ra", ca__ra_certificate="ra.pem")
    assert key_layout_warnings(parse(with_ra, Path("/etc/scepd/scepd.toml"))) == []


def default_toml(ra: str) -> str:
    from scepd.cli.init import DEFAULT_TOML

    return DEFAULT_TOML.format(
        listen="127.0.0.1:0", metrics_listen="127.0.0.1:0", module="/m.so", workers=0, processes=1, ra=ra
    )


def test_default_config_names_the_ra() -> None:
    from scepd.cli.init import RA_TOML

    config = parse(tomllib.loads(default_toml(RA_TOML)), Path("/s/scepd.toml"))
    assert config.ca.ra_key == "pkcs11:token=scepd;object=scepd-ra;type=private"
    assert config.ca.ra_certificate == Path("/s/ra.pem")


def test_ra_init_adds_the_ra_to_an_old_config_and_keeps_the_rest(tmp_path: Path) -> None:
    from scepd.cli.ca import add_ra_to_config

    path = tmp_path / "scepd.toml"
    old = default_toml("") + '\n[endpoints.other]\npath = "/other"  # a comment\n'
    path.write_text(old)
    path.chmod(0o640)
    add_ra_to_config(path, "pkcs11:token=scepd;object=scepd-ra;type=private", "ra.pem")
    new = path.read_text()
    assert new.replace(new[new.index("\n# Added by") : new.index('ra_certificate = "ra.pem"') + 25], "") == old
    config = parse(tomllib.loads(new), path)
    assert (config.ca.ra_key, config.ca.ra_certificate) == (
        "pkcs11:token=scepd;object=scepd-ra;type=private",
        tmp_path / "ra.pem",
    )
    assert path.stat().st_mode & 0o777 == 0o640


def test_ra_init_will_not_guess_where_a_ca_table_without_header_is(tmp_path: Path) -> None:
    from scepd.cli.ca import add_ra_to_config

    path = tmp_path / "scepd.toml"
    text = (
        'ca.key = "pkcs11:object=scepd-ca"\nca.certificate = "ca.pem"  # [ca] as dotted keys\n\n[store]\npath = "db"\n'
    )
    path.write_text(text)
    assert "ca" in tomllib.loads(text)
    with pytest.raises(ConfigError, match="ra_key = "):
        add_ra_to_config(path, "pkcs11:object=scepd-ra", "ra.pem")
    assert path.read_text() == text
