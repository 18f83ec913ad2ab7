"""Notifications: rendering digests and delivering them through Apprise.

Knows nothing of Prefect or of the database: callers pass plain values in and get plain results back.
Importing the package registers the ``outbox://`` Apprise schema.
"""

from notifications import outbox as _outbox  # noqa: F401  (registers outbox://)
