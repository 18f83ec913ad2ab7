"""Alembic environment of roadmap-tracker (``env.py``, ``script.py.mako``, ``versions/``).

Run it through :mod:`models.migrate` (``upgrade``, ``current_revision``), which serializes
concurrent upgrades; ``alembic.ini`` here serves the ``alembic`` command line (see that file).
"""
