"""Independent DKIM implementation for interop tests (Debian's python3-dkim).

  dkim-interop.py verify RECORDS_JSON < message   -> exit 0 when every signature verifies
  dkim-interop.py sign SELECTOR DOMAIN KEYFILE rsa|ed25519 < message -> prints the DKIM-Signature field

RECORDS_JSON maps DNS names ("sel._domainkey.example.org") to TXT values:
dkim.verify reads the keys through `dnsfunc` instead of the system resolver.
"""
import json
import sys

import dkim


def main():
    mode = sys.argv[1]
    message = sys.stdin.buffer.read()
    if mode == "verify":
        records = json.loads(sys.argv[2])

        def dnsfunc(name, timeout=5):
            key = name.decode() if isinstance(name, bytes) else name
            value = records.get(key.rstrip("."))
            return value.encode() if value is not None else None

        d = dkim.DKIM(message)
        count = len([h for h in d.headers if h[0].lower() == b"dkim-signature"])
        ok = all(d.verify(idx=i, dnsfunc=dnsfunc) for i in range(count)) and count > 0
        print(f"signatures={count} ok={ok}")
        sys.exit(0 if ok else 1)
    selector, domain, keyfile, kind = sys.argv[2:6]
    with open(keyfile, "rb") as f:
        key = f.read()
    alg = b"ed25519-sha256" if kind == "ed25519" else b"rsa-sha256"
    sig = dkim.sign(
        message, selector.encode(), domain.encode(), key,
        canonicalize=(b"relaxed", b"relaxed"), signature_algorithm=alg,
        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
    )
    sys.stdout.buffer.write(sig)


main()
