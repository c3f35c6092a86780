#!/usr/bin/env python3
"""Stateful fake Stripe API for payhook's integration tests (see fake-stripe.md).

    python3 .ci/fake_stripe.py --port 0      # prints "LISTENING <port>"

Runs localstripe's aiohttp app ourselves instead of its CLI, because the CLI
binds 0.0.0.0/:: and pickles every write to the fixed file
/tmp/localstripe.pickle (parallel tests would share and corrupt that state).
A few patches below bring localstripe closer to real Stripe where payhook's
tests would otherwise pass against behaviour Stripe does not have.
"""
import argparse
import asyncio
import logging
import os
import re
import signal
import stat
import sys
import threading

try:
    from localstripe import resources as R
    from localstripe.errors import UserError
    from aiohttp import web
except ImportError as e:  # one line, not a traceback: the test harness reports the skip
    sys.exit(f"fake Stripe: {e.name} is not installed "
             "(pip install -r .ci/requirements-fake-stripe.txt, or run tests/run)")

# --- State in memory only -------------------------------------------------
# localstripe persists from Store.__setitem__/__delitem__ and a per-request
# middleware, all through these two methods.
R.Store.dump_to_disk = lambda self: None
R.Store.try_load_from_disk = lambda self: None


def patch(cls, name):
    """Replace classmethod cls.name; the new one gets the old, bound, first."""
    orig = getattr(cls, name).__func__

    def deco(fn):
        setattr(cls, name, classmethod(
            lambda c, *a, **k: fn(lambda *a2, **k2: orig(c, *a2, **k2), c, *a, **k)))
    return deco


def bad(message, **contents):
    return UserError(400, message, contents or None)


def attach_if_free(pm_id, customer):
    pm = R.store.get("payment_method:" + str(pm_id))
    if pm is not None and pm.customer is None:
        pm.customer = customer
        R.schedule_webhook(R.Event("payment_method.attached", pm))


# --- Errors shaped like Stripe's -------------------------------------------
@patch(R.StripeObject, "_api_retrieve")
def _(orig, cls, id):
    try:
        return orig(id)
    except UserError as e:  # clients branch on code=resource_missing
        if e.code == 404:
            e.body["error"].update(code="resource_missing",
                                   message=f"No such {cls.object}: '{id}'")
        raise


_user_error_init = UserError.__init__


def _user_error(self, *args, **kwargs):
    _user_error_init(self, *args, **kwargs)
    if self.body["error"].get("code") == "card_declined":
        self.body["error"]["type"] = "card_error"  # Stripe's type for declines


UserError.__init__ = _user_error

# --- Card brand from the number (localstripe says "visa" for every card) ---
BRANDS = [(r"4", "visa"), (r"5[1-5]|2[2-7]", "mastercard"),
          (r"6011|64[4-9]|65", "discover"), (r"35", "jcb"),
          (r"3[068]", "diners"), (r"62", "unionpay")]
_pm_init = R.PaymentMethod.__init__


def _pm(self, *args, **kwargs):
    _pm_init(self, *args, **kwargs)
    if self.type == "card":
        self.card["brand"] = next((b for p, b in BRANDS
                                   if re.match(p, self._card_number)), "unknown")


R.PaymentMethod.__init__ = _pm


# --- Attach/detach rules localstripe skips --------------------------------
@patch(R.PaymentMethod, "_api_attach")
def _(orig, cls, id=None, customer=None, **kw):
    pm = R.store.get("payment_method:" + str(id))  # not pm_card_* test tokens
    if pm is not None and getattr(pm, "_detached", False):
        raise bad("This PaymentMethod was previously used without being attached "
                  "to a Customer or was detached from a Customer, and may not be "
                  "used again.")
    if pm is not None and pm.customer not in (None, customer):
        raise bad("The payment method you provided has already been attached "
                  "to a customer.")
    pm = orig(id, customer=customer, **kw)
    # localstripe emits no payment_method.* / setup_intent.* events.
    R.schedule_webhook(R.Event("payment_method.attached", pm))
    return pm


@patch(R.PaymentMethod, "_api_detach")
def _(orig, cls, id=None, **kw):
    pm = R.store.get("payment_method:" + str(id))
    if pm is not None and pm.customer is None:
        raise bad("The payment method you provided is not attached to a "
                  "customer so detachment is impossible.")
    owner = R.store.get("customer:" + str(pm and pm.customer))
    pm = orig(id, **kw)
    pm._detached = True
    R.schedule_webhook(R.Event("payment_method.detached", pm))
    if owner and owner.invoice_settings.get("default_payment_method") == pm.id:
        owner.invoice_settings["default_payment_method"] = None  # as Stripe
    return pm


@patch(R.PaymentMethod, "_api_list_all")
def _(orig, cls, url, type=None, **kw):
    # Stripe made `type` optional; only cards exist here in practice.
    return orig(url, type=type or "card", **kw)


@patch(R.Customer, "_api_update")
def _(orig, cls, id, **data):
    settings = data.get("invoice_settings")
    if isinstance(settings, dict):
        cus = cls._api_retrieve(id)
        pm_id = settings.get("default_payment_method")
        pm = R.store.get("payment_method:" + str(pm_id))
        where = {"code": "resource_missing",
                 "param": "invoice_settings[default_payment_method]"}
        # Unchecked, a bad id is stored and every later GET of the customer
        # 404s (localstripe resolves it while serialising).
        if pm_id and pm is None:
            raise bad(f"No such PaymentMethod: '{pm_id}'", **where)
        if pm_id and pm.customer != id:
            raise bad(f"The customer does not have a payment method with the ID "
                      f"{pm_id}. The payment method must be attached to the "
                      f"customer.", **where)
        data["invoice_settings"] = {**cus.invoice_settings, **settings}  # merge
    return orig(id, **data)


@patch(R.Customer, "_api_delete")
def _(orig, cls, id):
    deleted = orig(id)
    for key, pm in list(R.store.items()):  # Stripe detaches them too
        if key.startswith("payment_method:") and pm.customer == id:
            pm.customer = None
    return deleted


# --- SetupIntent: create+confirm in one call, attach on success -----------
@patch(R.SetupIntent, "_api_create")
def _(orig, cls, payment_method=None, confirm=None, **data):
    si = orig(**data)
    if payment_method is not None:
        pm = R.PaymentMethod._api_retrieve(payment_method)
        if R.try_convert_to_bool(confirm) is True:
            return cls._api_confirm(si.id, payment_method=pm.id)
        si.payment_method, si.status = pm.id, "requires_confirmation"
    return si


@patch(R.SetupIntent, "_api_confirm")
def _(orig, cls, id=None, **kw):
    si = orig(id, **kw)
    if si.status == "succeeded":
        if si.customer:
            attach_if_free(si.payment_method, si.customer)
        R.schedule_webhook(R.Event("setup_intent.succeeded", si))
    return si


# --- PaymentIntent: setup_future_usage and the fields async-stripe needs ---
PI = R.PaymentIntent
_pi_init, _pi_on_success, _pi_export = PI.__init__, PI._on_success, PI._export


def _pi(self, setup_future_usage=None, payment_method_types=None, **kw):
    if setup_future_usage not in (None, "on_session", "off_session"):
        raise bad("Invalid setup_future_usage", param="setup_future_usage")
    _pi_init(self, **kw)
    self.setup_future_usage = setup_future_usage
    self.payment_method_types = payment_method_types or ["card"]


def _pi_success(self):
    if self.setup_future_usage and self.customer:
        attach_if_free(self.payment_method, self.customer)
    _pi_on_success(self)


def _pi_json(self, expand=None):
    obj = _pi_export(self, expand)
    # Stripe sends latest_charge as an id unless expanded; async-stripe
    # cannot parse localstripe's partial Charge object.
    if isinstance(obj.get("latest_charge"), dict) and "latest_charge" not in (expand or []):
        obj["latest_charge"] = obj["latest_charge"]["id"]
    if obj.get("last_payment_error"):
        obj["last_payment_error"].setdefault("type", "card_error")
    return obj


PI.__init__, PI._on_success, PI._export = _pi, _pi_success, _pi_json
PI.confirmation_method = "automatic"
PI.amount_received = property(lambda s: s.amount if s.status == "succeeded" else 0)
PI.amount_capturable = property(lambda s: s.amount if s.status == "requires_capture" else 0)
R.Event.pending_webhooks = 0  # required by async-stripe's Event

# localstripe bound these route handlers at import time: re-bind them to the
# patched methods before server.py builds its routes from the list.
R.extra_apis[:] = [(m, u, getattr(f.__self__, f.__name__)) for m, u, f in R.extra_apis]

from localstripe.server import app  # noqa: E402  (must come after the patches)


@web.middleware
async def stripe_shaped_500(request, handler):
    # localstripe raises plain Python errors (e.g. TypeError on an unknown
    # query param) that aiohttp turns into a text/plain 500; give clients a
    # Stripe-shaped body instead so their error says what went wrong.
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as e:  # noqa: BLE001
        logging.exception("localstripe crashed on %s %s", request.method, request.path)
        return web.json_response({"error": {
            "type": "api_error",
            "message": f"fake-stripe internal error: {type(e).__name__}: {e}"}}, status=500)


app.middlewares.insert(0, stripe_shaped_500)

IDEMPOTENT = {}  # Idempotency-Key -> ((path, body), status, response body)


@web.middleware
async def idempotency(request, handler):
    # localstripe ignores Idempotency-Key; payhook retries POSTs with one, so
    # replay the first result as Stripe does (only for requests that ran:
    # 2xx and 402; Stripe saves nothing for rejected parameters).
    if request.method == "DELETE" and request.path == "/_config/data":
        IDEMPOTENT.clear()
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key:
        return await handler(request)
    fingerprint = (request.path, await request.read())
    if key in IDEMPOTENT:
        seen, status, body = IDEMPOTENT[key]
        if seen != fingerprint:
            e = bad("Keys for idempotent requests can only be used with the same "
                    f"parameters they were first used with. Try using a key other "
                    f"than '{key}' if you meant to execute a different request.")
            e.body["error"]["type"] = "idempotency_error"
            raise e
        return web.Response(status=status, body=body, content_type="application/json",
                            headers={"Idempotent-Replayed": "true"})
    try:
        resp = await handler(request)
    except UserError as e:
        resp = e.to_response()
    if resp.status < 300 or resp.status == 402:
        IDEMPOTENT[key] = (fingerprint, resp.status, resp.body)
    return resp


app.middlewares.append(idempotency)  # innermost: after auth


def watch_stdin(loop, stop):
    # A harness that holds our stdin pipe and dies closes it: EOF means nobody
    # needs us any more. Only pipes/sockets are watched, since /dev/null (CI
    # has no stdin) or a terminal would mean "exit at once" or "wait for ^D".
    mode = os.fstat(0).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return

    def reader():
        while os.read(0, 4096):
            pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=reader, daemon=True).start()


async def main(port, verbose):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watch_stdin(loop, stop)

    # stdout carries only the LISTENING line (a harness may stop reading it);
    # the access log, when asked for, goes to stderr.
    runner = web.AppRunner(app, access_log=logging.getLogger("aiohttp.access") if verbose else None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"LISTENING {runner.addresses[0][1]}", flush=True)

    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--verbose", action="store_true", help="access log to stderr")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        stream=sys.stderr)
    asyncio.run(main(args.port, args.verbose))
