"""The `scepd` command line, one module per command group.

init (the embedded default), serve, config, ca (CA and RA on the token),
challenge, intune, certs (`cert` and `crl`), pending (manual approval), store
(copying the SQLite store into PostgreSQL); common holds what they share,
errors what a failure prints and exits with, parser the argparse tree and
`main`, the console script's entry point.
"""

from scepd.cli.parser import main

__all__ = ["main"]
