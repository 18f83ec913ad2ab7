"""Notification channels: an Apprise object built from an Apprise YAML config, checked entry by entry.

Channels are configuration, not code. The config is Apprise's own YAML format
(``urls:`` entries, each a URL with optional ``tag``), found through ``ROADMAP_APPRISE_CONFIG``
(or passed as text, e.g. from a Prefect Secret block by the flows). Each entry is parsed by
Apprise itself; an entry Apprise rejects raises :class:`ChannelConfigError` naming the entry and
its tags, never the URL (URLs carry credentials).

Without a config, every recipient tag gets an ``outbox://<tag>`` channel (see :mod:`notifications.outbox`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import apprise
import yaml
from apprise.config.base import ConfigBase

import notifications.outbox  # noqa: F401  (registers outbox://)

#: Largest Apprise config accepted (bytes).
MAX_CONFIG_BYTES = 256 * 1024


class ChannelConfigError(ValueError):
    """An Apprise config that cannot be used. The message names the source and entry, never a URL."""


def _schema(url: str) -> str:
    return url.split("://", 1)[0] + "://" if "://" in url else "(no schema)"


def _tags(entry_value, global_tags) -> str:
    tags: list[str] = []
    items = entry_value if isinstance(entry_value, list) else [entry_value]
    for item in items:
        if isinstance(item, dict) and item.get("tag"):
            tag = item["tag"]
            tags.extend(tag if isinstance(tag, list) else [str(tag)])
    if not tags and global_tags:
        tags.extend(global_tags if isinstance(global_tags, list) else [str(global_tags)])
    return ", ".join(tags) or "(untagged)"


def parse_apprise_yaml(text: str, source: str) -> apprise.Apprise:
    """Build an ``Apprise`` object from Apprise YAML ``text``; ``source`` names it in errors.

    Raises:
        ChannelConfigError: not YAML, no ``urls`` list, an ``include`` (refused: every channel
            must be visible in one place), or an entry Apprise cannot load (the error gives
            ``urls[i]``, its schema and tags).
    """
    if len(text.encode("utf-8")) > MAX_CONFIG_BYTES:
        raise ChannelConfigError(f"{source}: Apprise config is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ChannelConfigError(f"{source}: not valid YAML{where}") from None
    if not isinstance(data, dict) or not isinstance(data.get("urls"), list):
        raise ChannelConfigError(f"{source}: an Apprise YAML config needs a 'urls:' list")
    if "include" in data:
        raise ChannelConfigError(f"{source}: 'include' is not supported; list every channel in this file")
    hub = apprise.Apprise()
    global_tags = data.get("tag")
    for index, entry in enumerate(data["urls"]):
        if isinstance(entry, str):
            url, value = entry, None
        elif isinstance(entry, dict) and len(entry) == 1:
            url, value = next(iter(entry.items()))
            url = str(url)
        else:
            raise ChannelConfigError(f"{source}: urls[{index}]: expected a URL or 'URL: {{tag: ...}}'")
        single = {"version": 1, "urls": [entry if value is not None else url]}
        if global_tags is not None:
            single["tag"] = global_tags
        services, _ = ConfigBase.config_parse_yaml(yaml.safe_dump(single, allow_unicode=True))
        expected = len(value) if isinstance(value, list) else 1
        if len(services) != expected:
            raise ChannelConfigError(
                f"{source}: urls[{index}] ({_schema(url)} for tag {_tags(value, global_tags)}) "
                "is not a valid Apprise URL"
            )
        for service in services:
            hub.add(service)
    return hub


def load_channels(
    recipients: Iterable[str],
    *,
    config_text: str | None = None,
    config_path: str | Path | None = None,
    source: str = "",
) -> apprise.Apprise:
    """Return the channels to deliver through.

    Order of precedence: ``config_text`` (e.g. from a Secret block), ``config_path``, the file
    named by ``ROADMAP_APPRISE_CONFIG``, else the default: ``outbox://<tag>`` for each recipient.

    Raises:
        ChannelConfigError: see :func:`parse_apprise_yaml`; or the config file cannot be read.
    """
    if config_text is not None:
        return parse_apprise_yaml(config_text, source or "Apprise config")
    path = config_path or os.environ.get("ROADMAP_APPRISE_CONFIG")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ChannelConfigError(f"{path}: cannot read Apprise config: {exc}") from None
        return parse_apprise_yaml(text, str(path))
    hub = apprise.Apprise()
    for tag in sorted(set(recipients)):
        if not hub.add(f"outbox://{tag}", tag=tag):
            raise ChannelConfigError(f"default outbox: cannot add outbox channel for tag {tag!r}")
    return hub
