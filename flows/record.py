"""Recording statuses: the ``record-status`` flow (a deployment coordinators run from the Prefect
UI) and bulk imports from CSV.

The flow's parameters are typed so the UI shows choices: the milestone keys and member state
codes found in the roadmap files (``roadmaps/*.yaml``, or ``ROADMAP_FILES_DIR``) when the module
is imported (that is, when the deployment is served or deployed), and the states as an enum.
Prefect rejects any other value before the run starts; the database check below is the second
line (a roadmap loaded from elsewhere).
"""

import os
from pathlib import Path
from typing import Literal, Optional

from prefect import flow

from models.db import session_scope
from models.roadmap_file import RoadmapFileError, load_roadmap_file, roadmap_files_in
from models.status import record_status as record_status_row
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
) -> dict:
    """Record where one member state stands on one milestone (e.g. invitations, JO, done), with an
    optional note such as the note verbale number. The change shows in the next night's artifacts.

    Returns ``{"milestone", "member_state", "state", "note"}``.

    Raises:
        models.status.StatusError: the milestone, member state or roadmap is not in the database.
    """
    with session_scope() as session:
        row = record_status_row(
            session, milestone=milestone, member_state=member_state, state=State(state).value, note=note,
            changed_by=changed_by, roadmap=roadmap,
        )
        return {"milestone": milestone, "member_state": row.member_state_code, "state": row.state, "note": row.note}
