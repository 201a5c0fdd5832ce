"""A throwaway self-signed certificate for the https listener."""

from __future__ import annotations

import os


def make_certificate(directory: str) -> tuple[str, str]:
    """A throwaway self-signed certificate for 127.0.0.1/localhost (openssl CLI)."""
    import subprocess

    cert, key = os.path.join(directory, "nulls3.pem"), os.path.join(directory, "nulls3.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key
