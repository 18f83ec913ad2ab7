"""Alerts to the coordinators when the nightly check itself goes wrong: Prefect automations.

The automations (``flows/automations/*.yaml``) run inside the Prefect server, so they keep
working when our own processes are dead. Their action sends through a notification block of
our own type, :class:`CoordinatorsNotification`: an Apprise URL kept as a secret. The server
loads this module through the ``prefect.collections`` entry point of the package.

``apply_automations`` is what ``roadmap automations apply`` runs: it saves the block and
creates (or replaces, by name) every automation.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from prefect.blocks.notifications import AppriseNotificationBlock

AUTOMATIONS_DIR = Path(__file__).parent / "automations"
BLOCK_NAME = "roadmap-coordinators"


class CoordinatorsNotification(AppriseNotificationBlock):
    """Notification block: one Apprise URL (any scheme Apprise supports: mailto, json, ...) reaching
    the coordinators. The URL is stored as a secret; it is never shown in logs or the UI."""

    _block_type_name = "Roadmap Coordinators Notification"
    _block_type_slug = "roadmap-coordinators-notification"
    _description = "Alerts roadmap-tracker's coordinators through any Apprise URL."


def automation_definitions(block_document_id: str) -> list[dict]:
    """The shipped automations with the notification block filled in (plain dicts, Prefect's schema)."""
    definitions = []
    for path in sorted(AUTOMATIONS_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        text = json.dumps(data).replace("{{ block_document_id }}", block_document_id)
        definitions.append(json.loads(text))
    return definitions


def apply_automations(apprise_url: str, block_name: str = BLOCK_NAME) -> list[str]:
    """Save the coordinators' notification block and create every shipped automation,
    replacing automations of the same name. Returns the automation names.

    Args:
        apprise_url: the coordinators' Apprise URL (a credential: never logged).

    Raises:
        ValueError: Apprise does not accept ``apprise_url`` (the message names only its scheme).
        prefect.exceptions.PrefectHTTPStatusError: the server rejected a definition.
    """
    import apprise
    from prefect.automations import Automation
    from prefect.client.orchestration import get_client

    if not apprise.Apprise().add(apprise_url):
        scheme = apprise_url.split("://", 1)[0] if "://" in apprise_url else "(none)"
        raise ValueError(f"the coordinators' Apprise URL is not valid (scheme {scheme!r})")
    block_id = CoordinatorsNotification(url=apprise_url).save(block_name, overwrite=True)
    names = []
    with get_client(sync_client=True) as client:
        for definition in automation_definitions(str(block_id)):
            for existing in client.read_automations_by_name(definition["name"]):
                client.delete_automation(existing.id)
            Automation.model_validate(definition).create()
            names.append(definition["name"])
    return names
