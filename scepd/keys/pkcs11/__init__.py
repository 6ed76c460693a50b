"""Keys on a PKCS#11 token (RFC 7512 URIs in the config), behind scepd.keys.base's Signer/Decrypter.

config: what opens a token, and how opening fails; session: one PKCS#11 session
used by one thread; worker: the worker process around a session; lock: the
SoftHSM2 file lock every opener waits for; key: one key on the token; pool:
the workers shared by the keys, and the CLI's one-shot helpers. Import from
the module itself: this package imports nothing, so a worker process stays light.
"""
