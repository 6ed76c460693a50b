"""Where scepd keeps what it must remember: issued certificates, challenges, held requests,
the Intune ledger and CRL state.

`roles.py` says what callers may ask, one protocol per role; `base.py` holds the
records and errors those protocols speak in; `sqlite/` is the embedded backend.
docs/storage.md tells how to add another.
"""
