"""An Intune enrollment end to end on one machine: fake Intune, scepd on a SoftHSM2 token, certmonger.

Run with `./scripts/intune-demo.sh` after `./scripts/install.sh` (or run.sh). Everything lives in a
temporary directory and on loopback; nothing is left running.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.daemon import init_state, running, scepd  # noqa: E402
from tests.support.external import certmonger, openssl_cli  # noqa: E402
from tests.support.fake_intune.server import running_fake_intune  # noqa: E402


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="scepd-intune-demo-"))
    with running_fake_intune() as fake:
        step(f"fake Intune at {fake.base_url}")
        secret = work / "intune-client-secret"
        secret.write_text(fake.client_secret or "")
        state = work / "scepd"
        state.mkdir()
        toml = fake.config_snippet(f"file:{secret}") + '\n[endpoints.intune]\npath = "/intune"\nchallenge = "intune"\n'
        init_state(state, "demo-static-challenge", extra_toml=toml)
        print((state / "scepd.toml").read_text())
        with running(state, "demo-static-challenge", path="/intune") as daemon:
            step(f"scepd serves Intune devices at {daemon.url}")
            check = scepd("intune", "check", "--config", str(daemon.config), check=False)
            print(check.stdout or check.stderr, end="")

            step("Intune mints a challenge for CN=laptop-1 (its SCEP profile does this for a device)")
            challenge = fake.mint_challenge("CN=laptop-1", ttl=600)
            print(f"{challenge[:60]}... ({len(challenge)} characters)")

            step("certmonger (the device) enrolls with it")
            with certmonger.CertmongerInstance(work / "certmonger") as cm:
                cm.add_scep_ca("intune", daemon.url, signing_ca=daemon.ca_pem)
                res = cm.request("intune", subject="CN=laptop-1", challenge=challenge, timeout=60)
                print(res.listing)
            if res.cert_path is None:
                print("enrollment failed", file=sys.stderr)
                return 1
            cert = x509.load_pem_x509_certificate(res.cert_path.read_bytes())
            print(
                f"issued serial {cert.serial_number:X}; openssl verify:",
                "OK" if openssl_cli.verify(res.cert_path, daemon.ca_pem) else "FAILED",
            )

            step("what Intune heard (successNotification)")
            for tid, sent in fake.notifications("success").items():
                body = sent[-1].body
                print(
                    f"transactionId={tid} serial={body['certificateSerialNumber']} "
                    f"thumbprint={body['certificateThumbprint']} expires={body['certificateExpirationDateUtc']}"
                )
            print(scepd("intune", "notifications", "--config", str(daemon.config)).stdout, end="")

            step("the device is wiped: Intune queues a revocation request; scepd pulls it")
            context = fake.queue_revocation(f"{cert.serial_number:X}", issuer_name=cert.issuer.rfc4514_string())
            print(scepd("intune", "sync", "--config", str(daemon.config)).stdout, end="")
            for result in fake.revocation_results().get(context, []):
                print(
                    f"uploaded to Intune: requestContext={context} succeeded={result.succeeded} "
                    f"errorCode={result.error_code}"
                )
            print(
                scepd("cert", "show", f"{cert.serial_number:x}", "--config", str(daemon.config)).stdout.split(
                    "-----BEGIN"
                )[0],
                end="",
            )

            step("the CRL the daemon serves lists it")
            for _ in range(50):
                crl = x509.load_der_x509_crl(httpx.get(daemon.base_url + "/crl/ca.crl", timeout=10).content)
                if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                    break
                time.sleep(0.3)
            crl_pem = work / "crl.pem"
            crl_pem.write_bytes(crl.public_bytes(Encoding.PEM))
            verify = subprocess.run(
                [
                    "openssl",
                    "verify",
                    "-crl_check",
                    "-CAfile",
                    str(daemon.ca_pem),
                    "-CRLfile",
                    str(crl_pem),
                    str(res.cert_path),
                ],
                capture_output=True,
                text=True,
            )
            print((verify.stdout + verify.stderr).strip())
    print(f"\n(demo files in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
