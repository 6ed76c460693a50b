"""Microsoft Intune third-party CA integration (docs/intune-contract.md).

`auth` gets Entra client-credentials tokens, `client` discovers the Intune
services and speaks ScepActions and the PKI connector, `step` is the
enrollment-pipeline step that validates before issuing and notifies after,
and `revocation` is the background task that pulls revocation requests.
"""
