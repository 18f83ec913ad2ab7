"""The roadmap picture: milestone bars, the timeline chart (SVG/PNG) and the static HTML report."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path

import pytest
import yaml
from sqlmodel import select

from flows.report import (
    DEFAULT_LEAD_DAYS,
    MilestoneBar,
    milestone_bars,
    milestone_opens,
    render_timeline,
    report_for_database,
    write_report,
)
from models.db import session_scope
from models.status import Classification, iter_status_views, record_status
from models.tables import Roadmap
from tests.conftest import SEED_ROADMAP

AS_OF = dt.datetime.fromisoformat("2024-06-05T09:00:00+02:00")
KEYS = ["orientation-briefing", "save-the-date", "invitations", "nominations", "travel", "conference"]
SEED = yaml.safe_load(SEED_ROADMAP.read_text(encoding="utf-8"))
ARABIC_NAMES = [m["name_ar"] for m in SEED["member_states"]]


def _mark_invitations(codes=("JO", "TN")) -> None:
    with session_scope() as session:
        for code in codes:
            record_status(session, milestone="invitations", member_state=code, state="done", changed_by="test")


def _bars_and_views():
    with session_scope() as session:
        roadmap = session.exec(select(Roadmap)).one()
        views = list(iter_status_views(session, roadmap, AS_OF))
        return milestone_bars(views, milestone_opens(session, roadmap)), views, roadmap


def test_bars_of_the_seed_roadmap(seeded):
    _mark_invitations()
    bars, _, _ = _bars_and_views()

    assert [(b.key, b.start, b.end, b.is_window) for b in bars] == [
        ("orientation-briefing", dt.date(2024, 3, 3), dt.date(2024, 3, 17), False),
        ("save-the-date", dt.date(2024, 4, 1), dt.date(2024, 4, 15), False),
        ("invitations", dt.date(2024, 5, 17), dt.date(2024, 5, 31), False),
        ("nominations", dt.date(2024, 6, 1), dt.date(2024, 6, 30), True),
        ("travel", dt.date(2024, 6, 1), dt.date(2024, 6, 30), True),
        ("conference", dt.date(2024, 7, 2), dt.date(2024, 7, 4), True),
    ]
    assert DEFAULT_LEAD_DAYS == 14
    by_key = {b.key: b for b in bars}
    invitations = by_key["invitations"]
    assert invitations.share_done == 2 / 16
    assert (invitations.done, invitations.total) == (2, 16)
    assert invitations.due_first == invitations.due_last == dt.date(2024, 5, 31)
    assert invitations.counts[Classification.done] == 2
    assert invitations.counts[Classification.overdue] == 14
    assert sum(invitations.counts.values()) == 16
    assert set(invitations.counts) == set(Classification)
    assert by_key["orientation-briefing"].share_done == 1.0
    assert by_key["save-the-date"].share_done == 1.0
    # JO and TN may start their nominations: upcoming; the others wait for their invitations.
    assert by_key["nominations"].counts[Classification.upcoming] == 2
    assert by_key["nominations"].counts[Classification.blocked] == 14
    assert by_key["nominations"].share_done == 0.0
    assert by_key["conference"].title_ar.startswith("استشارة")


def test_bars_refuse_a_missing_opening_and_mixed_roadmaps(seeded):
    _, views, _ = _bars_and_views()
    with pytest.raises(ValueError, match="conference"):
        milestone_bars(views, {k: None for k in KEYS if k != "conference"})
    other = [dataclasses.replace(views[0], roadmap="other")]
    with pytest.raises(ValueError, match="several roadmaps"):
        milestone_bars(views + other, {k: None for k in KEYS})
    assert milestone_bars([], {}) == []


def test_timeline_svg_and_png(seeded, tmp_path):
    _mark_invitations()
    bars, _, _ = _bars_and_views()

    svg = render_timeline(bars, AS_OF, tmp_path / "timeline.svg")
    text = svg.read_text(encoding="utf-8")
    assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert "as of 2024-06-05" in text
    for key in KEYS:
        assert f">{key}</text>" in text, key
    assert "2/16 done, 14 overdue" in text
    assert "<dc:date>" not in text

    png = render_timeline(bars, AS_OF, tmp_path / "timeline.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"Software" not in png.read_bytes()

    # Deterministic: the same input gives the same bytes.
    assert render_timeline(bars, AS_OF, tmp_path / "again.svg").read_bytes() == svg.read_bytes()
    assert render_timeline(bars, AS_OF, tmp_path / "again.png").read_bytes() == png.read_bytes()

    # A waived row is finished but not called done (found by a coordinator's walkthrough).
    with session_scope() as session:
        record_status(session, milestone="invitations", member_state="LB", state="waived", changed_by="test")
    bars, _, _ = _bars_and_views()
    text = render_timeline(bars, AS_OF, tmp_path / "waived.svg").read_text(encoding="utf-8")
    assert "2/16 done, 1 waived, 13 overdue" in text


def test_timeline_needs_an_aware_as_of(tmp_path):
    with pytest.raises(ValueError, match="naive"):
        render_timeline([], AS_OF.replace(tzinfo=None), tmp_path / "t.svg")
    # No milestones still gives a picture.
    assert "no milestones" in render_timeline([], AS_OF, tmp_path / "t.svg").read_text(encoding="utf-8")


def test_report_for_database(seeded, tmp_path):
    _mark_invitations()
    with session_scope() as session:
        roadmap = session.exec(select(Roadmap)).one()
        roadmap.title = 'Review <script>alert("x")</script> & co'
        session.add(roadmap)

    paths = report_for_database(tmp_path / "out", AS_OF, database_url=seeded)

    folder = tmp_path / "out" / "gcm-arab-2024"
    assert paths == [folder / "index.html"]
    assert (folder / "timeline.svg").is_file() and (folder / "timeline.png").is_file()
    html = paths[0].read_text(encoding="utf-8")
    assert "<script" not in html
    assert "Review &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; co" in html
    assert '<h1 class="ar" dir="rtl" lang="ar">' + SEED["title_ar"] + "</h1>" in html
    assert len(ARABIC_NAMES) == 16
    for name in ARABIC_NAMES:
        assert f'<td dir="rtl" lang="ar">{name}</td>' in html, name
    assert '<img src="timeline.svg"' in html and 'href="timeline.png"' in html
    # As of 09:00 in +02:00 is 10:00 on the coordinators' clock (Cairo, summer time in 2024).
    assert "As of 2024-06-05T10:00:00+03:00: 96 status rows" in html
    # Overdue list: the 14 invitations not yet done, none for JO or TN.
    overdue = html.split("<h2>Overdue (14)</h2>", 1)[1]
    assert overdue.count("<td>invitations</td>") == 14
    assert "JO Jordan" not in overdue and "TN Tunisia" not in overdue
    # Matrix: one row per member state, JO's invitation cell done.
    assert html.count('<td dir="rtl" lang="ar">الأردن</td>') == 1
    assert re.search(r"<td>JO</td>\s*<td>Jordan</td>", html)
    # Self-contained: nothing fetched from elsewhere.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html and "@font-face" not in html


def test_write_report_escapes_every_roadmap_text(tmp_path):
    bar = MilestoneBar(
        key="k", title="<b>t</b>", title_ar="<i>ع</i>", start=dt.date(2024, 1, 1), end=dt.date(2024, 1, 2),
        due_first=dt.date(2024, 1, 2), due_last=dt.date(2024, 1, 2), is_window=True, total=0, done=0,
        share_done=0.0, counts={c: 0 for c in Classification},
    )
    index = write_report(tmp_path / "r", "<img src=x onerror=alert(1)>", "<svg onload=alert(1)>", [], [bar], AS_OF)
    html = index.read_text(encoding="utf-8")
    assert "<img src=x" not in html and "<svg onload" not in html and "<b>t</b>" not in html
    assert "&lt;i&gt;ع&lt;/i&gt;" in html
    with pytest.raises(ValueError, match="naive"):
        write_report(tmp_path / "r", "t", "", [], [], AS_OF.replace(tzinfo=None))
    with pytest.raises(ValueError, match="naive"):
        report_for_database(tmp_path / "s", AS_OF.replace(tzinfo=None))


def test_templates_are_package_data():
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text(encoding="utf-8"))
    assert "flows.templates" in project["tool"]["setuptools"]["packages"]
    assert project["tool"]["setuptools"]["package-data"]["flows.templates"] == ["*.j2"]
    assert any(dep.startswith("matplotlib") for dep in project["project"]["dependencies"])


def test_report_counts_waived_rows_as_progress_and_lists_the_most_overdue_first(seeded, tmp_path):
    """Found by a mutation review: no test failed when the progress left waived rows out, or
    when the overdue list put the least overdue first. On 10 July 2024, with JO's and TN's
    invitations done and LB's waived: 13 invitations overdue since 31 May come first, then the
    nominations of JO, TN and LB (due 30 June: a waived dependency unblocks as a done one does;
    the others wait behind their invitations), then the 16 conferences (4 July)."""
    _mark_invitations()
    with session_scope() as session:
        record_status(session, milestone="invitations", member_state="LB", state="waived", changed_by="test")
    as_of = dt.datetime.fromisoformat("2024-07-10T09:00:00+02:00")
    html = report_for_database(tmp_path / "out", as_of, database_url=seeded)[0].read_text(encoding="utf-8")
    # 32 orientation briefings and save-the-dates done, 2 invitations done, 1 waived: 35 of 96.
    assert "96 status rows, 36.5% done or waived." in html
    overdue = html.split("<h2>Overdue (", 1)[1].split("</table>", 1)[0]
    milestones = re.findall(r"<td>(invitations|nominations|travel|conference)</td>", overdue)
    assert milestones == ["invitations"] * 13 + ["nominations"] * 3 + ["conference"] * 16
