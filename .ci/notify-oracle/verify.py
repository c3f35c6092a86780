"""Verifies notifications with the Standard Webhooks reference library (not payhook's code).

Usage: verify.py SECRET [SECRET...] < deliveries.json
deliveries.json: [{"headers": {"webhook-id": ..., "webhook-timestamp": ..., "webhook-signature": ...},
                   "body": "<the exact body>"}, ...]
Each delivery must verify under EVERY secret given (a rotation signs with each), and the body
must be what the library returns. Prints "ok <webhook-id> <type>" per delivery; exits 1 at the
first failure, naming it.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook


def main() -> int:
    secrets = sys.argv[1:]
    if not secrets:
        print("usage: verify.py SECRET [SECRET...] < deliveries.json", file=sys.stderr)
        return 2
    deliveries = json.load(sys.stdin)
    for d in deliveries:
        for n, secret in enumerate(secrets):
            try:
                payload = Webhook(secret).verify(d["body"], d["headers"])
            except Exception as e:  # noqa: BLE001 - any failure is a verdict
                print(f"FAIL {d['headers'].get('webhook-id')} secret #{n}: {e}")
                return 1
        print(f"ok {d['headers']['webhook-id']} {payload['type']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
