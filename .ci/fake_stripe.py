#!/usr/bin/env python3
"""Stateful fake Stripe API for payhook's integration tests (see fake-stripe.md).

    python3 .ci/fake_stripe.py --port 0      # prints "LISTENING <port>"

Runs localstripe's aiohttp app ourselves instead of its CLI, because the CLI
binds 0.0.0.0/:: and pickles every write to the fixed file
/tmp/localstripe.pickle (parallel tests would share and corrupt that state).
The patches below bring localstripe closer to real Stripe where payhook's
tests would otherwise pass against behaviour Stripe does not have, and add
the /_config/* controls tests use to look at and steer the fake (request
log, fault injection, inserted and thin events, processing payments).
"""
import argparse
import asyncio
import contextlib
import contextvars
import fnmatch
import hashlib
import hmac
import itertools
import json
import logging
import os
import re
import signal
import stat
import sys
import threading
import time
from datetime import datetime, timezone

try:
    from localstripe import resources as R
    from localstripe.errors import UserError
    import aiohttp
    from aiohttp import web
except ImportError as e:  # one line, not a traceback: the test harness reports the skip
    sys.exit(f"fake Stripe: {e.name} is not installed "
             "(pip install -r .ci/requirements-fake-stripe.txt, or run tests/run)")

# Events say this, as the default API version of the (fake) account would.
API_VERSION = "2025-09-30.clover"

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


def to_bool(value):
    return R.try_convert_to_bool(value) is True


def dumps(obj):
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def json_response(obj, status=200, headers=None):
    return web.Response(text=dumps(obj), status=status, headers=headers,
                        content_type="application/json")


# --- Who is asking: Stripe-Account, request id, Idempotency-Key -------------
class Ctx:
    __slots__ = ("account", "request_id", "idempotency_key")

    def __init__(self, account=None, request_id=None, idempotency_key=None):
        self.account, self.request_id = account, request_id
        self.idempotency_key = idempotency_key


# Set per request by a middleware; background tasks inherit a copy, so a
# payment settling later still belongs to the account that started it.
CTX = contextvars.ContextVar("fake_stripe_request", default=Ctx())


def account():
    return CTX.get().account


@contextlib.contextmanager
def acting_as(acct):
    # For changes no request caused (a payment settling): no request id.
    token = CTX.set(Ctx(acct))
    try:
        yield
    finally:
        CTX.reset(token)


# --- Connect: objects belong to the account they were created in ----------
_object_init = R.StripeObject.__init__


def _owned(self, *args, **kwargs):
    _object_init(self, *args, **kwargs)
    self._account = account()


R.StripeObject.__init__ = _owned


def owner(obj):
    return getattr(obj, "_account", None)


# --- Errors shaped like Stripe's -------------------------------------------
@patch(R.StripeObject, "_api_retrieve")
def _(orig, cls, id):
    try:
        obj = orig(id)
        if owner(obj) != account():  # Stripe: another account's object does not exist
            raise UserError(404, "Not Found")
        return obj
    except UserError as e:  # clients branch on code=resource_missing
        if e.code == 404:
            e.body["error"].update(code="resource_missing",
                                   message=f"No such {cls.object}: '{id}'")
        raise


@patch(R.StripeObject, "_api_list_all")
def _(orig, cls, url, *args, **kwargs):
    li = orig(url, *args, **kwargs)
    li._list = [o for o in li._list if owner(o) == account()]  # lists are per account
    return li


_user_error_init = UserError.__init__


def _user_error(self, *args, **kwargs):
    _user_error_init(self, *args, **kwargs)
    if self.body["error"].get("code") == "card_declined":
        self.body["error"]["type"] = "card_error"  # Stripe's type for declines


UserError.__init__ = _user_error


def card_error(err, **extra):
    """A 402 like Stripe's: the error fields plus the objects it concerns."""
    e = UserError(402, err["message"], {k: v for k, v in err.items() if v is not None})
    e.body["error"].update(type=err["type"], **extra)
    return e


def doc_url(code):
    return "https://stripe.com/docs/error-codes/" + code.replace("_", "-")


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

# --- Stripe's test cards (docs.stripe.com/testing) -------------------------
# localstripe only knows "declined on attach", "declined on charge" and "needs
# 3DS", without decline codes and without Stripe's rules for cards that were
# set up for later use; these tables and card_outcome() follow the docs.


def _err(code, decline_code, message, type="card_error"):
    return {"type": type, "code": code, "decline_code": decline_code,
            "message": message, "doc_url": doc_url(code)}


GENERIC = _err("card_declined", "generic_decline", "Your card was declined.")
INSUFFICIENT = _err("card_declined", "insufficient_funds", "Your card has insufficient funds.")
# Declined on attach, on setup and on every charge.
DECLINES = {
    "4000000000000002": GENERIC,
    "4000000000009995": INSUFFICIENT,
    "4000000000009987": _err("card_declined", "lost_card", "Your card was declined."),
    "4000000000009979": _err("card_declined", "stolen_card", "Your card was declined."),
    "4000000000000069": _err("expired_card", "expired_card", "Your card has expired."),
    "4000000000000127": _err("incorrect_cvc", "incorrect_cvc",
                             "Your card's security code is incorrect."),
    "4000000000000119": _err("processing_error", "processing_error",
                             "An error occurred while processing your card. "
                             "Try again in a little bit."),
    "4242424242424241": _err("incorrect_number", "incorrect_number",
                             "Your card number is incorrect."),
}
# Attach and setup succeed; every payment is declined (after 3DS if it asks).
CHARGE_DECLINES = {"4000000000000341": GENERIC, "4000008260003178": INSUFFICIENT,
                   "4000008400001629": GENERIC}
# "always": every on-session payment asks for 3DS, every off-session one is
# declined authentication_required. "unless_set_up": only until the card has
# been set up (attached to a customer by a SetupIntent or setup_future_usage).
AUTH = {"4000002760003184": "always", "4000000000003220": "always",
        "4000000000003063": "always", "4000008400001629": "always",
        "4000002500003155": "unless_set_up", "4000008260003178": "unless_set_up"}
AUTH_REQUIRED = _err("authentication_required", "authentication_required",
                     "Your card was declined. This transaction requires authentication.")
AUTH_FAILED = {
    k: _err(k, None, "We are unable to authenticate your payment method. Please choose a "
            "different payment method and try again.", type="invalid_request_error")
    for k in ("payment_intent_authentication_failure", "setup_intent_authentication_failure")}
USE_STRIPE_SDK = {"type": "use_stripe_sdk",
                  "use_stripe_sdk": {"type": "three_d_secure_redirect", "stripe_js": ""}}
# Stripe's SEPA test IBAN whose debit fails after processing.
FAILING_IBAN = "DE62370400440532013001"


def card_outcome(pm, off_session, authenticated=False):
    """'ok', 'action' (3DS on-session), 'auth_required' (off-session) or a decline."""
    number = getattr(pm, "_card_number", None) if pm.type == "card" else None
    if number in DECLINES:
        return DECLINES[number]
    auth = AUTH.get(number)
    if not authenticated and (auth == "always" or (auth and pm.customer is None)):
        return "auth_required" if off_session else "action"
    return CHARGE_DECLINES.get(number, "ok")


def attach_if_free(pm_id, customer):
    pm = R.store.get("payment_method:" + str(pm_id))
    if pm is not None and pm.customer is None:
        pm.customer = customer
        emit("payment_method.attached", pm)


# --- Attach/detach rules localstripe skips --------------------------------
def usable(pm, intent):
    # Stripe refuses a detached PM, or another customer's, for any intent.
    if getattr(pm, "_detached", False):
        raise bad("This PaymentMethod was previously used without being attached to a "
                  "Customer or was detached from a Customer, and may not be used again.",
                  param="payment_method")
    if pm.customer and intent.customer and pm.customer != intent.customer:
        raise bad("The provided PaymentMethod is attached to another Customer.",
                  param="payment_method")


@patch(R.PaymentMethod, "_api_attach")
def _(orig, cls, id=None, customer=None, **kw):
    pm = R.store.get("payment_method:" + str(id))  # not pm_card_* test tokens
    if pm is not None and owner(pm) != account():
        cls._api_retrieve(id)  # 404 as Stripe
    if pm is not None and getattr(pm, "_detached", False):
        raise bad("This PaymentMethod was previously used without being attached "
                  "to a Customer or was detached from a Customer, and may not be "
                  "used again.")
    if pm is not None and pm.customer not in (None, customer):
        raise bad("The payment method you provided has already been attached "
                  "to a customer.")
    if pm is not None and getattr(pm, "_card_number", None) in DECLINES and customer:
        R.Customer._api_retrieve(str(customer))  # a 404 wins over the decline
        raise card_error(DECLINES[pm._card_number])  # with its decline_code
    pm = orig(id, customer=customer, **kw)
    # localstripe emits no payment_method.* / setup_intent.* events.
    emit("payment_method.attached", pm)
    return pm


@patch(R.PaymentMethod, "_api_detach")
def _(orig, cls, id=None, **kw):
    pm = R.store.get("payment_method:" + str(id))
    if pm is not None and owner(pm) == account() and pm.customer is None:
        raise bad("The payment method you provided is not attached to a "
                  "customer so detachment is impossible.")
    owner_cus = R.store.get("customer:" + str(pm and pm.customer))
    pm = orig(id, **kw)
    pm._detached = True
    emit("payment_method.detached", pm)
    if owner_cus and owner_cus.invoice_settings.get("default_payment_method") == pm.id:
        owner_cus.invoice_settings["default_payment_method"] = None  # as Stripe
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
        if pm is not None and owner(pm) != account():
            pm = None
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


# --- Events: every change, Stripe's fields, listed and delivered like Stripe's
SEQ = itertools.count(1)  # orders events created within the same second
_event_init, _event_export = R.Event.__init__, R.Event._export


def _event(self, type, data):
    _event_init(self, type, data)  # data.object: a snapshot taken now
    ctx = CTX.get()
    self.api_version = API_VERSION
    # Which request caused it; null for changes Stripe makes on its own.
    self.request = {"id": ctx.request_id, "idempotency_key": ctx.idempotency_key}
    self._account = owner(data) or ctx.account
    if self._account:
        self.account = self._account  # only Connect events carry `account`
    self._seq, self._targets, self._delivered = next(SEQ), set(), set()


def _event_json(self, expand=None):
    if hasattr(self, "_raw"):  # inserted through /_config/events: as given
        obj = json.loads(json.dumps(self._raw))
        if self._pending_computed:
            obj["pending_webhooks"] = self.pending_webhooks
        return obj
    return _event_export(self, expand)


R.Event.__init__, R.Event._export = _event, _event_json
# Stripe: endpoints that have not yet acknowledged this event (required by
# async-stripe's Event).
R.Event.pending_webhooks = property(lambda s: len(s._targets - s._delivered))


def emit(type, obj):
    event = R.Event(type, obj)
    schedule_webhook(event)
    return event


def delivered(event):
    # Stripe's delivery_success: every endpoint acknowledged it; an event no
    # endpoint was sent counts as not delivered.
    return bool(event._targets) and event._targets <= event._delivered


class Listed(dict):
    """A ready JSON object, for localstripe's route wrappers that call _export."""

    def _export(self, expand=None):
        return dict(self)


def _created_filter(created):
    if isinstance(created, (str, int)):
        created = {"eq": created}
    ops = {"eq": int.__eq__, "gt": int.__gt__, "gte": int.__ge__,
           "lt": int.__lt__, "lte": int.__le__}
    if not isinstance(created, dict) or not created or not set(created) <= set(ops):
        raise bad("Invalid created: an integer or created[gt|gte|lt|lte]", param="created")
    try:
        bounds = [(ops[k], int(v)) for k, v in created.items()]
    except (TypeError, ValueError):
        raise bad("Invalid integer for created", param="created") from None
    return lambda e: all(op(e.created, v) for op, v in bounds)


def _events_list(cls, url, type=None, types=None, created=None, limit=None,
                 starting_after=None, ending_before=None, delivery_success=None, **rest):
    # localstripe: oldest first, `type` and created[...] only, no ending_before.
    if rest:
        name = sorted(rest)[0]
        raise bad(f"Received unknown parameter: {name}", param=name)
    if type is not None and types is not None:
        raise bad("You may only specify one of these parameters: type, types.")
    if starting_after is not None and ending_before is not None:
        raise bad("You may only specify one of these parameters: ending_before, starting_after.")
    patterns = [type] if type is not None else ([types] if isinstance(types, str) else types)
    if patterns is not None and (not isinstance(patterns, list) or len(patterns) > 20
                                 or not all(isinstance(t, str) for t in patterns)):
        raise bad("Invalid types: an array of up to 20 event types", param="types")
    try:
        limit = 10 if limit is None else int(limit)
    except (TypeError, ValueError):
        raise bad(f"Invalid integer: {limit}", param="limit") from None
    if not 1 <= limit <= 100:
        raise bad("This value must be between 1 and 100.", param="limit")
    tests = []
    if patterns is not None:  # `type` takes * wildcards (payment_intent.*)
        tests.append(lambda e: any(fnmatch.fnmatchcase(e.type, p) for p in patterns))
    if created is not None:
        tests.append(_created_filter(created))
    if delivery_success is not None:
        if str(delivery_success).lower() not in ("true", "false"):
            raise bad("Invalid boolean: " + str(delivery_success), param="delivery_success")
        want = to_bool(str(delivery_success).lower())
        tests.append(lambda e: delivered(e) == want)

    def key(e):
        return (e.created, e._seq)
    mine = sorted((e for k, e in R.store.items()
                   if k.startswith("event:") and owner(e) == account()), key=key, reverse=True)
    found = [e for e in mine if all(t(e) for t in tests)]
    cursor_id = starting_after if starting_after is not None else ending_before
    if cursor_id is not None:
        cursor = next((e for e in mine if e.id == cursor_id), None)
        if cursor is None:
            raise bad(f"No such event: '{cursor_id}'", code="resource_missing",
                      param="starting_after" if starting_after is not None else "ending_before")
    if starting_after is not None:  # older than the cursor, newest first
        rest_ = [e for e in found if key(e) < key(cursor)]
        page, has_more = rest_[:limit], len(rest_) > limit
    elif ending_before is not None:  # the `limit` just newer than the cursor
        rest_ = [e for e in found if key(e) > key(cursor)]
        page, has_more = rest_[-limit:], len(rest_) > limit
    else:
        page, has_more = found[:limit], len(found) > limit
    return Listed(object="list", url="/v1/events", has_more=has_more,
                  data=[e._export() for e in page])


R.Event._api_list_all = classmethod(_events_list)


# --- Webhook delivery: signed like Stripe, recorded, per account kind ------
WEBHOOKS = {}  # endpoint id -> settings (see config_webhook)
DELIVERIES = []  # every attempt, oldest first


def sign(secret, body, t):
    return hmac.new(secret.encode(), b"%d.%s" % (t, body), hashlib.sha256).hexdigest()


async def post_signed(endpoint_id, hook, body, event_id):
    t = int(time.time())  # Stripe signs with the time of the attempt
    headers = {"Content-Type": "application/json; charset=utf-8",
               "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
               "Stripe-Signature": f"t={t},v1={sign(hook['secret'], body, t)}"}
    record = {"event": event_id, "endpoint": endpoint_id, "url": hook["url"],
              "at": t, "status": None, "error": None}
    try:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(hook["url"], data=body, headers=headers) as r:
                record["status"] = r.status
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
        record["error"] = f"{type(e).__name__}: {e}"
    DELIVERIES.append(record)
    return record["status"] is not None and 200 <= record["status"] < 300


def wants(hook, event_type, connected, payload):
    # connect=true endpoints get connected accounts' events only, the others
    # the platform's only, as Stripe's account vs Connect endpoints.
    return (hook["event_payload"] == payload and hook["connect"] == connected
            and (hook["events"] is None or "*" in hook["events"]
                 or event_type in hook["events"]))


async def _deliver(event, endpoint_id, delay):
    await asyncio.sleep(delay)
    hook = WEBHOOKS.get(endpoint_id)
    if hook is None:
        return
    body = json.dumps(event._export(), indent=2, sort_keys=True).encode()
    if await post_signed(endpoint_id, hook, body, event.id):
        event._delivered.add(endpoint_id)


def schedule_webhook(event, delay=None):
    for endpoint_id, hook in WEBHOOKS.items():
        if wants(hook, event.type, owner(event) is not None, "snapshot"):
            event._targets.add(endpoint_id)
            asyncio.ensure_future(_deliver(
                event, endpoint_id, hook["delay_ms"] / 1000 if delay is None else delay))


R.schedule_webhook = schedule_webhook  # every localstripe event goes through us


# --- SetupIntent: Stripe's states, events, errors and 3DS completion ------
SI = R.SetupIntent
_si_init = SI.__init__


def _si(self, description=None, automatic_payment_methods=None, return_url=None, **kw):
    _si_init(self, **kw)
    self.description = description
    self.automatic_payment_methods = (
        {"enabled": True, "allow_redirects": "always"}
        if isinstance(automatic_payment_methods, dict)
        and to_bool(automatic_payment_methods.get("enabled")) else None)
    self.last_setup_error = self.cancellation_reason = self.latest_attempt = None
    self.mandate = self.single_use_mandate = None


SI.__init__ = _si


def unexpected_state(obj, action, allowed):
    kind = "PaymentIntent" if obj.object == "payment_intent" else "SetupIntent"
    return bad(f"You cannot {action} this {kind} because it has a status of {obj.status}. "
               f"Only a {kind} with one of the following statuses may be used: "
               f"{', '.join(allowed)}.", code=obj.object + "_unexpected_state",
               **{obj.object: obj._export()})


def si_succeed(si):
    si.status, si.next_action = "succeeded", None
    if si.customer:
        attach_if_free(si.payment_method, si.customer)
    emit("setup_intent.succeeded", si)
    return si


def si_fail(si, pm, err, raise_error=True):
    # Stripe: back to requires_payment_method with the PM in last_setup_error
    # (localstripe said `canceled`).
    si.last_setup_error = dict(err, payment_method=pm._export())
    si.payment_method, si.status, si.next_action = None, "requires_payment_method", None
    emit("setup_intent.setup_failed", si)
    if raise_error:
        raise card_error(err, setup_intent=si._export(), payment_method=pm._export())
    return si


SI_CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")


def _si_confirm(cls, id, use_stripe_sdk=None, client_secret=None, payment_method=None,
                payment_method_data=None, return_url=None, mandate_data=None, **kw):
    if kw:
        raise UserError(400, "Unexpected " + ", ".join(kw))
    si = cls._api_retrieve(id)
    if client_secret is not None and client_secret != si.client_secret:
        raise bad("The client_secret provided does not match the client_secret "
                  "associated with the SetupIntent.", param="client_secret")
    if si.status not in SI_CONFIRMABLE:
        raise unexpected_state(si, "confirm", SI_CONFIRMABLE)
    if payment_method is not None:
        pm = R.PaymentMethod._api_retrieve(payment_method)
    elif isinstance(payment_method_data, dict):
        pm = R.PaymentMethod(**payment_method_data)
    elif si.payment_method:
        pm = R.PaymentMethod._api_retrieve(si.payment_method)
    else:
        raise bad("You cannot confirm this SetupIntent because it's missing a payment "
                  "method.", code="setup_intent_unexpected_state", param="payment_method")
    usable(pm, si)
    si.payment_method, si.last_setup_error = pm.id, None
    outcome = card_outcome(pm, off_session=False)
    if isinstance(outcome, dict) and getattr(pm, "_card_number", None) in DECLINES:
        return si_fail(si, pm, outcome)  # declined before it can be saved
    if outcome == "action":
        si.status, si.next_action = "requires_action", USE_STRIPE_SDK
        emit("setup_intent.requires_action", si)
        return si
    return si_succeed(si)  # CHARGE_DECLINES cards can be saved


def _si_authenticate(cls, id, client_secret=None, success=False, **kw):
    # localstripe's way to finish 3DS exists for PaymentIntents only.
    if kw:
        raise UserError(400, "Unexpected " + ", ".join(kw))
    si = cls._api_retrieve(id)
    if client_secret != si.client_secret:
        raise UserError(401, "Unauthorized")
    if si.status != "requires_action":
        raise unexpected_state(si, "authenticate", ["requires_action"])
    pm = R.PaymentMethod._api_retrieve(si.payment_method)
    if not to_bool(success):
        return si_fail(si, pm, AUTH_FAILED["setup_intent_authentication_failure"], False)
    return si_succeed(si)


SI_CANCELABLE = ("requires_payment_method", "requires_confirmation", "requires_action")


def _si_cancel(cls, id, use_stripe_sdk=None, client_secret=None, cancellation_reason=None,
               **kw):
    if kw:
        raise UserError(400, "Unexpected " + ", ".join(kw))
    si = cls._api_retrieve(id)
    if client_secret is not None and client_secret != si.client_secret:
        raise UserError(401, "Unauthorized")
    if si.status not in SI_CANCELABLE:
        raise unexpected_state(si, "cancel", SI_CANCELABLE)
    si.status, si.next_action, si.cancellation_reason = "canceled", None, cancellation_reason
    emit("setup_intent.canceled", si)
    return si


SI._api_confirm = classmethod(_si_confirm)
SI._api_authenticate = classmethod(_si_authenticate)
SI._api_cancel = classmethod(_si_cancel)


@patch(SI, "_api_create")
def _(orig, cls, payment_method=None, confirm=None, **data):
    si = orig(**data)
    if payment_method is not None:
        pm = R.PaymentMethod._api_retrieve(payment_method)
        si.payment_method, si.status = pm.id, "requires_confirmation"
    emit("setup_intent.created", si)
    if to_bool(confirm):  # create+confirm in one call, as Stripe allows
        return cls._api_confirm(si.id)
    return si


# --- PaymentIntent: Stripe's states, test cards, errors and events ---------
PI = R.PaymentIntent
_pi_init, _pi_export = PI.__init__, PI._export


def _pi(self, setup_future_usage=None, payment_method_types=None, description=None,
        automatic_payment_methods=None, receipt_email=None, **kw):
    if setup_future_usage not in (None, "on_session", "off_session"):
        raise bad("Invalid setup_future_usage", param="setup_future_usage")
    if automatic_payment_methods is not None and not isinstance(automatic_payment_methods, dict):
        raise bad("Invalid automatic_payment_methods", param="automatic_payment_methods")
    _pi_init(self, **kw)
    self.setup_future_usage = setup_future_usage
    self.payment_method_types = payment_method_types or ["card"]
    self.description, self.receipt_email = description, receipt_email
    self.automatic_payment_methods = (
        {"enabled": True, "allow_redirects": "always"}
        if automatic_payment_methods and to_bool(automatic_payment_methods.get("enabled"))
        else None)
    self.canceled_at = self.cancellation_reason = None
    # localstripe derives the status from its charge; Stripe's failure rules
    # (payment_method cleared, the PM kept in last_payment_error) need it kept.
    self._status = "requires_confirmation" if self.payment_method else "requires_payment_method"
    self._last_error, self._settle = None, None


def _pi_json(self, expand=None):
    obj = _pi_export(self, expand)
    # Stripe sends latest_charge as an id unless expanded; async-stripe
    # cannot parse localstripe's partial Charge object.
    if isinstance(obj.get("latest_charge"), dict) and "latest_charge" not in (expand or []):
        obj["latest_charge"] = obj["latest_charge"]["id"]
    return obj


PI.__init__, PI._export = _pi, _pi_json
PI.status = property(lambda s: s._status)
PI.last_payment_error = property(lambda s: s._last_error)
PI.confirmation_method = "automatic"
PI.amount_received = property(lambda s: s.amount if s.status == "succeeded" else 0)
PI.amount_capturable = property(lambda s: s.amount if s.status == "requires_capture" else 0)

PROCESSING = {}  # pm id -> {"outcome": succeeded|failed|hold, "after_ms": n}


def pi_set(pi, status, event):
    pi._status = status
    emit(event, pi)


def pi_succeed(pi):
    pi.latest_charge.status = "succeeded"
    if pi.capture_method == "manual":
        pi.latest_charge.captured = False
        return pi_set(pi, "requires_capture", "payment_intent.amount_capturable_updated")
    pi_captured(pi)


def pi_captured(pi):
    pi.latest_charge.captured = True
    if pi.setup_future_usage and pi.customer:
        attach_if_free(pi.payment_method, pi.customer)
    pi_set(pi, "succeeded", "payment_intent.succeeded")


def pi_fail(pi, pm, err, charge=None, raise_error=True):
    extra = {}
    if charge is not None:  # the attempt the issuer declined
        charge.status, charge.failure_code = "failed", err["code"]
        charge.failure_message = err["message"]
        extra["charge"] = charge.id
    # Stripe: requires_payment_method, payment_method null, the failed PM in
    # last_payment_error; the card is not saved.
    pi._last_error = dict(err, payment_method=pm._export(), **extra)
    pi.payment_method, pi.next_action = None, None
    pi_set(pi, "requires_payment_method", "payment_intent.payment_failed")
    if raise_error:
        raise card_error(err, payment_intent=pi._export(), payment_method=pm._export(), **extra)


def settle(pi, outcome, err=None):
    """A processing payment ends, as Stripe's would later, by itself."""
    pi._settle = None
    if pi._status != "processing":
        return
    with acting_as(owner(pi)):
        if outcome == "succeeded":
            return pi_succeed(pi)
        pm = R.store["payment_method:" + pi.payment_method]
        pi_fail(pi, pm, err or GENERIC, pi.latest_charge, raise_error=False)


def pi_charge(pi, pm, decline):
    charge = R.Charge(amount=pi.amount, currency=pi.currency, customer=pi.customer,
                      source=pm.id, capture=pi.capture_method != "manual")
    charge.payment_intent, pi.latest_charge = pi.id, charge
    charge.status = "pending"
    if isinstance(decline, dict):
        return pi_fail(pi, pm, decline, charge)
    mode = PROCESSING.get(pm.id)
    if mode is None and pm.type == "sepa_debit":  # bank debits settle later
        failing = pm._sepa_debit_iban == FAILING_IBAN
        mode = {"outcome": "failed" if failing else "succeeded", "after_ms": 500}
    if mode is None:
        return pi_succeed(pi)
    pi_set(pi, "processing", "payment_intent.processing")
    if mode["outcome"] != "hold":
        pi._settle = asyncio.get_running_loop().call_later(
            mode["after_ms"] / 1000, settle, pi, mode["outcome"])


PI_CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")


def pi_confirm(pi, payment_method=None, off_session=None, setup_future_usage=None):
    if pi.status not in PI_CONFIRMABLE:
        raise unexpected_state(pi, "confirm", PI_CONFIRMABLE)
    if payment_method is not None:  # Stripe.js confirmCardPayment(secret, {payment_method})
        pm = R.PaymentMethod._api_retrieve(payment_method)
        usable(pm, pi)
        pi.payment_method = pm.id
    if not pi.payment_method:
        raise bad("You cannot confirm this PaymentIntent because it's missing a payment "
                  "method.", code="payment_intent_unexpected_state", param="payment_method")
    if setup_future_usage is not None:
        pi.setup_future_usage = setup_future_usage
    pm = R.PaymentMethod._api_retrieve(pi.payment_method)
    usable(pm, pi)
    pi._last_error, pi.next_action = None, None
    outcome = card_outcome(pm, off_session)
    if outcome == "action":
        pi.next_action = USE_STRIPE_SDK
        return pi_set(pi, "requires_action", "payment_intent.requires_action")
    pi_charge(pi, pm, AUTH_REQUIRED if outcome == "auth_required" else outcome)


def off_session_flag(value):
    # Stripe takes true/false or the kinds "one_off"/"recurring".
    value = R.try_convert_to_bool(value)
    if value in ("one_off", "recurring"):
        return True
    if value not in (None, True, False):
        raise bad("Invalid off_session", param="off_session")
    return value


@patch(PI, "_api_create")
def _(orig, cls, confirm=None, off_session=None, return_url=None,
      error_on_requires_action=None, **data):
    confirm, off_session = R.try_convert_to_bool(confirm), off_session_flag(off_session)
    if confirm not in (None, True, False) or (off_session is not None and confirm is not True):
        raise bad("off_session can only be used with confirm=true", param="off_session")
    pi = orig(**data)
    emit("payment_intent.created", pi)
    if confirm:
        pi_confirm(pi, off_session=off_session)
    return pi


def _pi_confirm(cls, id, payment_method=None, off_session=None, return_url=None,
                client_secret=None, use_stripe_sdk=None, setup_future_usage=None,
                error_on_requires_action=None, mandate_data=None, **kw):
    if kw:
        raise UserError(400, "Unexpected " + ", ".join(kw))
    pi = cls._api_retrieve(id)
    if client_secret is not None and client_secret != pi.client_secret:
        raise bad("The client_secret provided does not match the client_secret "
                  "associated with the PaymentIntent.", param="client_secret")
    pi_confirm(pi, payment_method, off_session_flag(off_session), setup_future_usage)
    return pi


def _pi_authenticate(cls, id, client_secret=None, success=False, **kw):
    if kw:
        raise UserError(400, "Unexpected " + ", ".join(kw))
    pi = cls._api_retrieve(id)
    if client_secret != pi.client_secret:
        raise UserError(401, "Unauthorized")
    if pi.status != "requires_action":
        raise unexpected_state(pi, "authenticate", ["requires_action"])
    pm = R.PaymentMethod._api_retrieve(pi.payment_method)
    pi.next_action = None
    if not to_bool(success):
        pi_fail(pi, pm, AUTH_FAILED["payment_intent_authentication_failure"],
                raise_error=False)
    else:  # 3DS done: now the issuer decides (a decline answers 402, as confirm)
        pi_charge(pi, pm, card_outcome(pm, False, authenticated=True))
    return pi


PI_CANCELABLE = ("requires_payment_method", "requires_capture", "requires_confirmation",
                 "requires_action", "processing")


def _pi_cancel(cls, id, cancellation_reason=None, **kw):
    if kw:
        raise UserError(400, "Unexpected " + ", ".join(kw))
    pi = cls._api_retrieve(id)
    if pi.status not in PI_CANCELABLE:
        raise unexpected_state(pi, "cancel", PI_CANCELABLE)
    if pi._settle is not None:
        pi._settle.cancel()
    pi.next_action, pi.canceled_at = None, int(time.time())
    pi.cancellation_reason = cancellation_reason
    pi_set(pi, "canceled", "payment_intent.canceled")
    return pi


def _pi_capture(cls, id, amount_to_capture=None, **kw):
    if kw:
        raise UserError(400, "Unexpected " + ", ".join(kw))
    pi = cls._api_retrieve(id)
    if pi.status != "requires_capture":
        raise unexpected_state(pi, "capture", ["requires_capture"])
    pi_captured(pi)
    return pi


def _pi_internal_confirm(self, on_failure_now):
    # localstripe's invoices pay through this; a decline is reported by event.
    try:
        pi_confirm(self)
    except UserError as e:
        if e.code != 402:
            raise


PI._api_confirm = classmethod(_pi_confirm)
PI._api_authenticate = classmethod(_pi_authenticate)
PI._api_cancel = classmethod(_pi_cancel)
PI._api_capture = classmethod(_pi_capture)
PI._confirm = _pi_internal_confirm

# localstripe bound these route handlers at import time: re-bind them to the
# patched methods before server.py builds its routes from the list.
R.extra_apis[:] = [(m, u, getattr(f.__self__, f.__name__)) for m, u, f in R.extra_apis]
R.extra_apis.append(("POST", "/v1/setup_intents/{id}/_authenticate", SI._api_authenticate))

from localstripe import server  # noqa: E402  (must come after the patches)

app = server.app


# --- Thin (v2) events ---------------------------------------------------------
THIN = {}  # id -> the full v2 event (with data), as GET /v2/core/events/{id}
RELATED_URLS = {"payment_intent": "/v1/payment_intents/", "setup_intent": "/v1/setup_intents/",
                "payment_method": "/v1/payment_methods/", "customer": "/v1/customers/",
                "charge": "/v1/charges/", "billing.meter": "/v1/billing/meters/",
                "event_destination": "/v2/core/event_destinations/",
                "v2.core.event_destination": "/v2/core/event_destinations/",
                "v2.core.account": "/v2/core/accounts/"}
ID_PREFIXES = {"pi_": "payment_intent", "seti_": "setup_intent", "pm_": "payment_method",
               "cus_": "customer", "ch_": "charge", "ed_": "event_destination"}


def rfc3339(ts):
    whole = datetime.fromtimestamp(int(ts), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{whole}.{int(ts * 1000) % 1000:03d}Z"


def related_object(body):
    if "related_object" in body:
        related = body["related_object"]
    elif body.get("related_object_id"):
        related = {"id": body["related_object_id"], "type": body.get("related_object_type")}
    elif body.get("type") == "v2.core.event_destination.ping":
        # Stripe's ping points at the destination it tests.
        related = {"id": "ed_test_" + R.random_id(24), "type": "event_destination"}
    else:
        return None
    if related is None:
        return None
    if not isinstance(related, dict) or not isinstance(related.get("id"), str):
        raise bad("related_object needs an id", param="related_object")
    kind = related.get("type") or next(
        (t for p, t in ID_PREFIXES.items() if related["id"].startswith(p)), None)
    if kind is None:
        raise bad("related_object needs a type", param="related_object")
    url = related.get("url") or RELATED_URLS.get(kind, f"/v1/{kind.replace('.', '/')}s/")
    return {"id": related["id"], "type": kind,
            "url": url if related.get("url") else url + related["id"]}


def make_thin(body):
    if not isinstance(body.get("type"), str):
        raise bad("type is required", param="type")
    context = body.get("context")
    if context is not None and not re.fullmatch(r"acct_\w+", str(context)):
        raise bad("context must be an acct_ id", param="context")
    created = body.get("created", time.time())
    notification = {
        "id": body.get("id") or "evt_test_" + R.random_id(48),
        "object": "v2.core.event", "type": body["type"],
        "created": rfc3339(float(created)) if isinstance(created, (int, float)) else created,
        "livemode": to_bool(body.get("livemode", False)),
        "context": context, "reason": body.get("reason"),
        "related_object": related_object(body)}
    if notification["id"] in THIN:
        raise bad(f"Event {notification['id']} already exists", param="id")
    # The pushed notification lacks `data`; GET /v2/core/events/{id} has it.
    THIN[notification["id"]] = dict(notification, data=body.get("data"))
    payload = json.dumps(notification, indent=2, sort_keys=True).encode()
    for endpoint_id, hook in WEBHOOKS.items():
        if wants(hook, body["type"], context is not None, "thin"):
            asyncio.ensure_future(
                post_signed(endpoint_id, hook, payload, notification["id"]))
    return notification


async def v2_event(request):
    event = THIN.get(request.match_info["id"])
    if event is None or event["context"] != account():  # Stripe-Context scopes it
        raise UserError(404, f"No such event: '{request.match_info['id']}'",
                        {"code": "resource_missing"})
    return json_response(event)


app.router.add_get("/v2/core/events/{id}", v2_event)

# --- Middlewares: request log, faults, account context, idempotency ---------
REQUESTS = []  # every API request, oldest first
LOGGED_HEADERS = ("Idempotency-Key", "Stripe-Account", "Stripe-Context", "Stripe-Version")


def is_control(request):
    return request.path.startswith("/_config/")


@web.middleware
async def request_log(request, handler):
    # Tests count what reached "Stripe" and check the headers it carried; the
    # Authorization header is never kept.
    if is_control(request):
        return await handler(request)
    request["request_id"] = "req_" + R.random_id(14)
    params = {}
    if request.body_exists:
        params = await server.get_post_data(request, remove_auth=False) or {}
    entry = {"id": request["request_id"], "time": time.time(), "method": request.method,
             "path": request.path, "query": server.unflatten_data(request.query),
             "params": dict(params) if isinstance(params, dict) else params,
             "headers": {h: request.headers.get(h) for h in LOGGED_HEADERS},
             "status": None, "fault": False}
    REQUESTS.append(entry)
    try:
        response = await handler(request)
    except web.HTTPException as e:
        entry["status"] = e.status
        raise
    entry["status"], entry["fault"] = response.status, request.get("fault", False)
    response.headers["Request-Id"] = request["request_id"]
    return response


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


FAULTS = []  # injected answers, first match wins
FAULT_BODIES = {
    429: {"type": "invalid_request_error", "code": "rate_limit",
          "message": "Request rate limit exceeded. Learn more about rate limits here "
                     "https://stripe.com/docs/rate-limits.",
          "doc_url": doc_url("rate_limit")},
    409: {"type": "invalid_request_error", "code": "idempotency_key_in_use",
          "message": "There is currently another in-progress request using this "
                     "Stripe-Idempotency-Key. Please try again later."},
}


@web.middleware
async def faults(request, handler):
    # Stripe's transient failures, on demand: the request is answered without
    # running (so an Idempotency-Key stays unused), or delayed then run.
    fault = None if is_control(request) else next(
        (f for f in FAULTS if request.path.startswith(f["path"])
         and f["method"] in ("*", request.method)), None)
    if fault is None:
        return await handler(request)
    fault["count"] -= 1
    if fault["count"] <= 0:
        FAULTS.remove(fault)
    request["fault"] = True
    if fault["status"] is None:  # slow: the request waits once it is in flight
        request["delay_ms"] = fault["delay_ms"]
        return await handler(request)
    if fault["delay_ms"]:
        await asyncio.sleep(fault["delay_ms"] / 1000)
    headers = {}
    if fault["retry_after"] is not None:
        headers["Retry-After"] = str(fault["retry_after"])
    if fault["should_retry"] is not None:
        headers["Stripe-Should-Retry"] = "true" if fault["should_retry"] else "false"
    return json_response(fault["body"], status=fault["status"], headers=headers)


@web.middleware
async def request_context(request, handler):
    # Stripe-Account (v1) or Stripe-Context (v2, and accepted on v1): the
    # connected account every object and event of this request belongs to.
    acct = request.headers.get("Stripe-Account") or None
    ctx = request.headers.get("Stripe-Context") or None
    if acct and ctx and acct != ctx:
        raise bad("Stripe-Account and Stripe-Context name different accounts.")
    who = acct or ctx
    if who is not None and not re.fullmatch(r"acct_\w+", who):
        raise bad(f"Invalid Stripe-Account: '{who}'", code="account_invalid")
    token = CTX.set(Ctx(who, request.get("request_id"), request.headers.get("Idempotency-Key")))
    try:
        return await handler(request)
    finally:
        CTX.reset(token)


IDEMPOTENT = {}  # (account, Idempotency-Key) -> ((path, body), status, response body)
IN_FLIGHT = set()  # keys whose first request is still running


@web.middleware
async def idempotency(request, handler):
    # localstripe ignores Idempotency-Key; payhook retries POSTs with one, so
    # replay the first result as Stripe does (only for requests that ran:
    # 2xx and 402; Stripe saves nothing for rejected parameters). Keys are
    # per account, as on Stripe.
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key:
        return await handler(request)
    key = (account(), key)
    fingerprint = (request.path, await request.read())
    if key in IDEMPOTENT:
        seen, status, body = IDEMPOTENT[key]
        if seen != fingerprint:
            e = bad("Keys for idempotent requests can only be used with the same "
                    f"parameters they were first used with. Try using a key other "
                    f"than '{key[1]}' if you meant to execute a different request.")
            e.body["error"]["type"] = "idempotency_error"
            raise e
        return web.Response(status=status, body=body, content_type="application/json",
                            headers={"Idempotent-Replayed": "true"})
    if key in IN_FLIGHT:  # Stripe: a concurrent duplicate is refused, not run twice
        raise UserError(409, "There is currently another in-progress request using this "
                        "Idempotent Key (that probably means you submitted twice, and the "
                        "other request is still going through). Please try again later.",
                        {"code": "idempotency_key_in_use"})
    IN_FLIGHT.add(key)
    try:
        resp = await handler(request)
    except UserError as e:
        resp = e.to_response()
    finally:
        IN_FLIGHT.discard(key)
    if resp.status < 300 or resp.status == 402:
        IDEMPOTENT[key] = (fingerprint, resp.status, resp.body)
    return resp


@web.middleware
async def slow(request, handler):
    # A delay_ms fault without a status: Stripe taking its time, with the
    # request's Idempotency-Key in flight meanwhile.
    if request.get("delay_ms"):
        await asyncio.sleep(request["delay_ms"] / 1000)
    return await handler(request)


# --- /_config: look at and steer the fake (no auth, as localstripe's) ------
def reset_state():
    R.store.clear()
    for registry in (IDEMPOTENT, THIN, PROCESSING):
        registry.clear()
    for log in (REQUESTS, FAULTS, DELIVERIES):
        log.clear()


def int_param(body, name, default, low=0):
    try:
        value = int(body.get(name, default)) if body.get(name, default) is not None else None
    except (TypeError, ValueError):
        raise bad(f"{name} must be an integer", param=name) from None
    if value is not None and value < low:
        raise bad(f"{name} must be at least {low}", param=name)
    return value


async def config_webhook(request, body, endpoint_id):
    if request.method == "DELETE":
        WEBHOOKS.pop(endpoint_id, None)
        return {"deleted": True, "id": endpoint_id}
    url, secret, events = body.get("url"), body.get("secret"), body.get("events")
    if not isinstance(url, str) or not url.startswith("http") or not secret:
        raise bad("url (http…) and secret are required")
    if isinstance(events, str):
        events = [events]
    if events is not None and not isinstance(events, list):
        raise bad("events must be a list", param="events")
    payload = body.get("event_payload", "snapshot")
    if payload not in ("snapshot", "thin"):
        raise bad("event_payload is snapshot or thin", param="event_payload")
    WEBHOOKS[endpoint_id] = {"url": url, "secret": str(secret), "events": events,
                             "connect": to_bool(body.get("connect", False)),
                             "delay_ms": int_param(body, "delay_ms", 1000),
                             "event_payload": payload}
    return {"id": endpoint_id, **{k: v for k, v in WEBHOOKS[endpoint_id].items()
                                  if k != "secret"}}


async def config_requests(request, body):
    if request.method == "DELETE":
        REQUESTS.clear()
        return {"deleted": True}
    method, prefix = request.query.get("method"), request.query.get("path", "")
    return {"data": [r for r in REQUESTS if r["path"].startswith(prefix)
                     and method in (None, r["method"])]}


async def config_faults(request, body):
    if request.method == "DELETE":
        FAULTS.clear()
        return {"deleted": True}
    if request.method == "GET":
        return {"data": FAULTS}
    status = int_param(body, "status", None, low=100)
    if not isinstance(body.get("path"), str) or not body["path"].startswith("/"):
        raise bad("path (a prefix such as /v1/payment_intents) is required", param="path")
    if status is None and not body.get("delay_ms"):
        raise bad("status or delay_ms is required", param="status")
    error = body.get("error")
    if error is not None and not isinstance(error, dict):
        raise bad("error must be a JSON object", param="error")
    if status is not None and error is None:
        error = FAULT_BODIES.get(status) or {
            "type": "api_error" if status >= 500 else "invalid_request_error",
            "message": f"Injected fault: HTTP {status}."}
    fault = {"method": str(body.get("method", "*")).upper(), "path": body["path"],
             "status": status, "count": int_param(body, "count", 1, low=1),
             "retry_after": int_param(body, "retry_after", None),
             "should_retry": None if body.get("should_retry") is None
             else to_bool(body["should_retry"]),
             "delay_ms": int_param(body, "delay_ms", 0),
             "body": error if error is None or "error" in error else {"error": error}}
    FAULTS.append(fault)
    return fault


async def config_events(request, body):
    # A complete event as given, listed and delivered like the fake's own:
    # same-second events, events listed late with an older `created`.
    if not isinstance(body.get("type"), str) or not isinstance(
            (body.get("data") or {}).get("object"), dict):
        raise bad("type and data.object are required")
    raw = dict(body)
    raw.setdefault("id", "evt_" + R.random_id(24))
    if "event:" + raw["id"] in R.store:
        raise bad(f"Event {raw['id']} already exists", param="id")
    raw["created"] = int_param(raw, "created", int(time.time()))
    for k, v in (("object", "event"), ("livemode", False), ("api_version", API_VERSION),
                 ("request", {"id": None, "idempotency_key": None})):
        raw.setdefault(k, v)
    event = R.Event.__new__(R.Event)
    event.id, event.type, event.created = raw["id"], raw["type"], raw["created"]
    event.livemode, event.data = raw["livemode"], raw["data"]
    event._raw, event._pending_computed = raw, "pending_webhooks" not in body
    event._account = raw.get("account")
    event._seq, event._targets, event._delivered = next(SEQ), set(), set()
    R.store["event:" + event.id] = event
    schedule_webhook(event)
    return event._export()


async def config_redeliver(request, body, event_id):
    event = R.store.get("event:" + event_id)
    if event is None:
        raise UserError(404, f"No such event: '{event_id}'", {"code": "resource_missing"})
    schedule_webhook(event, delay=0)
    return {"id": event_id, "endpoints": sorted(event._targets)}


async def config_deliveries(request, body):
    return {"data": [d for d in DELIVERIES
                     if request.query.get("event") in (None, d["event"])]}


async def config_thin_events(request, body):
    return make_thin(body)


async def config_processing(request, body, pm_id):
    # The next confirmations with this PM answer `processing`; the payment
    # then settles by itself after after_ms, or stays until /settle.
    outcome = body.get("outcome", "succeeded")
    if outcome not in ("succeeded", "failed", "hold"):
        raise bad("outcome is succeeded, failed or hold", param="outcome")
    if request.method == "DELETE":
        PROCESSING.pop(pm_id, None)
        return {"deleted": True, "payment_method": pm_id}
    PROCESSING[pm_id] = {"outcome": outcome, "after_ms": int_param(body, "after_ms", 500)}
    return {"payment_method": pm_id, **PROCESSING[pm_id]}


async def config_settle(request, body, pi_id):
    pi = R.store.get("payment_intent:" + pi_id)
    if pi is None:
        raise UserError(404, f"No such payment_intent: '{pi_id}'", {"code": "resource_missing"})
    if pi.status != "processing":
        raise unexpected_state(pi, "settle", ["processing"])
    outcome = body.get("outcome", "succeeded")
    if outcome not in ("succeeded", "failed"):
        raise bad("outcome is succeeded or failed", param="outcome")
    if pi._settle is not None:
        pi._settle.cancel()
    err = dict(GENERIC, decline_code=body["decline_code"]) if body.get("decline_code") else None
    settle(pi, outcome, err)
    with acting_as(owner(pi)):
        return pi._export()


async def config_data(request, body):
    reset_state()  # objects, events, keys, logs; webhook endpoints stay
    return {"deleted": True}


CONTROLS = [  # (methods, path pattern, handler)
    (("POST", "DELETE"), r"/_config/webhooks/(?P<endpoint_id>[^/]+)", config_webhook),
    (("GET", "DELETE"), r"/_config/requests", config_requests),
    (("GET", "POST", "DELETE"), r"/_config/faults", config_faults),
    (("POST",), r"/_config/events", config_events),
    (("POST",), r"/_config/events/(?P<event_id>[^/]+)/deliver", config_redeliver),
    (("GET",), r"/_config/deliveries", config_deliveries),
    (("POST",), r"/_config/thin_events", config_thin_events),
    (("POST", "DELETE"), r"/_config/payment_methods/(?P<pm_id>[^/]+)/processing",
     config_processing),
    (("POST",), r"/_config/payment_intents/(?P<pi_id>[^/]+)/settle", config_settle),
    (("DELETE",), r"/_config/data", config_data),
]


@web.middleware
async def control(request, handler):
    for methods, pattern, fn in CONTROLS:
        match = re.fullmatch(pattern, request.path)
        if match and request.method in methods:
            body = await server.get_post_data(request) if request.body_exists else {}
            if not isinstance(body, dict):
                raise bad("The body must be a JSON object or a form")
            return json_response(await fn(request, dict(body), **match.groupdict()))
    return await handler(request)


# localstripe's: [error_middleware, auth_middleware, save_store_middleware].
app.middlewares[:0] = [request_log, stripe_shaped_500]
app.middlewares.insert(app.middlewares.index(server.error_middleware) + 1, control)
app.middlewares.insert(app.middlewares.index(server.auth_middleware), faults)
app.middlewares.extend([request_context, idempotency, slow])  # innermost: after auth


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
