// stripe-node's verdict on Stripe-Signature cases, for tests/signature_parity.rs.
//
// Reads JSON lines {"payload_hex", "header" (string or null), "secrets", "tolerance", "now_ms"}
// on stdin and writes one JSON line per case: {"accept": bool, "why": string}. The first
// output line names the library and Node. The verdict is the library's own
// `Stripe.webhooks.signature.verifyHeader` (what `constructEvent` calls before parsing JSON),
// once per secret, with the payload as a Buffer (as an Express raw body arrives) and the clock
// given as `receivedAt` (`now_ms`; the library floors it to seconds).
'use strict';

const path = require('path');
const readline = require('readline');
const Stripe = require('stripe');
const { version } = require(path.join(__dirname, 'node_modules', 'stripe', 'package.json'));

const out = [];
out.push(JSON.stringify({ oracle: `stripe-node ${version} (Node ${process.version})` }));

const input = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
input.on('line', (line) => {
  if (!line.trim()) return;
  const c = JSON.parse(line);
  const payload = Buffer.from(c.payload_hex, 'hex');
  let accept = false;
  let why = 'no secret';
  for (const secret of c.secrets) {
    try {
      Stripe.webhooks.signature.verifyHeader(
        payload, c.header, secret, c.tolerance, undefined, c.now_ms);
      accept = true;
      why = '';
      break;
    } catch (e) {
      // Every failure is a rejection, whatever its type.
      why = `${e && e.constructor ? e.constructor.name : 'Error'}: ${String(e && e.message).split('\n')[0]}`;
    }
  }
  out.push(JSON.stringify({ accept, why }));
});
input.on('close', () => {
  process.stdout.write(out.join('\n') + '\n');
});
