"""A local emulator of the Bimplus REST API (``python -m bimfs.emulator``).

Serves the ``/v2`` calls bimfs uses (teams, projects, documents with versions, document folders,
legacy and OIDC login) over real HTTP from a persistent data dir, with injectable faults
(latency, failures, throttling, dropped connections, slow streams, answer variants) and
``/_emulator`` hooks for tests. docs/emulator.md describes it, including the seeded data.

Modules: ``server`` (command line, process), ``app`` (dispatch, statistics, faults, auth check),
``api`` (the /v2 handlers), ``auth`` (tokens, OIDC), ``admin`` (/_emulator), ``storage``
(SQLite + blob files), ``multipart`` (the streaming upload parser), ``transfer`` (ranges,
streaming downloads), ``views`` (JSON shapes), ``faults``, ``seed`` and ``samples``.
"""
