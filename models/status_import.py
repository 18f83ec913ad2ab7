"""Bulk status updates from a CSV file, all or nothing.

Columns (header row required, any order): ``milestone``, ``member_state``, ``state``, and
optionally ``note``, ``roadmap`` (slug) and ``at`` (ISO-8601; without an offset it is read in
the owner's zone). UTF-8, with or without the byte-order mark spreadsheets write. The file is
read with the standard library's ``csv`` module.
"""

from __future__ import annotations

import csv
from pathlib import Path

from sqlmodel import Session

from models.status import StatusError, record_status

REQUIRED = ("milestone", "member_state", "state")
OPTIONAL = ("note", "roadmap", "at")
#: Largest CSV accepted (bytes): thousands of rows fit in far less.
MAX_BYTES = 5 * 1024 * 1024


class StatusImportError(ValueError):
    """A CSV import that was refused; the message names the file, the line and the column."""


def import_statuses(session: Session, path: str | Path, changed_by: str = "csv") -> int:
    """Record every row of ``path`` in ``session`` (no commit: the caller commits once, so a bad
    row anywhere leaves the database unchanged). Returns the number of rows recorded.

    Raises:
        StatusImportError: unreadable file, missing or unknown column, empty required value, or a
            row ``record_status`` refuses; the first problem, with its line number.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise StatusImportError(f"{path}: cannot read file: {exc.strerror}") from None
    if size > MAX_BYTES:
        raise StatusImportError(f"{path}: file is larger than {MAX_BYTES} bytes")
    blank: list[bool] = []  # per physical line read so far: is it empty (a record the reader skips)?
    end = 0  # the physical line where the last record read ends (0: none yet, not even the header)
    line = 1  # the physical line where the record being read begins

    def lines(handle):
        for text in handle:
            blank.append(text in ("\n", "\r\n", "\r"))
            yield text

    def start_after(end: int) -> int:
        """The line where the record after line ``end`` begins: past the empty lines the reader skips."""
        while end < len(blank) and blank[end]:
            end += 1
        return end + 1

    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            # strict: a quoted value never closed, or text after a closing quote, is an error
            # (found by a bad-input review: the rest of the file became one note).
            reader = csv.DictReader(lines(handle), strict=True)
            # In any case, a space for the underscore ("Member state"), as spreadsheets write
            # headers (found by a review).
            header = [name.strip().lower().replace(" ", "_") for name in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                # Found by a coordinator's walkthrough: a spreadsheet's semicolon-separated
                # export was refused without saying why.
                hint = (" (the file is separated by semicolons: save it as \"CSV UTF-8 (comma delimited)\")"
                        if len(header) == 1 and ";" in header[0] else "")
                raise StatusImportError(
                    f"{path}: line 1: missing column(s) {', '.join(missing)} (header: {header}){hint}")
            unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
            if unknown:  # quoted: an empty name (a trailing comma) shows as ''
                raise StatusImportError(f"{path}: line 1: unknown column(s) {', '.join(map(repr, unknown))}")
            twice = sorted({c for c in header if header.count(c) > 1})
            if twice:  # csv.DictReader would keep the last value of each silently
                raise StatusImportError(f"{path}: line 1: column(s) given twice: {', '.join(twice)}")
            reader.fieldnames = header
            count, end = 0, reader.line_num
            for row in reader:
                # Found by bad-input reviews: the reader's own count is where a record ends and
                # counts the empty lines it skips, so a value over several lines or an empty line
                # above moved the line named.
                line, end = start_after(end), reader.line_num
                if None in row:
                    raise StatusImportError(f"{path}: line {line}: more values than columns")
                values = {k: (v or "").strip() for k, v in row.items()}
                for column in REQUIRED:
                    if not values.get(column):
                        raise StatusImportError(f"{path}: line {line}: column {column!r} is empty")
                try:
                    record_status(
                        session,
                        milestone=values["milestone"],
                        member_state=values["member_state"],
                        state=values["state"],
                        note=values.get("note") or None,
                        roadmap=values.get("roadmap") or None,
                        at=values.get("at") or None,
                        changed_by=changed_by,
                    )
                except StatusError as exc:
                    raise StatusImportError(f"{path}: line {line}: {exc}") from None
                count += 1
    except UnicodeDecodeError:
        raise StatusImportError(f"{path}: file is not UTF-8") from None
    except OSError as exc:  # a folder, no permission
        raise StatusImportError(f"{path}: cannot read file: {exc.strerror}") from None
    except csv.Error as exc:  # in the record after the last one read
        line = start_after(end)
        if str(exc) == "unexpected end of data":
            raise StatusImportError(f"{path}: line {line}: a quoted value of the record from this line on is never closed") from None
        if str(exc).endswith("expected after '\"'"):
            raise StatusImportError(f"{path}: line {line}: text after the closing quote of a value of the record from "
                                    'this line on (write a quote inside a quoted value as two: "")') from None
        raise StatusImportError(f"{path}: line {line}: {exc}") from None
    return count
