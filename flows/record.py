"""Recording statuses: the ``record-status`` flow (a deployment coordinators run from the Prefect
UI) and bulk imports from CSV.

The flow's parameters are typed so the UI shows choices: the milestone keys and member state
codes found in the roadmap files (``roadmaps/*.yaml``, or the folder in ``ROADMAP_FILES_DIR``)
when the module is imported (that is, when the deployment is served or deployed), and the states
as an enum. Prefect rejects any other value before the run starts, so a roadmap synced from
another folder needs ``ROADMAP_FILES_DIR`` set to that folder, and a new roadmap file a new
``roadmap serve`` (found by a review). The database check in
:func:`models.status.record_status` is the second line: a milestone or member state the files
list but the database does not (not synced yet, or removed).
"""

import os
from pathlib import Path
from typing import Literal, Optional

from prefect import flow

from models.db import session_scope
from models.roadmap_file import RoadmapFileError, load_roadmap_file, roadmap_files_in
from models.status import StatusError, record_status as record_status_row
from models.tables import State


def roadmap_choices(folder: Path | None = None) -> tuple[list[str], list[str]]:
    """Milestone keys (in file order) and member state codes (sorted) of every valid roadmap file
    in ``folder``. Invalid files are left out (``roadmap sync`` reports them)."""
    folder = folder or Path(os.environ.get("ROADMAP_FILES_DIR") or Path(__file__).resolve().parent.parent / "roadmaps")
    keys: dict[str, None] = {}
    codes: set[str] = set()
    for path in roadmap_files_in(folder):
        try:
            spec = load_roadmap_file(path)
        except RoadmapFileError:
            continue
        keys.update(dict.fromkeys(m.key for m in spec.milestones))
        codes |= {m.code for m in spec.member_states}
    return list(keys), sorted(codes)


_KEYS, _CODES = roadmap_choices()
MilestoneKey = Literal[tuple(_KEYS)] if _KEYS else str  # type: ignore[valid-type]
MemberStateCode = Literal[tuple(_CODES)] if _CODES else str  # type: ignore[valid-type]


@flow(name="record-status")
def record_status(
    milestone: MilestoneKey,
    member_state: MemberStateCode,
    state: State,
    note: Optional[str] = None,
    roadmap: Optional[str] = None,
    changed_by: str = "prefect-ui",
    at: Optional[str] = None,
) -> dict:
    """Record where one member state stands on one milestone (e.g. invitations, JO, done), with an
    optional note such as the note verbale number. The change shows in the next night's artifacts.

    Args:
        milestone: the milestone's key in the roadmap file, e.g. invitations.
        member_state: the member state's ISO alpha-2 code, e.g. JO.
        state: pending, in_progress, done or waived.
        note: replaces the row's note, e.g. the note verbale number; empty keeps it.
        roadmap: the roadmap's slug, needed only when several roadmaps have the milestone.
        changed_by: who records the change (kept in the history), at most 200 characters.
        at: when it happened, ISO-8601 (2024-05-20T10:00); without an offset, in the owner's
            zone (the mission's Geneva, the office's country); empty means now. Not in the
            future, nor before a change already recorded for the row.

    Returns:
        ``{"milestone", "member_state", "state", "note"}``.

    Raises:
        models.status.StatusError: ``changed_by`` empty, or what
            :func:`models.status.record_status` refuses (the milestone, member state or
            roadmap not in the database, an ambiguous milestone, a note over 2,000 characters,
            a bad ``at``).
    """
    if not changed_by.strip():  # found by a review: the history's "who" was stored empty
        raise StatusError("changed_by is empty: say who records the change")
    with session_scope() as session:
        row = record_status_row(
            session, milestone=milestone, member_state=member_state, state=State(state).value, note=note,
            changed_by=changed_by.strip(), roadmap=roadmap, at=at or None,
        )
        return {"milestone": milestone, "member_state": row.member_state_code, "state": row.state, "note": row.note}
