#!/usr/bin/env python3
"""Stateful fake Stripe API for payhook's integration tests (see fake-stripe.md).

    python3 .ci/fake_stripe.py --port 0      # prints "LISTENING <port>"

Runs localstripe's aiohttp app ourselves instead of its CLI, because the CLI
binds 0.0.0.0/:: and pickles every write to the fixed file
/tmp/localstripe.pickle (parallel tests would share and corrupt that state).
"""
import argparse
import asyncio
import logging
import os
import signal
import stat
import sys
import threading

from aiohttp import web
from localstripe import resources

# Keep state in memory only: localstripe persists from Store.__setitem__,
# Store.__delitem__ and a per-request middleware, all via these two methods.
resources.Store.dump_to_disk = lambda self: None
resources.Store.try_load_from_disk = lambda self: None

from localstripe.server import app  # noqa: E402  (import after the patch)


@web.middleware
async def stripe_shaped_500(request, handler):
    # localstripe raises plain Python errors (TypeError on an unknown query
    # param, ...) which aiohttp turns into a text/plain 500; give clients a
    # Stripe-shaped JSON body so they report a readable error instead.
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as e:  # noqa: BLE001
        logging.exception("localstripe crashed on %s %s", request.method, request.path)
        body = {"error": {"type": "api_error",
                          "message": f"fake-stripe internal error: {type(e).__name__}: {e}"}}
        return web.json_response(body, status=500)


app.middlewares.insert(0, stripe_shaped_500)


def watch_stdin(loop, stop):
    # A harness that keeps our stdin pipe open and then dies closes it, so EOF
    # means "nobody needs us any more". Only pipes/sockets are watched:
    # /dev/null (CI has no stdin) or a terminal would mean "exit at once".
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

    # Access log goes to stderr only on request: stdout carries the single
    # LISTENING line and the harness may stop reading either pipe.
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
