#!/usr/bin/env python3
"""Self-check of the fake Stripe (.ci/fake_stripe.py): every scenario that
fake-stripe.md documents, run against a fresh fake; exits 1 on a mismatch.

    python3 .ci/fake_stripe_check.py              # ~10 s; prints one line per check
    python3 .ci/fake_stripe_check.py --dump DIR   # also saves every response body as
                                                  # DIR/NNN-<kind>.json (kind: pi, si, pm,
                                                  # customer, event, error, list_event, ...)

Standard library only. Everything binds 127.0.0.1; every wait is bounded.
"""
import argparse
import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = "sk_test_fake_check"
FAILURES = []
DUMP = {"dir": None, "n": 0}


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)


class Fake:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_stripe.py"),
                                      "--port", "0"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("LISTENING "):
            raise SystemExit(f"fake did not start: {line!r}")
        self.base = "http://127.0.0.1:" + line.split()[1]

    def stop(self):
        self.proc.stdin.close()  # EOF: the fake exits
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def call(self, method, path, form=None, body=None, headers=None, auth=True, kind=None):
        """(status, headers, parsed JSON). form: list of (key, value) pairs."""
        data, h = None, dict(headers or {})
        if auth:
            h["Authorization"] = "Bearer " + KEY
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            h["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(self.base + path, data=data, headers=h, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, rh, raw = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            status, rh, raw = e.code, e.headers, e.read()
        parsed = json.loads(raw) if raw.strip() else None
        if DUMP["dir"] and kind:
            DUMP["n"] += 1
            with open(os.path.join(DUMP["dir"], f"{DUMP['n']:03d}-{kind}.json"), "wb") as f:
                f.write(raw)
        return status, rh, parsed

    def ok(self, method, path, form=None, kind=None, **kw):
        status, _, body = self.call(method, path, form=form, kind=kind, **kw)
        if status != 200:
            raise AssertionError(f"{method} {path} -> {status} {body}")
        return body

    def card(self, number, **kw):
        return self.ok("POST", "/v1/payment_methods", [
            ("type", "card"), ("card[number]", number), ("card[exp_month]", "12"),
            ("card[exp_year]", "2031"), ("card[cvc]", "123")], kind="pm", **kw)

    def customer(self, **kw):
        return self.ok("POST", "/v1/customers", [("email", "c@example.com")],
                       kind="customer", **kw)

    def events(self, query="", **kw):
        return self.ok("GET", "/v1/events" + query, kind="list_event", **kw)

    def event_types(self, object_id, **kw):
        page = self.events("?limit=100", **kw)["data"]
        return [e["type"] for e in reversed(page) if e["data"]["object"].get("id") == object_id]

    def saved_card(self, number, cus, **kw):
        """A card saved through a SetupIntent, 3DS completed if it asks."""
        pm = self.card(number, **kw)
        si = self.ok("POST", "/v1/setup_intents", [
            ("customer", cus), ("payment_method", pm["id"]), ("confirm", "true"),
            ("usage", "off_session")], kind="si", **kw)
        if si["status"] == "requires_action":
            si = self.ok("POST", f"/v1/setup_intents/{si['id']}/_authenticate", [
                ("client_secret", si["client_secret"]), ("success", "true")], kind="si", **kw)
        return pm, si


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records what it gets."""

    def __init__(self):
        self.got, self.fail_paths = [], set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append((self.path, dict(self.headers), body))
                self.send_response(500 if self.path in outer.fail_paths else 200)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait_for(self, pred, seconds=5):
        deadline = time.time() + seconds
        while time.time() < deadline:
            found = [g for g in list(self.got) if pred(g)]
            if found:
                return found
            time.sleep(0.05)
        return []


def verify_signature(secret, headers, body, tolerance=60):
    parts = dict(p.split("=", 1) for p in headers["Stripe-Signature"].split(","))
    t = int(parts["t"])
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - t) < tolerance


def wait(pred, seconds=5):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


# --- scenarios ---------------------------------------------------------------
def request_log(f):
    f.ok("DELETE", "/_config/requests")
    cus = f.customer(headers={"Idempotency-Key": "k-log-1", "Stripe-Version": "2025-09-30.clover",
                              "Stripe-Account": "acct_LOG"})
    f.ok("GET", f"/v1/customers/{cus['id']}?expand[]=sources", headers={"Stripe-Account": "acct_LOG"})
    log = f.ok("GET", "/_config/requests")["data"]
    check(len(log) == 2 and [r["method"] for r in log] == ["POST", "GET"],
          "request log: every API request, oldest first")
    check(log[0]["params"] == {"email": "c@example.com"} and log[0]["path"] == "/v1/customers",
          "request log: form params parsed")
    check(log[0]["headers"] == {"Idempotency-Key": "k-log-1", "Stripe-Account": "acct_LOG",
                                "Stripe-Context": None, "Stripe-Version": "2025-09-30.clover"},
          "request log: Idempotency-Key, Stripe-Account, Stripe-Context, Stripe-Version")
    check(log[1]["query"] == {"expand": ["sources"]} and log[1]["status"] == 200,
          "request log: query and status")
    check(KEY not in json.dumps(log) and "Authorization" not in json.dumps(log),
          "request log: never the Authorization value")
    posts = f.ok("GET", "/_config/requests?method=POST&path=/v1/customers")["data"]
    check(len(posts) == 1, "request log: ?method=&path= filters")
    f.ok("DELETE", "/_config/requests")
    check(f.ok("GET", "/_config/requests")["data"] == [], "request log: DELETE clears it")


def faults(f):
    f.ok("POST", "/_config/faults", body={"method": "POST", "path": "/v1/customers",
                                          "status": 429, "count": 2, "retry_after": 1})
    statuses = []
    for _ in range(3):
        status, headers, body = f.call("POST", "/v1/customers", [("email", "x@example.com")],
                                       headers={"Idempotency-Key": "k-fault"}, kind="error")
        statuses.append((status, headers.get("Retry-After"), (body.get("error") or {}).get("code")))
    check(statuses[:2] == [(429, "1", "rate_limit")] * 2 and statuses[2][0] == 200,
          "faults: 429 rate_limit with Retry-After twice, then the request runs")
    check(headers.get("Idempotent-Replayed") is None,
          "faults: a faulted request stores nothing under its Idempotency-Key")
    f.ok("POST", "/_config/faults", body={"path": "/v1/payment_intents", "status": 500})
    status, _, body = f.call("POST", "/v1/payment_intents", [("amount", "100"), ("currency", "usd")],
                             kind="error")
    check(status == 500 and body["error"]["type"] == "api_error", "faults: 500 api_error")
    f.ok("POST", "/_config/faults", body={"path": "/v1/customers", "status": 402,
                                          "error": {"type": "card_error", "code": "x"}})
    status, _, body = f.call("POST", "/v1/customers", [])
    check(status == 402 and body == {"error": {"type": "card_error", "code": "x"}},
          "faults: a given error body")
    f.ok("POST", "/_config/faults", body={"path": "/v1/customers", "delay_ms": 300})
    t0 = time.time()
    status, _, _ = f.call("POST", "/v1/customers", [])
    check(status == 200 and time.time() - t0 >= 0.3, "faults: delay_ms then run")
    f.ok("POST", "/_config/faults", body={"path": "/v1/", "status": 503, "count": 5})
    f.ok("DELETE", "/_config/faults")
    check(f.call("GET", "/v1/customers")[0] == 200, "faults: DELETE clears them")
    log = f.ok("GET", "/_config/requests?path=/v1/customers&method=POST")["data"]
    check([r["fault"] for r in log[:2]] == [True, True], "faults: marked in the request log")


def events_api(f):
    f.ok("DELETE", "/_config/data")
    cus = f.customer()
    f.ok("POST", f"/v1/customers/{cus['id']}", [("name", "N")], kind="customer")
    pm, si = f.saved_card("4242424242424242", cus["id"])
    f.ok("POST", f"/v1/payment_methods/{pm['id']}/detach", kind="pm")
    page = f.events("?limit=100")
    everything = page["data"]
    types = [e["type"] for e in reversed(everything)]
    check(types == ["customer.created", "customer.updated", "setup_intent.created",
                    "payment_method.attached", "setup_intent.succeeded",
                    "payment_method.detached"], f"events: one per change, in order: {types}")
    keys = (set(everything[0]) >= {"id", "object", "created", "type", "data", "livemode",
                                   "api_version", "pending_webhooks", "request"})
    check(keys and "account" not in everything[0], "events: Stripe's fields, no account")
    check(everything[-1]["request"]["id"].startswith("req_"), "events: request id")
    check(all(a["created"] >= b["created"] for a, b in zip(everything, everything[1:]))
          and page["has_more"] is False, "events: newest first")
    snap = next(e for e in everything if e["type"] == "setup_intent.created")
    check(snap["data"]["object"]["status"] == "requires_confirmation",
          "events: data.object is a snapshot of that moment")
    one = f.ok("GET", f"/v1/events/{everything[0]['id']}", kind="event")
    check(one == everything[0], "events: GET /v1/events/{id}")
    walked, cursor = [], None
    while True:  # forward, two at a time
        q = "?limit=2" + (f"&starting_after={cursor}" if cursor else "")
        p = f.events(q)
        walked += p["data"]
        if not p["has_more"]:
            break
        cursor = p["data"][-1]["id"]
    check([e["id"] for e in walked] == [e["id"] for e in everything],
          "events: starting_after walks every event once")
    back, cursor = [], everything[-1]["id"]
    while True:  # backward from the oldest
        p = f.events(f"?limit=2&ending_before={cursor}")
        back = p["data"] + back
        if not p["has_more"]:
            break
        cursor = p["data"][0]["id"]
    check([e["id"] for e in back] == [e["id"] for e in everything[:-1]],
          "events: ending_before pages back, newest first within a page")
    q = "?types[]=customer.created&types[]=payment_method.attached"
    check(sorted(e["type"] for e in f.events(q)["data"]) ==
          ["customer.created", "payment_method.attached"], "events: types[]")
    check(len(f.events("?type=payment_method.*")["data"]) == 2, "events: type with * wildcard")
    newest = everything[0]["created"]
    check(len(f.events(f"?created[gt]={newest}")["data"]) == 0 and
          len(f.events(f"?created[gte]={newest}&created[lte]={newest}")["data"]) >= 1 and
          len(f.events(f"?created={newest}")["data"]) >= 1, "events: created filters")
    for bad in ("?limit=0", "?limit=101", "?type=a&types[]=b", "?bogus=1",
                "?starting_after=evt_nope", "?delivery_success=maybe"):
        check(f.call("GET", "/v1/events" + bad, kind="error")[0] == 400, f"events: {bad} -> 400")
    check(f.events("?delivery_success=true")["data"] == [] and
          len(f.events("?delivery_success=false&limit=100")["data"]) == len(everything),
          "events: never delivered counts as delivery_success=false")
    # Inserted: same second as the newest, and one listed late with an older created.
    same = f.ok("POST", "/_config/events", body={
        "id": "evt_same_second", "type": "payment_intent.succeeded", "created": newest,
        "data": {"object": {"id": "pi_inserted", "object": "payment_intent"}}}, kind="event")
    late = f.ok("POST", "/_config/events", body={
        "id": "evt_listed_late", "type": "payment_intent.processing", "created": newest - 3600,
        "data": {"object": {"id": "pi_inserted", "object": "payment_intent"}},
        "api_version": "2024-06-20"}, kind="event")
    check(same["pending_webhooks"] == 0 and late["api_version"] == "2024-06-20",
          "events: /_config/events keeps the event as given")
    ids = [e["id"] for e in f.events("?limit=100")["data"]]
    check(ids[0] == "evt_same_second" and ids[-1] == "evt_listed_late",
          "events: inserted events listed by created (same second: inserted later is newer)")
    check([e["id"] for e in f.events(f"?created[gte]={newest - 3600}&created[lt]={newest - 60}")
           ["data"]] == ["evt_listed_late"], "events: late-listed event found by its created")
    check(f.call("POST", "/_config/events", body=same)[0] == 400, "events: duplicate id -> 400")


def webhooks(f):
    f.ok("DELETE", "/_config/data")
    rx = Receiver()
    f.ok("POST", "/_config/webhooks/platform", body={
        "url": rx.url + "/platform", "secret": "whsec_platform", "delay_ms": 0})
    f.ok("POST", "/_config/webhooks/connect", body={
        "url": rx.url + "/connect", "secret": "whsec_connect", "connect": True, "delay_ms": 0})
    f.ok("POST", "/_config/webhooks/only", form=[
        ("url", rx.url + "/only"), ("secret", "whsec_only"), ("events[]", "customer.updated"),
        ("delay_ms", "0")])
    cus = f.customer()
    acct = f.customer(headers={"Stripe-Account": "acct_HOOKS"})
    got = rx.wait_for(lambda g: g[0] == "/platform")
    check(len(got) == 1 and json.loads(got[0][2])["data"]["object"]["id"] == cus["id"],
          "webhooks: platform event to the platform endpoint only")
    check(got and verify_signature("whsec_platform", got[0][1], got[0][2]),
          "webhooks: Stripe-Signature t=<now>,v1=HMAC-SHA256(secret, t.body)")
    got = rx.wait_for(lambda g: g[0] == "/connect")
    body = json.loads(got[0][2]) if got else {}
    check(len(got) == 1 and body.get("account") == "acct_HOOKS"
          and body["data"]["object"]["id"] == acct["id"]
          and verify_signature("whsec_connect", got[0][1], got[0][2]),
          "webhooks: connect=true endpoint gets the connected account's event, with account")
    check(not rx.wait_for(lambda g: g[0] == "/only", 0.5), "webhooks: events[] filters types")
    ok_ids = lambda: [e["id"] for e in f.events("?delivery_success=true")["data"]]  # noqa: E731
    check(wait(lambda: len(ok_ids()) == 1), "webhooks: delivery_success=true once acknowledged")
    rx.fail_paths.add("/platform")
    f.ok("POST", f"/v1/customers/{cus['id']}", [("name", "N")])
    wait(lambda: len(rx.got) >= 4)
    time.sleep(0.2)
    failed = f.events("?delivery_success=false&type=customer.updated")["data"]
    check(len(failed) == 1 and failed[0]["pending_webhooks"] == 1,
          "webhooks: a 500 from one endpoint -> delivery_success=false, pending_webhooks 1")
    deliveries = f.ok("GET", f"/_config/deliveries?event={failed[0]['id']}")["data"]
    check(sorted(d["status"] for d in deliveries) == [200, 500], "webhooks: deliveries recorded")
    rx.fail_paths.clear()
    f.ok("POST", f"/_config/events/{failed[0]['id']}/deliver")
    check(wait(lambda: f.events("?delivery_success=false&type=customer.updated")["data"] == []),
          "webhooks: redelivered and acknowledged -> delivery_success=true")
    inserted = f.ok("POST", "/_config/events", body={
        "id": "evt_inserted_connect", "type": "payment_intent.succeeded", "account": "acct_HOOKS",
        "data": {"object": {"id": "pi_x", "object": "payment_intent"}}})
    got = rx.wait_for(lambda g: g[0] == "/connect" and b"evt_inserted_connect" in g[2])
    check(len(got) == 1 and json.loads(got[0][2]) == dict(inserted, pending_webhooks=1),
          "webhooks: inserted events are delivered too")
    for hook in ("platform", "connect", "only"):
        f.ok("DELETE", f"/_config/webhooks/{hook}")
    rx.server.shutdown()


def connect(f):
    f.ok("DELETE", "/_config/data")
    a, b = {"Stripe-Account": "acct_A"}, {"Stripe-Account": "acct_B"}
    cus = f.customer(headers=a)
    for who, h in (("platform", None), ("another account", b)):
        status, _, body = f.call("GET", f"/v1/customers/{cus['id']}", headers=h, kind="error")
        check(status == 404 and body["error"]["code"] == "resource_missing",
              f"connect: {who} cannot read acct_A's customer (404 resource_missing)")
        status, _, _ = f.call("POST", f"/v1/customers/{cus['id']}", [("name", "x")], headers=h)
        check(status == 404, f"connect: {who} cannot update it")
    check(f.ok("GET", f"/v1/customers/{cus['id']}", headers=a)["id"] == cus["id"],
          "connect: acct_A reads its own customer")
    check(f.call("GET", f"/v1/customers/{cus['id']}", headers={"Stripe-Context": "acct_A"})[0]
          == 200, "connect: Stripe-Context works like Stripe-Account")
    pm = f.card("4242424242424242", headers=a)
    status, _, _ = f.call("POST", f"/v1/payment_methods/{pm['id']}/attach",
                          [("customer", cus["id"])], headers=b)
    check(status == 404, "connect: attaching another account's PM -> 404")
    f.customer(headers=b)
    check([len(f.ok("GET", "/v1/customers", headers=h)["data"]) for h in (a, b, None)]
          == [1, 1, 0], "connect: lists are per account")
    k = {"Idempotency-Key": "same-key"}
    one = f.customer(headers={**a, **k})
    two = f.customer(headers={**b, **k})
    check(one["id"] != two["id"], "connect: Idempotency-Key scoped per account")
    evs = f.events(headers=a)["data"]
    check(evs and all(e.get("account") == "acct_A" for e in evs) and
          not any(e.get("account") for e in f.events()["data"]),
          "connect: events list per account, connected events carry account")
    check(f.call("GET", "/v1/customers", headers={"Stripe-Account": "nope"})[0] == 400,
          "connect: a malformed Stripe-Account -> 400")


def payments(f):
    f.ok("DELETE", "/_config/data")
    cus = f.customer()["id"]
    # 4242: succeeded, with every parameter payhook's app API sends.
    pm = f.card("4242424242424242")
    pi = f.ok("POST", "/v1/payment_intents", [
        ("amount", "1099"), ("currency", "usd"), ("customer", cus), ("payment_method", pm["id"]),
        ("confirm", "true"), ("setup_future_usage", "off_session"), ("description", "Order 7"),
        ("metadata[checkout_id]", "chk_1"), ("metadata[customer_ref]", "user_42"),
        ("payment_method_types[]", "card"), ("capture_method", "automatic")], kind="pi")
    check(pi["status"] == "succeeded" and pi["client_secret"].startswith(pi["id"] + "_secret_")
          and pi["metadata"] == {"checkout_id": "chk_1", "customer_ref": "user_42"}
          and pi["description"] == "Order 7", "4242: succeeded, params kept, client_secret")
    check(f.ok("GET", f"/v1/payment_methods/{pm['id']}")["customer"] == cus,
          "4242: setup_future_usage saved the card")
    check(f.event_types(pi["id"]) == ["payment_intent.created", "payment_intent.succeeded"],
          "4242: payment_intent.created, payment_intent.succeeded")
    auto = f.ok("POST", "/v1/payment_intents", [
        ("amount", "500"), ("currency", "eur"), ("automatic_payment_methods[enabled]", "true")],
        kind="pi")
    check(auto["status"] == "requires_payment_method" and
          auto["automatic_payment_methods"]["enabled"] is True, "PI: automatic_payment_methods")
    onses = f.ok("POST", f"/v1/payment_intents/{auto['id']}/confirm", [
        ("payment_method", f.card("4242424242424242")["id"]),
        ("return_url", "https://example.com/back")], kind="pi")
    check(onses["status"] == "succeeded", "PI: confirm with payment_method (on-session)")

    # 3184: on-session asks for 3DS; off-session declines authentication_required.
    pm3184, si = f.saved_card("4000002760003184", cus)
    check(si["status"] == "succeeded", "3184: saved through SetupIntent + 3DS")
    status, _, err = f.call("POST", "/v1/payment_intents", [
        ("amount", "2000"), ("currency", "usd"), ("customer", cus),
        ("payment_method", pm3184["id"]), ("off_session", "true"), ("confirm", "true")],
        kind="error")
    e = err["error"]
    check(status == 402 and e["type"] == "card_error" and e["code"] == "authentication_required"
          and e["decline_code"] == "authentication_required" and e["message"],
          "3184 off-session: 402 card_error authentication_required")
    epi = e["payment_intent"]
    check(epi["status"] == "requires_payment_method" and epi["payment_method"] is None
          and epi["last_payment_error"]["code"] == "authentication_required"
          and epi["last_payment_error"]["payment_method"]["id"] == pm3184["id"]
          and epi["client_secret"] and e["payment_method"]["id"] == pm3184["id"],
          "3184 off-session: payment_intent and payment_method in the error, like Stripe")
    check(f.event_types(epi["id"])[-1] == "payment_intent.payment_failed",
          "3184 off-session: payment_intent.payment_failed")
    back = f.ok("POST", f"/v1/payment_intents/{epi['id']}/confirm",
                [("payment_method", pm3184["id"])], kind="pi")
    check(back["status"] == "requires_action" and back["next_action"]["type"] == "use_stripe_sdk",
          "3184 back on-session: requires_action, use_stripe_sdk")
    done = f.ok("POST", f"/v1/payment_intents/{epi['id']}/_authenticate", [
        ("client_secret", epi["client_secret"]), ("success", "true")], kind="pi")
    check(done["status"] == "succeeded" and f.event_types(epi["id"])[-2:] ==
          ["payment_intent.requires_action", "payment_intent.succeeded"],
          "3184 authenticated: succeeded, payment_intent.succeeded")

    # 3178: saved after 3DS, then every payment declined insufficient_funds.
    pm3178, si = f.saved_card("4000008260003178", cus)
    check(si["status"] == "succeeded" and f.event_types(si["id"]) == [
        "setup_intent.created", "setup_intent.requires_action", "setup_intent.succeeded"],
        "3178: SetupIntent requires_action, _authenticate -> succeeded")
    check(f.ok("GET", f"/v1/payment_methods/{pm3178['id']}")["customer"] == cus,
          "3178: attached once set up")
    for session in ("true", "false"):
        form = [("amount", "2000"), ("currency", "usd"), ("customer", cus),
                ("payment_method", pm3178["id"]), ("confirm", "true")]
        if session == "true":
            form.append(("off_session", "true"))
        status, _, err = f.call("POST", "/v1/payment_intents", form, kind="error")
        e = err["error"]
        lpe = e["payment_intent"]["last_payment_error"]
        check(status == 402 and e["code"] == "card_declined" and e["decline_code"] ==
              "insufficient_funds" and lpe["decline_code"] == "insufficient_funds"
              and e["payment_intent"]["status"] == "requires_payment_method"
              and lpe["charge"] == e["charge"],
              f"3178 off_session={session}: 402 card_declined insufficient_funds")

    # 9995: declined at confirm, never saved.
    pm9995 = f.card("4000000000009995")
    status, _, err = f.call("POST", "/v1/payment_intents", [
        ("amount", "700"), ("currency", "usd"), ("customer", cus), ("payment_method", pm9995["id"]),
        ("setup_future_usage", "off_session"), ("confirm", "true")], kind="error")
    e = err["error"]
    check(status == 402 and e["decline_code"] == "insufficient_funds" and
          e["payment_intent"]["last_payment_error"]["decline_code"] == "insufficient_funds",
          "9995: 402 card_declined insufficient_funds")
    check(f.ok("GET", f"/v1/payment_methods/{pm9995['id']}")["customer"] is None and
          f.event_types(e["payment_intent"]["id"])[-1] == "payment_intent.payment_failed",
          "9995: card not attached, payment_intent.payment_failed")
    status, _, err = f.call("POST", "/v1/setup_intents", [
        ("customer", cus), ("payment_method", pm9995["id"]), ("confirm", "true")], kind="error")
    esi = err["error"]["setup_intent"]
    check(status == 402 and esi["status"] == "requires_payment_method" and
          esi["last_setup_error"]["decline_code"] == "insufficient_funds" and
          f.event_types(esi["id"])[-1] == "setup_intent.setup_failed",
          "9995 SetupIntent: 402, requires_payment_method, last_setup_error, setup_failed")

    # processing: held, then settled; and by itself after after_ms.
    pmp = f.saved_card("4242424242424242", cus)[0]
    f.ok("POST", f"/_config/payment_methods/{pmp['id']}/processing", body={"outcome": "hold"})
    pi = f.ok("POST", "/v1/payment_intents", [
        ("amount", "900"), ("currency", "usd"), ("customer", cus), ("payment_method", pmp["id"]),
        ("off_session", "true"), ("confirm", "true")], kind="pi")
    check(pi["status"] == "processing" and
          f.event_types(pi["id"])[-1] == "payment_intent.processing", "processing: held")
    done = f.ok("POST", f"/_config/payment_intents/{pi['id']}/settle",
                body={"outcome": "succeeded"}, kind="pi")
    check(done["status"] == "succeeded" and
          f.event_types(pi["id"])[-1] == "payment_intent.succeeded", "processing: settled")
    ev = f.events("?type=payment_intent.succeeded&limit=1")["data"][0]
    check(ev["request"] == {"id": None, "idempotency_key": None},
          "processing: the later event has no request")
    f.ok("POST", f"/_config/payment_methods/{pmp['id']}/processing",
         body={"outcome": "failed", "after_ms": 100})
    pi = f.ok("POST", "/v1/payment_intents", [
        ("amount", "900"), ("currency", "usd"), ("customer", cus), ("payment_method", pmp["id"]),
        ("confirm", "true")])
    check(wait(lambda: f.ok("GET", f"/v1/payment_intents/{pi['id']}")["status"] ==
               "requires_payment_method"), "processing: fails by itself after after_ms")
    f.ok("DELETE", f"/_config/payment_methods/{pmp['id']}/processing")
    sepa = f.ok("POST", "/v1/payment_methods", [
        ("type", "sepa_debit"), ("sepa_debit[iban]", "DE89370400440532013000")])
    pi = f.ok("POST", "/v1/payment_intents", [
        ("amount", "900"), ("currency", "eur"), ("payment_method", sepa["id"]),
        ("payment_method_types[]", "sepa_debit"), ("confirm", "true")], kind="pi")
    check(pi["status"] == "processing" and wait(lambda: f.ok(
        "GET", f"/v1/payment_intents/{pi['id']}")["status"] == "succeeded"),
        "processing: SEPA test IBAN processing -> succeeded")

    # manual capture
    pi = f.ok("POST", "/v1/payment_intents", [
        ("amount", "300"), ("currency", "usd"), ("capture_method", "manual"),
        ("payment_method", f.card("4242424242424242")["id"]), ("confirm", "true")], kind="pi")
    done = f.ok("POST", f"/v1/payment_intents/{pi['id']}/capture", kind="pi")
    check(pi["status"] == "requires_capture" and pi["amount_capturable"] == 300 and
          done["status"] == "succeeded" and done["amount_received"] == 300 and
          f.event_types(pi["id"])[-2:] == ["payment_intent.amount_capturable_updated",
                                           "payment_intent.succeeded"],
          "PI capture_method=manual: requires_capture, /capture -> succeeded")

    # cancel
    pi = f.ok("POST", "/v1/payment_intents", [("amount", "100"), ("currency", "usd")])
    c = f.ok("POST", f"/v1/payment_intents/{pi['id']}/cancel",
             [("cancellation_reason", "abandoned")], kind="pi")
    check(c["status"] == "canceled" and c["canceled_at"] and
          f.event_types(pi["id"])[-1] == "payment_intent.canceled", "PI cancel: canceled + event")
    status, _, err = f.call("POST", f"/v1/payment_intents/{done['id']}/cancel", kind="error")
    check(status == 400 and err["error"]["code"] == "payment_intent_unexpected_state",
          "PI cancel of a succeeded PI: 400 payment_intent_unexpected_state")
    si = f.ok("POST", "/v1/setup_intents", [
        ("customer", cus), ("usage", "off_session"), ("metadata[checkout_id]", "chk_2"),
        ("payment_method_types[]", "card"), ("description", "Save card")], kind="si")
    c = f.ok("POST", f"/v1/setup_intents/{si['id']}/cancel", kind="si")
    check(c["status"] == "canceled" and f.event_types(si["id"]) ==
          ["setup_intent.created", "setup_intent.canceled"], "SI cancel: canceled + event")
    si = f.ok("POST", "/v1/setup_intents", [("customer", cus)], kind="si")
    pm = f.card("5555555555554444")
    si = f.ok("POST", f"/v1/setup_intents/{si['id']}/confirm", [("payment_method", pm["id"])],
              kind="si")
    check(si["status"] == "succeeded" and si["payment_method"] == pm["id"],
          "SI confirm with payment_method: succeeded, attached")


def thin_events(f):
    f.ok("DELETE", "/_config/data")
    cus = f.customer(headers={"Stripe-Account": "acct_T"})
    pi = f.ok("POST", "/v1/payment_intents", [("amount", "100"), ("currency", "usd"),
                                              ("customer", cus["id"])],
              headers={"Stripe-Account": "acct_T"})
    note = f.ok("POST", "/_config/thin_events", body={
        "type": "v1.payment_intent.succeeded", "related_object": {"id": pi["id"]},
        "context": "acct_T"})
    check(set(note) == {"id", "object", "type", "created", "livemode", "context", "reason",
                        "related_object"} and note["object"] == "v2.core.event"
          and note["related_object"] == {"id": pi["id"], "type": "payment_intent",
                                         "url": f"/v1/payment_intents/{pi['id']}"}
          and note["created"].endswith("Z") and "T" in note["created"],
          "thin: notification body (no data), RFC 3339 created, related_object url")
    check(f.call("GET", f"/v2/core/events/{note['id']}", auth=False)[0] == 401,
          "thin: GET /v2/core/events needs the API key")
    check(f.call("GET", f"/v2/core/events/{note['id']}")[0] == 404,
          "thin: without Stripe-Context the connected account's event is 404")
    full = f.ok("GET", f"/v2/core/events/{note['id']}", headers={"Stripe-Context": "acct_T"})
    check(full == dict(note, data=None), "thin: GET with Stripe-Context -> the event with data")
    obj = f.ok("GET", full["related_object"]["url"], headers={"Stripe-Context": "acct_T"})
    check(obj["id"] == pi["id"], "thin: related_object.url fetches the object")
    ping = f.ok("POST", "/_config/thin_events", body={"type": "v2.core.event_destination.ping"})
    check(ping["context"] is None and ping["related_object"]["type"] == "event_destination",
          "thin: ping (platform, points at the destination)")
    odd = f.ok("POST", "/_config/thin_events", body={"type": "v9.something.unknown",
                                                     "related_object": None, "data": {"a": 1}})
    check(odd["related_object"] is None and
          f.ok("GET", f"/v2/core/events/{odd['id']}")["data"] == {"a": 1},
          "thin: unknown type, no related object")
    rx = Receiver()
    f.ok("POST", "/_config/webhooks/thin", body={"url": rx.url + "/thin", "secret": "whsec_thin",
                                                 "event_payload": "thin"})
    sent = f.ok("POST", "/_config/thin_events", body={"type": "v2.core.event_destination.ping"})
    got = rx.wait_for(lambda g: g[0] == "/thin")
    check(len(got) == 1 and json.loads(got[0][2]) == sent and
          verify_signature("whsec_thin", got[0][1], got[0][2]),
          "thin: delivered signed to an event_payload=thin endpoint")
    f.ok("DELETE", "/_config/webhooks/thin")
    rx.server.shutdown()


def idempotency(f):
    form = [("email", "idem@example.com")]
    h = {"Idempotency-Key": "k-idem"}
    s1, _, one = f.call("POST", "/v1/customers", form, headers=h)
    s2, rh, two = f.call("POST", "/v1/customers", form, headers=h)
    check(s1 == s2 == 200 and one == two and rh.get("Idempotent-Replayed") == "true",
          "idempotency: same key and body replayed")
    s3, _, err = f.call("POST", "/v1/customers", [("email", "other@example.com")], headers=h)
    check(s3 == 400 and err["error"]["type"] == "idempotency_error",
          "idempotency: same key, other body -> idempotency_error")
    # A slow first request: a concurrent duplicate gets 409, a later one the replay.
    f.ok("POST", "/_config/faults", body={"path": "/v1/customers", "delay_ms": 600})
    h = {"Idempotency-Key": "k-slow"}
    first = []
    t = threading.Thread(target=lambda: first.append(f.call("POST", "/v1/customers", form,
                                                            headers=h)))
    t.start()
    time.sleep(0.2)
    s4, _, err = f.call("POST", "/v1/customers", form, headers=h, kind="error")
    t.join(5)
    s5, rh, again = f.call("POST", "/v1/customers", form, headers=h)
    check(s4 == 409 and err["error"]["code"] == "idempotency_key_in_use",
          "idempotency: a concurrent duplicate while the first runs -> 409 idempotency_key_in_use")
    check(first and first[0][0] == 200 and s5 == 200 and again == first[0][2]
          and rh.get("Idempotent-Replayed") == "true", "idempotency: then the first result replays")
    made = f.ok("GET", "/_config/requests?method=POST&path=/v1/customers")["data"]
    check(sum(1 for r in made if r["headers"]["Idempotency-Key"] == "k-slow"
              and r["status"] == 200 and r["fault"]) == 1, "idempotency: one customer made")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dump", help="save every response body in this directory")
    args = p.parse_args()
    if args.dump:
        os.makedirs(args.dump, exist_ok=True)
        DUMP["dir"] = args.dump
    fake = Fake()
    try:
        for scenario in (request_log, faults, events_api, webhooks, connect, payments,
                         thin_events, idempotency):
            print(f"== {scenario.__name__}", flush=True)
            try:
                scenario(fake)
            except Exception as e:  # noqa: BLE001  (a crash is a failed check, not a stop)
                check(False, f"{scenario.__name__} crashed: {type(e).__name__}: {e}")
    finally:
        fake.stop()
    print(f"\n{len(FAILURES)} failed" if FAILURES else "\nall checks passed")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
