"""Real delivery of a digest through Apprise: a local SMTP server (aiosmtpd) and a local HTTP sink."""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import urllib.parse

import pytest

from notifications.channels import ChannelConfigError, load_channels, parse_apprise_yaml
from notifications.delivery import Delivery, deliver
from notifications.digest import DigestItem, render_digest, render_digest_html
from tests.sinks import HttpSink, SmtpSink

AS_OF = dt.datetime(2024, 6, 5, 7, 0, tzinfo=dt.timezone.utc)


def _items() -> list[DigestItem]:
    return [
        DigestItem(
            roadmap_title="Second Regional Review",
            milestone_title="Joint signed invitations",
            milestone_title_ar="دعوات موقعة مشتركة",
            member_state="JO",
            member_state_name="Jordan",
            member_state_name_ar="الأردن",
            classification="overdue",
            deadline=dt.datetime(2024, 5, 31, 21, 59, 59, tzinfo=dt.timezone.utc),
            timezone="Europe/Zurich",
            days_left=-5,
            working_days_left=-3,
            window="overdue-3",
        )
    ]


@pytest.fixture
def http_sink():
    sink = HttpSink().start()
    yield sink
    sink.stop()


def test_digest_reaches_smtp_with_arabic_subject_and_http_sink(http_sink):
    user, password = "focal.point@example.org", "p@ss/word"
    smtp = SmtpSink(user, password).start()
    try:
        quoted_user = urllib.parse.quote(user, safe="")
        quoted_password = urllib.parse.quote(password, safe="")
        config = f"""
urls:
  - "mailto://{quoted_user}:{quoted_password}@127.0.0.1:{smtp.port}?smtp=127.0.0.1&mode=insecure&from=tracker@example.org&to=mission.jo@example.org":
      tag: mission-jo
  - "json://127.0.0.1:{http_sink.port}/hook":
      tag: mission-jo
"""
        hub = parse_apprise_yaml(config, "test config")
        subject, body = render_digest("mission-jo", _items(), AS_OF)
        html = render_digest_html("mission-jo", _items(), AS_OF)
        result = deliver(hub, tag="mission-jo", title=subject, body=body, body_html=html)
    finally:
        smtp.stop()
    assert result.ok, result.reason
    assert smtp.logins == [(user, password)]
    assert len(smtp.messages) == 1
    recipients, message = smtp.messages[0]
    assert recipients == ["mission.jo@example.org"]
    assert message["Subject"] == subject
    assert message["Subject"] == "Roadmap reminders: 1 item (1 overdue) | تذكيرات خريطة الطريق: بند واحد (المتأخر منها: 1)"
    html_part = message.get_body(preferencelist=("html",)).get_content()
    assert '<div dir="rtl" lang="ar">' in html_part
    assert "23 ذي القعدة 1445" in html_part
    # The JSON channel gets the plain-text digest, not HTML.
    assert len(http_sink.requests) == 1
    assert http_sink.requests[0]["title"] == subject
    assert http_sink.requests[0]["message"] == body.rstrip("\n")
    assert "الأردن" in body and "<div" not in body


def test_invalid_url_is_rejected_at_load_naming_the_tag():
    config = """
urls:
  - "json://127.0.0.1:9/ok":
      tag: coordinators
  - "nosuchschema://user:secret@host":
      tag: office-ly
"""
    with pytest.raises(ChannelConfigError) as info:
        parse_apprise_yaml(config, "apprise.yaml")
    message = str(info.value)
    assert "urls[1]" in message and "office-ly" in message and "apprise.yaml" in message
    assert "secret" not in message


def test_every_entry_loads_in_order_with_its_tags_and_a_bad_entry_after_good_ones_is_named():
    """The entries are parsed by Apprise together (one parse for a night's 500 channels): each
    still makes its channels, in file order, with its own and the file's tags, and a bad entry
    after an entry of several channels is still named by its position."""
    config = """
tag: always
urls:
  - "json://127.0.0.1:9/plain"
  - "json://127.0.0.1:9/two":
      - tag: mission-jo
      - tag: office-jo
  - "json://127.0.0.1:9/one":
      tag: coordinators
"""
    hub = parse_apprise_yaml(config, "apprise.yaml")
    assert [(service.url(privacy=True).split("?")[0], sorted(map(str, service.tags))) for service in hub] == [
        ("json://127.0.0.1:9/plain", ["always"]),
        ("json://127.0.0.1:9/two", ["always", "mission-jo"]),
        ("json://127.0.0.1:9/two", ["always", "office-jo"]),
        ("json://127.0.0.1:9/one", ["always", "coordinators"]),
    ]
    bad = config + '  - "json://127.0.0.1:9/x":\n      - tag: a\n      - tag: b\n  - "nosuch://u:s3cret@h":\n      tag: office-ly\n'
    with pytest.raises(ChannelConfigError) as info:
        parse_apprise_yaml(bad, "apprise.yaml")
    assert str(info.value) == "apprise.yaml: urls[4] (nosuch:// for tag office-ly) is not a valid Apprise URL"


def test_an_untagged_entry_is_refused_and_always_is_a_tag():
    """Found by a bad-input review: an entry with no tag loaded, and no digest ever reached it
    (every digest goes to a recipient's tag)."""
    config = """
urls:
  - "json://127.0.0.1:9/ok":
      tag: coordinators
  - "json://u:s3cret@127.0.0.1:9/archive"
"""
    with pytest.raises(ChannelConfigError) as info:
        parse_apprise_yaml(config, "apprise.yaml")
    assert str(info.value) == (
        "apprise.yaml: urls[1] (json://) has no tag, so no digest would reach it: give it a recipient's tag "
        "(mission-<cc>, office-<cc>, coordinators) or 'always' for a copy of every digest")
    hub = parse_apprise_yaml(config.replace('/archive"', '/archive":\n      tag: always'), "apprise.yaml")
    assert [sorted(map(str, service.tags)) for service in hub] == [["coordinators"], ["always"]]
    from notifications.delivery import _services

    assert [sorted(map(str, service.tags)) for service in _services(hub, "mission-jo")] == [["always"]]


@pytest.mark.parametrize(("tags", "shown"), [
    ("coordinator", "coordinator"),
    ("5", "5"),
    ("[mission-jn, office-]", "mission-jn, office-"),  # JN is no ISO 3166-1 code
    ("missionjo", "missionjo"),
])
def test_a_channel_with_no_recipient_tag_is_refused(tags, shown):
    """Found by a bad-input review: a misspelled tag loaded, and no digest ever reached it."""
    config = f'urls:\n  - "json://127.0.0.1:9/ok":\n      tag: coordinators\n  - "json://u:s3cret@127.0.0.1:9/x":\n      tag: {tags}\n'
    with pytest.raises(ChannelConfigError) as info:
        parse_apprise_yaml(config, "apprise.yaml")
    assert str(info.value) == (
        f"apprise.yaml: urls[1] (json:// for tag {shown}) is no recipient's tag, so no digest would reach it: use "
        "mission-<cc> or office-<cc> (an ISO 3166-1 alpha-2 code), coordinators, or 'always' for a copy of every digest")


def test_recipient_tags_are_read_in_any_case():
    hub = parse_apprise_yaml('urls:\n  - "json://127.0.0.1:9/x":\n      tag: [Mission-JO, typo]\n', "apprise.yaml")
    assert [sorted(map(str, service.tags)) for service in hub] == [["mission-jo", "typo"]]


def test_failing_channel_is_reported_not_raised(http_sink):
    http_sink.status = 500
    hub = parse_apprise_yaml(f'urls:\n  - "json://127.0.0.1:{http_sink.port}/":\n      tag: office-jo\n', "cfg")
    result = deliver(hub, tag="office-jo", title="t", body="b", attempts=3, backoff_s=0.01)
    assert not result.ok
    assert result.attempts == 3
    assert len(http_sink.requests) == 3
    assert "failure" in result.reason.lower()


def test_a_retry_goes_only_to_the_channels_that_failed(http_sink):
    """Two channels on one tag, one refusing connections: the one that took the digest gets it
    once, not once per attempt (found by a bad-input review: 3 copies a night)."""
    closed = HttpSink().start()
    closed_port = closed.port
    closed.stop()
    second = HttpSink().start()
    try:
        hub = parse_apprise_yaml(
            "urls:\n"
            f'  - "json://127.0.0.1:{http_sink.port}/hook":\n      tag: mission-jo\n'
            f'  - "json://127.0.0.1:{closed_port}/hook?cto=0.5":\n      tag: mission-jo\n'
            f'  - "json://127.0.0.1:{second.port}/hook":\n      tag: mission-jo\n',
            "cfg",
        )
        result = deliver(hub, tag="mission-jo", title="t", body="b", attempts=3, backoff_s=0.01)
    finally:
        second.stop()
    assert (result.ok, result.attempts, result.reason) == (False, 3, "JSON: failure")
    assert len(http_sink.requests) == 1
    assert len(second.requests) == 1


def test_a_failing_copy_channel_does_not_fail_the_recipients_delivery(http_sink):
    """Found by a fault review: an archive tagged ``always`` that refused every message made every
    recipient's reminder fail, be sent again each night to the channels that took it, and be
    escalated as the missions' failure. The copy is tried once and named in ``copy_reason``; the
    delivery is the recipient's own channels'. A tag no channel of its own reaches is delivered
    by the ``always`` channels, retried as its own (found by a review of that fix: a config of
    one catch-all channel delivered nothing)."""
    archive = HttpSink(status=500).start()
    try:
        hub = parse_apprise_yaml(
            "urls:\n"
            f'  - "json://127.0.0.1:{http_sink.port}/hook":\n      tag: mission-jo\n'
            f'  - "json://127.0.0.1:{archive.port}/archive":\n      tag: always\n',
            "cfg",
        )
        result = deliver(hub, tag="mission-jo", title="t", body="b", attempts=3, backoff_s=0.01)
        assert (result.ok, result.attempts, result.reason, result.copy_reason) == (True, 1, "", "JSON: failure")
        assert (len(http_sink.requests), len(archive.requests)) == (1, 1)
        alone = deliver(hub, tag="mission-tn", title="t", body="b", attempts=3, backoff_s=0.01)
        assert (alone.ok, alone.attempts, alone.reason, alone.copy_reason) == (False, 3, "JSON: failure", "")
        assert (len(http_sink.requests), len(archive.requests)) == (1, 4)
        catch_all = parse_apprise_yaml(f'urls:\n  - "json://127.0.0.1:{http_sink.port}/all":\n      tag: always\n', "cfg")
        assert deliver(catch_all, tag="mission-tn", title="t", body="b", attempts=3, backoff_s=0.01) == (
            Delivery(True, 1, "", ""))
        assert len(http_sink.requests) == 2
    finally:
        archive.stop()


def test_html_is_rendered_once_for_several_email_channels():
    hub = parse_apprise_yaml(
        "urls:\n"
        '  - "json://127.0.0.1:9/a?format=html":\n      tag: mission-jo\n'
        '  - "json://127.0.0.1:9/b?format=html":\n      tag: mission-jo\n'
        '  - "json://127.0.0.1:9/c":\n      tag: mission-jo\n',
        "cfg",
    )
    from notifications.delivery import _groups

    calls = []
    groups = _groups(hub, "mission-jo", "text", lambda: calls.append(1) or "<p>html</p>")
    assert [(len(group), text, fmt.value, copy) for group, text, fmt, copy in groups] == [
        (1, "<p>html</p>", "html", False), (1, "<p>html</p>", "html", False), (1, "text", "text", False)]
    assert calls == [1]


def test_default_outbox_writes_one_file_per_message(outbox):
    hub = load_channels(["mission-jo", "coordinators"])
    assert deliver(hub, tag="mission-jo", title="عنوان", body="نص").ok
    files = list((outbox / "mission-jo").glob("*.txt"))
    assert len(files) == 1
    assert files[0].read_text(encoding="utf-8").startswith("Subject: عنوان\n")
    assert not (outbox / "coordinators").exists()


def test_tag_without_channel_fails_with_reason(tmp_path, monkeypatch):
    config = tmp_path / "apprise.yaml"
    config.write_text('urls:\n  - "json://127.0.0.1:9/":\n      tag: coordinators\n', encoding="utf-8")
    monkeypatch.setenv("ROADMAP_APPRISE_CONFIG", str(config))
    hub = load_channels(["office-jo"])
    result = deliver(hub, tag="office-jo", title="t", body="b", backoff_s=0)
    assert not result.ok and result.attempts == 1
    assert result.reason == "no channel configured for this recipient tag"


def test_roadmap_text_cannot_run_template_code_or_inject_markup():
    item = _items()[0]
    hostile = DigestItem(**{**item.__dict__, "milestone_title": "{{ 7 * 7 }} <b>bold</b> {% raw %}"})
    _, body = render_digest("mission-jo", [hostile], AS_OF)
    html = render_digest_html("<script>alert(1)</script>", [hostile], AS_OF)
    assert "{{ 7 * 7 }} <b>bold</b> {% raw %}" in body and "49" not in body
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;" in html and "<script>" not in html


@pytest.mark.parametrize(
    ("status", "delay_s", "closed", "reason"),
    [(500, 0.0, False, "JSON: failure"), (200, 3.0, False, "JSON: failure"), (200, 0.0, True, "JSON: failure")],
    ids=["answers-500", "times-out-after-accepting", "refuses-connections"],
)
def test_failing_channels_are_retried_a_bounded_number_of_times(status, delay_s, closed, reason):
    sink = HttpSink(status=status, delay_s=delay_s).start()
    port = sink.port
    if closed:
        sink.stop()
    try:
        hub = parse_apprise_yaml(f'urls:\n  - "json://127.0.0.1:{port}/?rto=0.5&cto=0.5":\n      tag: office-jo\n', "cfg")
        started = time.monotonic()
        result = deliver(hub, tag="office-jo", title="t", body="b", attempts=3, backoff_s=0.05)
        elapsed = time.monotonic() - started
    finally:
        if not closed:
            sink.stop()
    assert not result.ok
    assert result.attempts == 3
    assert result.reason == reason
    assert elapsed < 10
    if not closed:
        assert len(sink.requests) == 3


def test_the_tag_index_finds_what_apprise_finds():
    """delivery indexes channels by tag (one pass per hub); it must reach exactly the channels
    Apprise's own find() reaches, "always" channels included, and follow channels added later."""
    from notifications.delivery import _services

    hub = parse_apprise_yaml(
        "urls:\n"
        "  - json://127.0.0.1:9/a:\n      tag: mission-jo\n"
        "  - json://127.0.0.1:9/b:\n      tag: office-jo, mission-jo\n"
        "  - json://127.0.0.1:9/c:\n      tag: always\n"
        "  - json://127.0.0.1:9/d:\n      tag: coordinators\n",
        "test.yaml",
    )
    for tag in ("mission-jo", "office-jo", "coordinators", "office-tn"):
        assert sorted(s.url() for s in _services(hub, tag)) == sorted(s.url() for s in hub.find(tag)), tag
    assert [s.url().split("?")[0] for s in _services(hub, "office-tn")] == ["json://127.0.0.1:9/c"]
    hub.add("json://127.0.0.1:9/e", tag="office-tn")
    assert sorted(s.url().split("?")[0] for s in _services(hub, "office-tn")) == ["json://127.0.0.1:9/c", "json://127.0.0.1:9/e"]


def test_a_digest_lists_the_most_urgent_items_and_counts_the_rest(monkeypatch):
    import dataclasses

    import notifications.digest as digest

    monkeypatch.setattr(digest, "DIGEST_MAX_ITEMS", 2)
    base = _items()[0]
    items = [dataclasses.replace(base, member_state=cc, member_state_name=name, days_left=left)
             for cc, name, left in [("TN", "Tunisia", -1), ("JO", "Jordan", -5), ("LB", "Lebanon", 3)]]
    subject, body = digest.render_digest("coordinators", items, AS_OF)
    assert "(3 items)" in body.splitlines()[0] and "3 items" in subject
    assert "Jordan (JO)" in body and "Tunisia (TN)" in body and "Lebanon" not in body
    assert body.count("… and 1 more, less urgent item:") == 1
    assert body.count("… وبند آخر، أقل إلحاحاً") == 1
    html = digest.render_digest_html("coordinators", items, AS_OF)
    assert "Lebanon" not in html and html.count("… and 1 more") == 1


def test_a_digest_built_item_by_item_keeps_the_most_urgent_and_counts_all(monkeypatch):
    """Listing 2, a digest keeps at most 7 items while 25 are added (it trims to 2 on reaching 8, three times); it
    lists the two with the fewest days left, the tie between the two Jordan items broken by the
    order they were added in, and counts all 25, of which 20 are overdue."""
    import dataclasses

    import notifications.digest as digest

    monkeypatch.setattr(digest, "DIGEST_MAX_ITEMS", 2)
    base = _items()[0]
    days = [3, -1, 5, -9, 2, 0, -4, 1, -2, -3, -5, -6, -7, -8, -1, -2, -3, -4, -5, -9, -6, -9, -1, -2, -3]
    states = ["TN"] * 19 + ["JO", "TN", "JO", "TN", "TN", "TN"]
    items = [dataclasses.replace(base, member_state=cc, days_left=left, roadmap_title=f"roadmap {n}",
                                 classification="overdue" if left < 0 else "due_soon")
             for n, (cc, left) in enumerate(zip(states, days, strict=True))]
    built = digest.Digest()
    kept = []
    for item in items:
        built.add(item)
        kept.append(len(built._kept))
    assert kept == [1, 2, 3, 4, 5, 6, 7] + [2, 3, 4, 5, 6, 7] * 3  # trimmed to 2 on reaching 8
    assert [i.roadmap_title for i in built.listed()] == ["roadmap 19", "roadmap 21"]
    assert (built.count, built.overdue, built.escalation) == (25, 20, False)
    subject, body = digest.render_digest("coordinators", built, AS_OF)
    assert subject == "Roadmap reminders: 25 items (20 overdue) | تذكيرات خريطة الطريق: 25 بندًا (المتأخر منها: 20)"
    assert body.count("… and 23 more, less urgent items") == 1
    assert body.count("… و23 بندًا آخر، أقل إلحاحاً") == 1
    assert digest.render_digest("coordinators", items, AS_OF) == (subject, body)


@pytest.mark.parametrize(("n", "category", "item", "day"), [
    (0, "zero", "0 بند", "0 يوم"),
    (1, "one", "بند واحد", "يوم واحد"),
    (2, "two", "بندان", "يومان"),
    (3, "few", "3 بنود", "3 أيام"),
    (10, "few", "10 بنود", "10 أيام"),
    (11, "many", "11 بندًا", "11 يومًا"),
    (99, "many", "99 بندًا", "99 يومًا"),
    (100, "other", "100 بند", "100 يوم"),
    (102, "other", "102 بند", "102 يوم"),
    (103, "few", "103 بنود", "103 أيام"),
    (111, "many", "111 بندًا", "111 يومًا"),
])
def test_arabic_counted_nouns_follow_the_cldr_plural_categories(n, category, item, day):
    """Found by a bad-input review: every subject read "N بنود" (and "1 items"), which is Arabic
    for 3 to 10 only."""
    from notifications.plurals import arabic_category, arabic_count, english_count

    assert (arabic_category(n), arabic_count(n, "item"), arabic_count(n, "day")) == (category, item, day)
    assert english_count(n, "item") == ("1 item" if n == 1 else f"{n} items")


def test_a_digest_counts_its_days_and_items_in_both_languages():
    import dataclasses

    one_day = dataclasses.replace(_items()[0], days_left=-1, working_days_left=-1, reason="overdue by 1 working day",
                                  reason_ar="مدة التأخير يوم عمل واحد")
    two_left = dataclasses.replace(_items()[0], member_state="TN", member_state_name="Tunisia", member_state_name_ar="تونس",
                                   classification="due_soon", days_left=2, working_days_left=2)
    subject, body = render_digest("coordinators", [one_day, two_left], AS_OF)
    assert subject == "Escalation to the coordinators: 2 items | تصعيد إلى المنسقين: بندان"
    assert "  OVERDUE by 1 day (1 working)" in body
    assert "  due soon, 2 days left (2 working)" in body
    assert "  متأخر، مدة التأخير يوم واحد (يوم عمل واحد)" in body
    assert "  مستحق قريبًا، يتبقى يومان (يوما عمل)" in body
    assert "  escalated: overdue by 1 working day" in body
    assert "  تصعيد: مدة التأخير يوم عمل واحد" in body
    html = render_digest_html("coordinators", [one_day, two_left], AS_OF)
    assert "OVERDUE by 1 day (1 working)" in html and "<i>تصعيد: مدة التأخير يوم عمل واحد</i>" in html
    # The headings count their items as the subject does (found by the twenty-first session's
    # review: the HTML said a bare "(2)"), and name an escalation as the subject does (found by a
    # seed review: they said "Roadmap reminders").
    assert "<h2>Escalation to the coordinators (2 items)</h2>" in html and "<h2>تصعيد إلى المنسقين (بندان)</h2>" in html
    assert "<title>Escalation to the coordinators: coordinators</title>" in html
    assert body.splitlines()[0] == "Escalation to the coordinators (2 items), as of 2024-06-05 07:00 UTC"
    assert "تصعيد إلى المنسقين (بندان)، بتاريخ 2024-06-05 07:00 UTC" in body.splitlines()


def test_a_digest_asks_a_mission_to_write_to_the_mailbox_of_each_roadmaps_coordinators():
    """Found by a review of the seed, whose last slide gives the review's mailbox: a digest asked
    missions and offices to "tell the coordinators" with no address. One mailbox for every item
    ends the line that asks; several (a mission in two regions' reviews) are listed with their
    roadmaps, the roadmap that gives none left to the plain sentence."""
    gcm = dataclasses.replace(_items()[0], coordinator_email="gcmrrarabstates@iom.int")
    _, body = render_digest("mission-jo", [gcm], AS_OF, ask_to_report=True)
    lines = body.splitlines()
    assert lines.count("Done already? Please tell the coordinators, who record it on the roadmap: "
                       "gcmrrarabstates@iom.int") == 1
    assert lines.count("هل أُنجز ذلك؟ يُرجى إبلاغ المنسقين ليسجّلوه في خريطة الطريق: gcmrrarabstates@iom.int") == 1
    html = render_digest_html("mission-jo", [gcm], AS_OF, ask_to_report=True)
    assert ('<p>Done already? Please tell the coordinators, who record it on the roadmap: '
            '<a href="mailto:gcmrrarabstates@iom.int">gcmrrarabstates@iom.int</a></p>') in html
    assert "gcmrrarabstates@iom.int" not in render_digest("coordinators", [gcm], AS_OF)[1]  # they record it

    asia = dataclasses.replace(gcm, roadmap_title="Asia-Pacific Review", coordinator_email="gcm.asia@iom.int",
                               milestone_title="Nominations")
    untold = dataclasses.replace(gcm, roadmap_title="Unnamed Review", coordinator_email="", milestone_title="Travel")
    _, body = render_digest("mission-jo", [gcm, asia, untold, asia], AS_OF, ask_to_report=True)
    lines = body.splitlines()
    ask = lines.index("Done already? Please tell the coordinators, who record it on the roadmap:")
    # The roadmap that gives none last (found by a review of this change: its items had no word).
    assert lines[ask + 1:ask + 5] == ["  gcm.asia@iom.int (Asia-Pacific Review)",
                                      "  gcmrrarabstates@iom.int (Second Regional Review)",
                                      "  your usual contact (Unnamed Review)", ""]
    ask_ar = lines.index("هل أُنجز ذلك؟ يُرجى إبلاغ المنسقين ليسجّلوه في خريطة الطريق:")
    assert lines[ask_ar + 1:ask_ar + 3] == lines[ask + 1:ask + 3]
    assert lines[ask_ar + 3] == "  جهة اتصالكم المعتادة (Unnamed Review)"
    html = render_digest_html("mission-jo", [gcm, asia, untold], AS_OF, ask_to_report=True)
    assert ('<li><a href="mailto:gcm.asia@iom.int">gcm.asia@iom.int</a> (Asia-Pacific Review)</li>\n'
            '<li><a href="mailto:gcmrrarabstates@iom.int">gcmrrarabstates@iom.int</a> (Second Regional Review)</li>\n'
            '<li>your usual contact (Unnamed Review)</li>') in html
    # Both roadmaps' coordinators at one mailbox: it ends the line again, as long as every item has it.
    shared = dataclasses.replace(asia, coordinator_email="gcmrrarabstates@iom.int")
    assert ("Done already? Please tell the coordinators, who record it on the roadmap: gcmrrarabstates@iom.int"
            in render_digest("mission-jo", [gcm, shared], AS_OF, ask_to_report=True)[1].splitlines())
    _, body = render_digest("mission-jo", [gcm, shared, untold], AS_OF, ask_to_report=True)
    lines = body.splitlines()
    ask = lines.index("Done already? Please tell the coordinators, who record it on the roadmap:")
    assert lines[ask + 1:ask + 4] == ["  gcmrrarabstates@iom.int (Second Regional Review; Asia-Pacific Review)",
                                      "  your usual contact (Unnamed Review)", ""]
    # No roadmap gives one: the plain sentence.
    assert ("Done already? Please tell the coordinators, who record it on the roadmap."
            in render_digest("mission-jo", [untold], AS_OF, ask_to_report=True)[1].splitlines())


def test_a_digest_greets_its_addressee_by_name_and_names_its_tag_last():
    """Found by the twenty-first session's review of the digests: a permanent mission was
    greeted by its Apprise tag ("Roadmap reminders for mission-jo"). The greeting now names the
    addressee in both languages, the check's instant is written in UTC, and the tag is the last
    line."""
    addressee = ("Permanent Mission of Jordan to the United Nations Office at Geneva", "البعثة الدائمة للأردن")
    _, body = render_digest("mission-jo", _items(), AS_OF, addressee)
    lines = body.splitlines()
    assert lines[:2] == ["Roadmap reminders (1 item), as of 2024-06-05 07:00 UTC",
                         "To: Permanent Mission of Jordan to the United Nations Office at Geneva"]
    arabic = lines.index("---") + 1
    assert lines[arabic:arabic + 2] == ["تذكيرات خريطة الطريق (بند واحد)، بتاريخ 2024-06-05 07:00 UTC",
                                        "إلى: البعثة الدائمة للأردن"]
    assert lines[-1] == "Recipient tag | وسم المستلم: mission-jo"
    html = render_digest_html("mission-jo", _items(), AS_OF, addressee)
    assert "<title>Roadmap reminders: Permanent Mission of Jordan to the United Nations Office at Geneva</title>" in html
    assert "<p>إلى: البعثة الدائمة للأردن<br>بتاريخ 2024-06-05 07:00 UTC</p>" in html
    assert "<small>Recipient tag | وسم المستلم: mission-jo</small>" in html
    assert "Done already?" not in html  # asked only of a mission or an office: see below
    asked = render_digest_html("mission-jo", _items(), AS_OF, addressee, ask_to_report=True)
    assert "<p>Done already? Please tell the coordinators, who record it on the roadmap.</p>" in asked
    assert "<p>هل أُنجز ذلك؟ يُرجى إبلاغ المنسقين ليسجّلوه في خريطة الطريق.</p>" in asked
    # Without a name (a tag the database does not know), the tag stands in for it.
    assert render_digest("office-xk", _items(), AS_OF)[1].splitlines()[1] == "To: office-xk"


@pytest.mark.parametrize("day, text", [
    (dt.date(2024, 5, 31), "23 ذي القعدة 1445"),
    (dt.date(2024, 7, 4), "28 ذي الحجة 1445"),
    (dt.date(2024, 6, 30), "24 ذي الحجة 1445"),
    (dt.date(2024, 3, 17), "7 رمضان 1445"),
])
def test_a_hijri_month_after_its_day_is_in_the_genitive(day, text):
    """Found by the twenty-first session's review: "23 ذو القعدة" (nominative) after a number;
    the month names that change are the two that begin with ذو."""
    from notifications.digest import hijri_date

    assert hijri_date(day) == text


def test_a_digest_shows_the_deadline_in_its_owners_zone_and_working_days_apart():
    """Found by a mutation review: no test failed with the deadline shown in UTC ("21:59"
    beside "(Europe/Zurich)"), nor with calendar days shown as the working ones."""
    import dataclasses

    three_left = dataclasses.replace(_items()[0], classification="due_soon", days_left=3, working_days_left=1)
    _, body = render_digest("mission-jo", [three_left], AS_OF)
    assert "deadline 2024-05-31 23:59 (Europe/Zurich, UTC+02:00) - Second Regional Review" in body
    # The offset is the deadline's own: in winter Geneva is an hour ahead of UTC, Amman three.
    winter = dataclasses.replace(three_left, deadline=dt.datetime(2024, 1, 31, 22, 59, 59, tzinfo=dt.timezone.utc))
    amman = dataclasses.replace(three_left, timezone="Asia/Amman")
    _, body = render_digest("mission-jo", [winter, amman], AS_OF)
    assert "  deadline 2024-01-31 23:59 (Europe/Zurich, UTC+01:00) - Second Regional Review" in body.splitlines()
    assert "  deadline 2024-06-01 00:59 (Asia/Amman, UTC+03:00) - Second Regional Review" in body.splitlines()
    assert "  الموعد النهائي 2024-01-31 23:59 (Europe/Zurich، UTC+01:00) الموافق 19 رجب 1445 هـ" in body.splitlines()
    assert "  due soon, 3 days left (1 working)" in body
