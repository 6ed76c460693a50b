"""The [intune] keys added for corporate networks, the notification budget and the assertion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scepd.config import ConfigError, IntuneConfig, parse
from tests.test_config import with_


def intune(**keys: Any) -> IntuneConfig:
    data = with_()
    data["intune"] = {"tenant": "contoso.onmicrosoft.com", "client_id": "app", "client_secret": "env:SECRET", **keys}
    config = parse(data, Path("/etc/scepd/scepd.toml")).intune
    assert config is not None
    return config


def test_defaults() -> None:
    config = intune()
    assert config.proxy is None and config.proxy_credentials_source is None and config.ca_bundle is None
    assert config.client.notification_budget == 100.0
    assert config.client.assertion_algorithm == "PS256"


def test_proxy_credentials_come_from_a_secret_source_relative_to_the_config() -> None:
    config = intune(
        proxy="http://proxy.corp:3128",
        proxy_credentials="file:secrets/proxy",
        ca_bundle="corp-roots.pem",
        notification_budget_seconds=45,
        assertion_algorithm="RS256",
    )
    assert config.proxy == "http://proxy.corp:3128"
    assert config.proxy_credentials_source == "file:/etc/scepd/secrets/proxy"
    assert config.ca_bundle == Path("/etc/scepd/corp-roots.pem")
    assert config.client.notification_budget == 45.0 and config.client.assertion_algorithm == "RS256"


@pytest.mark.parametrize(
    ("keys", "key", "words"),
    [
        ({"proxy": "http://user:pw@proxy.corp:3128"}, "intune.proxy", "no credentials"),
        ({"proxy": "proxy.corp:3128"}, "intune.proxy", "URL"),
        (
            {"proxy": "http://proxy.corp:3128", "proxy_credentials": "user:pw"},
            "intune.proxy_credentials",
            "secret source",
        ),
        ({"proxy_credentials": "env:PROXY"}, "intune.proxy_credentials", "needs intune.proxy"),
        ({"notification_budget_seconds": 0}, "intune.notification_budget_seconds", "between"),
        ({"assertion_algorithm": "ES256"}, "intune.assertion_algorithm", "PS256 or RS256"),
    ],
)
def test_refused(keys: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        intune(**keys)
    assert info.value.key == key and words in str(info.value)


def test_provider_name_default_is_the_same_in_code_config_and_docs() -> None:
    """One default: the settings object, the config parser and every page that states it."""
    import re

    from scepd.intune.settings import DEFAULT_PROVIDER_NAME, IntuneSettings

    assert IntuneSettings(tenant="t", client_id="c").provider_name == DEFAULT_PROVIDER_NAME
    assert intune().client.provider_name == DEFAULT_PROVIDER_NAME
    root = Path(__file__).resolve().parent.parent.parent
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    stated = [
        value
        for page in pages
        for line in page.read_text().splitlines()
        if "provider_name" in line
        for value in re.findall(r"`(scepd/[^`]*)`", line)
    ]
    assert set(stated) <= {DEFAULT_PROVIDER_NAME}, stated
