"""stripe-python's verdict on Stripe-Signature cases, for tests/signature_parity.rs.

Reads JSON lines {"payload_hex", "header" (string or null), "secrets", "tolerance", "now_ms"}
on stdin and writes one JSON line per case: {"accept": bool, "why": str}. The first output
line names the library and interpreter. The verdict is the library's own
`stripe.WebhookSignature.verify_header`, called once per secret (the library takes one secret;
an application rotating secrets tries each), with its clock (`time.time()`, fractional
seconds) pinned to `now_ms / 1000`.
"""

import json
import os
import platform
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "python"))

import stripe  # noqa: E402
import stripe._webhook  # noqa: E402


class PinnedClock:
    """Stands in for the `time` module inside stripe._webhook (it only calls time.time())."""

    now = 0.0

    def time(self):
        return self.now


def main():
    clock = PinnedClock()
    stripe._webhook.time = clock
    out = sys.stdout
    out.write(
        json.dumps(
            {"oracle": f"stripe-python {stripe.VERSION} (Python {platform.python_version()})"}
        )
        + "\n"
    )
    for line in sys.stdin:
        if not line.strip():
            continue
        case = json.loads(line)
        clock.now = case["now_ms"] / 1000
        payload = bytes.fromhex(case["payload_hex"])
        accept, why = False, "no secret"
        for secret in case["secrets"]:
            try:
                stripe.WebhookSignature.verify_header(
                    payload, case["header"], secret, case["tolerance"]
                )
                accept, why = True, ""
                break
            except Exception as e:  # every failure is a rejection, whatever its type
                why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        out.write(json.dumps({"accept": accept, "why": why}) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
