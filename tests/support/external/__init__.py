"""Harness for SCEP clients and servers we did not write: certmonger, micromdm's scepclient and scepserver,
the openssl command line (the interop tests are in tests/external/ and tests/e2e/test_external_clients.py)."""
