"""The docs stay true to the tree: a short README, links that resolve, a configuration reference that matches the loader."""

from __future__ import annotations

import ast
import copy
import re
from pathlib import Path
from typing import Any

import pytest

from scepd import config_reference
from scepd.config import ConfigError, keys_read, parse

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and [text](target "title"); images too. Code spans are removed first.
_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def test_readme_is_at_most_250_lines() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move detail into docs/"


def _relative_links(page: Path) -> list[str]:
    text = _CODE.sub("", page.read_text(encoding="utf-8"))
    targets = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # http:, https:, mailto:, file: and in-page anchors
        targets.append(target)
    return targets


def test_the_pages_do_link_to_each_other() -> None:
    """Guards the link check below against a regex that silently finds nothing."""
    assert "docs/architecture.md" in _relative_links(ROOT / "README.md")
    assert "intune-contract.md" in _relative_links(ROOT / "docs" / "intune.md")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    text = _CODE.sub("", page.read_text(encoding="utf-8"))
    headings = re.findall(r"^#+\s+(.*?)\s*$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.replace("`", "").lower()).replace(" ", "-") for h in headings}


def test_anchors_follow_githubs_rule() -> None:
    assert "serving-processes-a-socket-each" in _anchors(ROOT / "docs" / "benchmarks.md")
    assert "intune" in _anchors(ROOT / "docs" / "configuration.md")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_an_existing_file(page: Path) -> None:
    missing, dangling = [], []
    for target in _relative_links(page):
        path, _, anchor = target.partition("#")
        if not (page.parent / path).exists():
            missing.append(target)
        elif anchor and path.endswith(".md") and anchor not in _anchors(page.parent / path):
            dangling.append(target)
    assert not missing, f"{page.relative_to(ROOT)} links to files that do not exist: {missing}"
    assert not dangling, f"{page.relative_to(ROOT)} links to headings that do not exist: {dangling}"


def test_configuration_reference_is_generated_from_the_loader() -> None:
    committed = config_reference.PAGE.read_text(encoding="utf-8")
    assert committed == config_reference.render(), "docs/configuration.md is stale: python -m scepd.config_reference"


def test_every_key_the_loader_accepts_is_in_the_reference() -> None:
    page = config_reference.PAGE.read_text(encoding="utf-8")
    keys = [r.key for r in keys_read(config_reference.PROBE, Path("/etc/scepd/scepd.toml")) if r.kind is not dict]
    assert len(keys) > 60  # every table was read, not only the first
    missing = [k for k in keys if f"| `{k}` |" not in page]
    assert not missing


def test_a_key_the_loader_does_not_read_is_refused() -> None:
    """What makes "every key read" the same as "every key accepted"."""
    data = copy.deepcopy(config_reference.PROBE)
    data["profiles"]["NAME"]["validity_dayz"] = 30
    with pytest.raises(ConfigError, match="unknown setting"):
        parse(data, Path("/etc/scepd/scepd.toml"))


def test_every_default_in_the_reference_is_accepted_when_written_out() -> None:
    data: dict[str, Any] = copy.deepcopy(config_reference.PROBE)
    written = 0
    for read in keys_read(config_reference.PROBE, Path("/etc/scepd/scepd.toml")):
        if read.kind is dict or read.default is ... or read.default is None:
            continue
        *tables, name = read.key.split(".")
        table = data
        for t in tables:
            table = table.setdefault(t, {})
        table[name] = list(read.default) if isinstance(read.default, (tuple, frozenset)) else read.default
        written += 1
    assert written > 40
    parse(data, Path("/etc/scepd/scepd.toml"))


def test_the_generator_refuses_a_key_without_prose(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = dict(config_reference.KEYS)
    del keys["crl.lifetime_hours"]
    monkeypatch.setattr(config_reference, "KEYS", keys)
    with pytest.raises(ValueError, match="crl.lifetime_hours"):
        config_reference.render()


def test_operations_names_every_metric() -> None:
    from scepd import metrics

    page = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    names = [m.name + ("_total" if m.type == "counter" else "") for m in metrics.REGISTRY.collect()]
    assert len(names) > 20
    missing = [n for n in names if f"| `{n}` |" not in page]
    assert not missing, f"docs/operations.md has no row for {missing}"


def test_operations_names_every_log_event() -> None:
    page = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    events = set()
    for source in (ROOT / "scepd").rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        events.update(re.findall(r"event=([a-z][a-z_]+)", text))
        for node in ast.walk(ast.parse(text)):
            # logs.event(logger, level, "name", ...) and logs.event_text("name", ...)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
                func = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
                at = {"event": 2, "event_text": 0}.get(func)
                if at is not None and len(node.args) > at:
                    name = node.args[at]
                    if isinstance(name, ast.Constant) and isinstance(name.value, str):
                        events.add(name.value)
    assert len(events) > 40  # the pattern still finds how events are written
    missing = sorted(e for e in events if f"`{e}`" not in page)
    assert not missing, f"docs/operations.md does not mention {missing}"
