"""Real delivery of a digest through Apprise: a local SMTP server (aiosmtpd) and a local HTTP sink."""

from __future__ import annotations

import datetime as dt
import urllib.parse

import pytest

from notifications.channels import ChannelConfigError, load_channels, parse_apprise_yaml
from notifications.delivery import deliver
from notifications.digest import DigestItem, render_digest
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
        result = deliver(hub, tag="mission-jo", title=subject, body=body)
    finally:
        smtp.stop()
    assert result.ok, result.reason
    assert smtp.logins == [(user, password)]
    assert len(smtp.messages) == 1
    recipients, message = smtp.messages[0]
    assert recipients == ["mission.jo@example.org"]
    assert message["Subject"] == subject
    assert "تذكيرات خريطة الطريق: 1 بنود" in message["Subject"]
    text = message.get_body(preferencelist=("plain", "html")).get_content()
    assert "23 ذو القعدة 1445" in text
    assert len(http_sink.requests) == 1
    assert http_sink.requests[0]["title"] == subject
    assert "الأردن" in http_sink.requests[0]["message"]


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


def test_failing_channel_is_reported_not_raised(http_sink):
    http_sink.status = 500
    hub = parse_apprise_yaml(f'urls:\n  - "json://127.0.0.1:{http_sink.port}/":\n      tag: office-jo\n', "cfg")
    result = deliver(hub, tag="office-jo", title="t", body="b", attempts=3, backoff_s=0.01)
    assert not result.ok
    assert result.attempts == 3
    assert len(http_sink.requests) == 3
    assert "failure" in result.reason.lower()


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
