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
import re
from pathlib import Path
from typing import Iterable

import apprise
import pycountry
import yaml
from apprise.config.base import ConfigBase


#: Largest Apprise config accepted (bytes).
MAX_CONFIG_BYTES = 256 * 1024
#: Deepest YAML nesting accepted (a config needs four levels); bounds PyYAML's recursive composer.
MAX_CONFIG_DEPTH = 20
_SCHEMA = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]{0,31}$")


class ChannelConfigError(ValueError):
    """An Apprise config that cannot be used. The message names the source and entry, never a URL."""


class _Refused(yaml.MarkedYAMLError):
    """A YAML feature this loader refuses; its problem text is ours, so it is safe to show."""


class _ConfigLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (YAML bombs) and deep nesting, and reports a scalar it
    cannot convert (a 5000-digit number, 2024-02-30) as a YAML error, not a ``ValueError``."""

    _depth = 0

    def compose_node(self, parent, index):  # noqa: D401 - PyYAML hook
        if self.check_event(yaml.AliasEvent):
            raise _Refused(None, None, "YAML aliases (*name) are not allowed", self.peek_event().start_mark)
        if self._depth >= MAX_CONFIG_DEPTH:
            raise _Refused(
                None, None, f"nested deeper than {MAX_CONFIG_DEPTH} levels", self.peek_event().start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node, deep=False):  # noqa: D401 - PyYAML hook
        try:
            return super().construct_object(node, deep)
        except ValueError as exc:
            # The value itself is not quoted: it may be part of a URL.
            raise _Refused(None, None, f"unreadable value ({exc})", node.start_mark) from None


def _schema(url: str) -> str:
    # Only something that looks like a schema: text before a later "://" may hold credentials.
    schema = url.split("://", 1)[0]
    return schema + "://" if "://" in url and _SCHEMA.match(schema) else "(no schema)"


#: What an error may quote of a tag: a plain name ("mission-jo", "coordinators"). Anything else
#: (a URL pasted where the tag goes, with its password) is not echoed.
_PLAIN_TAG = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _tag_text(tag) -> str:
    text = str(tag)
    return text if _PLAIN_TAG.fullmatch(text) else "(a tag that is not a plain name, not shown)"


def _tags(entry_value, global_tags) -> str:
    tags: list = []
    items = entry_value if isinstance(entry_value, list) else [entry_value]
    for item in items:
        if isinstance(item, dict) and item.get("tag"):
            tag = item["tag"]
            tags.extend(tag if isinstance(tag, list) else [tag])
    if not tags and global_tags:
        tags.extend(global_tags if isinstance(global_tags, list) else [global_tags])
    return ", ".join(_tag_text(tag) for tag in tags) or "(untagged)"


def parse_apprise_yaml(text: str, source: str) -> apprise.Apprise:
    """Build an ``Apprise`` object from Apprise YAML ``text``; ``source`` names it in errors.

    Raises:
        ChannelConfigError: not YAML, no ``urls`` list, an ``include`` (refused: every channel
            must be visible in one place), an entry Apprise cannot load (the error gives
            ``urls[i]``, its schema and tags), or an entry with no tag (found by a bad-input
            review: it loaded and never received anything).
    """
    if len(text.encode("utf-8")) > MAX_CONFIG_BYTES:
        raise ChannelConfigError(f"{source}: Apprise config is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = yaml.load(text, Loader=_ConfigLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        # Only problems worded here, or a bad character's (ReaderError): PyYAML's may quote a tag or URL.
        problem = exc.problem if isinstance(exc, _Refused) else getattr(exc, "reason", None)
        raise ChannelConfigError(f"{source}: not valid YAML{where}" + (f": {problem}" if problem else "")) from None
    if not isinstance(data, dict) or not isinstance(data.get("urls"), list):
        raise ChannelConfigError(f"{source}: an Apprise YAML config needs a 'urls:' list")
    if "include" in data:
        raise ChannelConfigError(f"{source}: 'include' is not supported; list every channel in this file")
    global_tags = data.get("tag")
    entries = []  # (the item as Apprise's YAML takes it, its URL, its settings)
    for index, entry in enumerate(data["urls"]):
        if isinstance(entry, str):
            url, value = entry, None
        elif isinstance(entry, dict) and len(entry) == 1:
            url, value = next(iter(entry.items()))
            url = str(url)
        else:
            raise ChannelConfigError(f"{source}: urls[{index}]: expected a URL or 'URL: {{tag: ...}}'")
        entries.append((entry if value is not None else url, url, value))
    # One parse of every entry: an entry makes at most the channels it lists, so the right total
    # means each made them all. Otherwise the entries are parsed one by one to name the bad one.
    # The benchmark's 499 channels: 0.44 s to 0.53 s, against 0.63 s to 1.09 s one by one (best of 5).
    listed = [len(value) if isinstance(value, list) else 1 for _, _, value in entries]
    services = _apprise_services([item for item, _, _ in entries], global_tags)
    if len(services) != sum(listed):
        for index, ((item, url, value), count) in enumerate(zip(entries, listed, strict=True)):
            if len(_apprise_services([item], global_tags)) != count:
                raise ChannelConfigError(
                    f"{source}: urls[{index}] ({_schema(url)} for tag {_tags(value, global_tags)}) "
                    "is not a valid Apprise URL"
                )
        raise ChannelConfigError(f"{source}: Apprise made {len(services)} channels of the {sum(listed)} listed")
    if any(not service.tags for service in services):
        # Every digest goes to a recipient's tag: an untagged channel would never get one, silently.
        index, (_, url, _) = next((i, e) for i, e in enumerate(entries) if any(
            not service.tags for service in _apprise_services([e[0]], global_tags)))
        raise ChannelConfigError(
            f"{source}: urls[{index}] ({_schema(url)}) has no tag, so no digest would reach it: give it a "
            "recipient's tag (mission-<cc>, office-<cc>, coordinators) or 'always' for a copy of every digest"
        )
    for service in services:
        problem = _unreachable(service.tags)
        if problem:
            index, (_, url, value) = next((i, e) for i, e in enumerate(entries) if any(
                _unreachable(made.tags) for made in _apprise_services([e[0]], global_tags)))
            raise ChannelConfigError(f"{source}: urls[{index}] ({_schema(url)} for tag {_tags(value, global_tags)}) {problem}")
    hub = apprise.Apprise()
    for service in services:
        hub.add(service)
    return hub


#: The tags a digest goes to (``models.parties.recipient_tag``: ``coordinators``,
#: ``mission-<cc>``, ``office-<cc>`` with a lower-case ISO 3166-1 alpha-2 code), and Apprise's
#: ``always`` (a copy of every digest). Apprise lower-cases tags as it reads them.
_RECIPIENT_TAG = re.compile(r"coordinators|always|(?:mission|office)-([a-z]{2})")


def _unreachable(tags) -> str | None:
    """Why no digest would reach a channel with ``tags`` (a set of Apprise's lower-cased tags),
    or None when one of them is a recipient's tag of a real country (``pycountry``, ISO 3166-1).
    Found by a bad-input review: a channel tagged ``coordinator`` or ``mission-jn`` loaded and
    never received anything."""
    for tag in tags:
        match = _RECIPIENT_TAG.fullmatch(str(tag))
        if match and (match.group(1) is None or pycountry.countries.get(alpha_2=match.group(1).upper())):
            return None
    return ("is no recipient's tag, so no digest would reach it: use mission-<cc> or office-<cc> (an ISO "
            "3166-1 alpha-2 code), coordinators, or 'always' for a copy of every digest")


def _apprise_services(entries: list, global_tags) -> list:
    """The services Apprise's own YAML parser makes of ``entries`` (``urls:`` items) under the
    file's global ``tag``: only these two keys reach it (``asset:`` and ``groups:`` are not
    taken from the file)."""
    document = {"version": 1, "urls": entries}
    if global_tags is not None:
        document["tag"] = global_tags
    services, _ = ConfigBase.config_parse_yaml(yaml.safe_dump(document, allow_unicode=True))
    return services


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
            if Path(path).stat().st_size > MAX_CONFIG_BYTES:
                raise ChannelConfigError(f"{path}: Apprise config is larger than {MAX_CONFIG_BYTES} bytes")
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ChannelConfigError(f"{path}: cannot read Apprise config: {exc}") from None
        return parse_apprise_yaml(text, str(path))
    hub = apprise.Apprise()
    for tag in sorted(set(recipients)):
        if not hub.add(f"outbox://{tag}", tag=tag):
            raise ChannelConfigError(f"default outbox: cannot add outbox channel for tag {tag!r}")
    return hub
