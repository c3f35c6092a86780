//! `payhook-load`: drives a webhook endpoint on this machine with signed, unique, realistic
//! Stripe events and prints throughput, latency percentiles and status counts.
//!
//! A load tool, not a test: it measures, it does not judge. Each connection is a lean
//! HTTP/1.1 keep-alive client over a tokio `TcpStream` (no TLS, no pooling layer), so the
//! generator leaves most of the CPU to the server when both share a small machine. Events are
//! signed exactly as Stripe signs them ([`payhook::stripe::signature::header_for`]); a configurable
//! fraction are re-deliveries of an event already sent (same id, freshly signed, as Stripe's
//! retries are). Only loopback targets are accepted: this tool must never load someone else's
//! server.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use payhook::stripe::signature::header_for;

/// Sends signed Stripe events to a payhook (or any webhook endpoint) on 127.0.0.1.
#[derive(Parser, Debug, Clone)]
#[command(name = "payhook-load", version, about)]
struct Args {
    /// Endpoint: http://127.0.0.1:PORT/path (also localhost or [::1]; nothing else).
    #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/stripe")]
    url: String,
    /// Signing secret (whsec_...).
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,
    /// Concurrent connections (each sends one request at a time, keep-alive).
    #[arg(long, short = 'c', default_value_t = 64)]
    concurrency: usize,
    /// Stop after this many requests.
    #[arg(long, short = 'n', default_value_t = 100_000)]
    count: u64,
    /// Stop after this many seconds, whichever comes first.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Offered rate in requests per second over all connections (0: as fast as answered).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Fraction of requests that re-deliver an event already sent (0.0 to 1.0).
    #[arg(long, default_value_t = 0.05)]
    dup: f64,
    /// Pad each event to about this many bytes (0: natural size, about 1.3 KB).
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// Distinct intents the events are spread over (events of one intent follow its life).
    #[arg(long, default_value_t = 10_000)]
    objects: u64,
    /// Which events: `lifecycle` (intents through their life over --objects intents, plus
    /// payment-method and customer events) or `new-checkouts` (each event a
    /// `payment_intent.succeeded` of its own intent that saves its card: every event opens a
    /// checkout and queues a card to save, the heavy end of applying).
    #[arg(long, value_enum, default_value_t = Mix::Lifecycle)]
    mix: Mix,
    /// Per-request timeout in milliseconds (counted as status "timeout").
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Prefix of event and object ids (default: derived from the clock, unique per run).
    #[arg(long)]
    run_id: Option<String>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum Mix {
    Lifecycle,
    NewCheckouts,
}

/// Where to connect and what to ask for.
#[derive(Debug, Clone)]
struct Target {
    connect: String,
    host_header: String,
    path: String,
}

/// Parses `http://host[:port]/path`, refusing anything but loopback.
fn parse_target(url: &str) -> anyhow::Result<Target> {
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs are supported (the target is on this machine)")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').context("unclosed [ in host")?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port: u16 = port.unwrap_or("80").parse().context("bad port")?;
    let ip = match host {
        "127.0.0.1" | "localhost" => "127.0.0.1",
        "::1" => "[::1]",
        other => bail!("refusing to load {other}: only 127.0.0.1, localhost and [::1] are allowed"),
    };
    Ok(Target {
        connect: format!("{ip}:{port}"),
        host_header: authority.to_owned(),
        path: path.to_owned(),
    })
}

/// The life of an intent, as Stripe narrates it, and the other types a real endpoint sees.
const INTENT_TYPES: [&str; 6] = payhook::stripe::payload::PAYMENT_INTENT_EVENT_TYPES;

/// Builds event number `n` of `mix`.
fn make_event(run: &str, n: u64, mix: Mix, objects: u64, pad_to: usize, now: i64) -> String {
    let id = format!("evt_{run}{n:010}");
    let body = match mix {
        Mix::Lifecycle => lifecycle_event(run, &id, n, objects, now),
        Mix::NewCheckouts => intent_event(
            run,
            &id,
            n,
            &format!("{n:010}"),
            "payment_intent.succeeded",
            true,
            now,
        ),
    };
    pad(body, pad_to)
}

/// Mostly intent events (the mix a checkout endpoint sees), some payment-method and customer
/// events (the latter are stored and ignored by payhook).
fn lifecycle_event(run: &str, id: &str, n: u64, objects: u64, now: i64) -> String {
    let intent = n % objects.max(1);
    let step = n / objects.max(1);
    match n % 20 {
        18 => format!(
            r#"{{"id":"{id}","object":"event","api_version":"2025-09-30.clover","created":{now},"data":{{"object":{{"id":"pm_{run}{intent:08}","object":"payment_method","billing_details":{{"address":{{"city":null,"country":"DE","line1":null,"postal_code":"10115"}},"email":"user{intent}@example.com","name":"Load Test"}},"card":{{"brand":"visa","checks":{{"cvc_check":"pass"}},"country":"US","exp_month":12,"exp_year":2030,"fingerprint":"Fp{intent:014}","funding":"credit","last4":"4242"}},"created":{now},"customer":"cus_{run}{intent:08}","livemode":false,"metadata":{{}},"type":"card"}},"previous_attributes":null}},"livemode":false,"pending_webhooks":1,"request":{{"id":null,"idempotency_key":null}},"type":"payment_method.attached""#
        ),
        19 => format!(
            r#"{{"id":"{id}","object":"event","api_version":"2025-09-30.clover","created":{now},"data":{{"object":{{"id":"cus_{run}{intent:08}","object":"customer","address":null,"balance":0,"created":{now},"currency":"eur","email":"user{intent}@example.com","invoice_prefix":"LOAD{intent:04}","livemode":false,"metadata":{{"customer_ref":"user_{intent}"}},"name":"Load Test"}},"previous_attributes":{{"email":null}}}},"livemode":false,"pending_webhooks":1,"request":{{"id":"req_{run}{n}","idempotency_key":null}},"type":"customer.updated""#
        ),
        _ => {
            let event_type = INTENT_TYPES[(step % INTENT_TYPES.len() as u64) as usize];
            intent_event(run, id, n, &format!("{intent:08}"), event_type, false, now)
        }
    }
}

/// A `payment_intent.*` event of intent `pi_{run}{intent}`, without the closing brace. With
/// `names_card` it is `succeeded` with its card (`pm_{run}{intent}`), which
/// `setup_future_usage` asks to save.
fn intent_event(
    run: &str,
    id: &str,
    n: u64,
    intent: &str,
    event_type: &str,
    names_card: bool,
    now: i64,
) -> String {
    let error = if event_type.ends_with("failed") {
        r#"{"code":"card_declined","decline_code":"insufficient_funds","message":"Your card has insufficient funds.","type":"card_error"}"#
    } else {
        "null"
    };
    let (status, payment_method) = if names_card {
        ("succeeded", format!(r#""pm_{run}{intent}""#))
    } else {
        ("requires_payment_method", "null".to_owned())
    };
    format!(
        r#"{{"id":"{id}","object":"event","api_version":"2025-09-30.clover","created":{now},"data":{{"object":{{"id":"pi_{run}{intent}","object":"payment_intent","amount":4200,"amount_capturable":0,"amount_details":{{"tip":{{}}}},"amount_received":0,"application":null,"application_fee_amount":null,"automatic_payment_methods":{{"allow_redirects":"always","enabled":true}},"canceled_at":null,"cancellation_reason":null,"capture_method":"automatic_async","client_secret":"pi_{run}{intent}_secret_LoadTestNotARealSecret","confirmation_method":"automatic","created":{now},"currency":"eur","customer":null,"description":"Order {intent}","last_payment_error":{error},"latest_charge":null,"livemode":false,"metadata":{{"customer_ref":"user_{intent}"}},"next_action":null,"on_behalf_of":null,"payment_method":{payment_method},"payment_method_options":{{"card":{{"installments":null,"mandate_options":null,"network":null,"request_three_d_secure":"automatic"}}}},"payment_method_types":["card"],"processing":null,"receipt_email":null,"review":null,"setup_future_usage":"off_session","shipping":null,"source":null,"statement_descriptor":null,"statement_descriptor_suffix":null,"status":"{status}","transfer_data":null,"transfer_group":null}}}},"livemode":false,"pending_webhooks":1,"request":{{"id":"req_{run}{n}","idempotency_key":"{run}-{n}"}},"type":"{event_type}""#
    )
}

/// Pads `body` (an envelope without its closing brace) to about `pad_to` bytes and closes it.
fn pad(body: String, pad_to: usize) -> String {
    let mut body = body;
    // Padding goes into a field payhook never reads, as large real payloads carry big
    // metadata, line items or descriptions.
    let closing = 1;
    if pad_to > body.len() + closing + 16 {
        let pad = pad_to - body.len() - closing - 13;
        body.push_str(r#","padding":""#);
        body.extend(std::iter::repeat_n('x', pad));
        body.push('"');
    }
    body.push('}');
    body
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    statuses: BTreeMap<String, u64>,
}

struct Shared {
    args: Args,
    target: Target,
    run: String,
    next: AtomicU64,
    start: Instant,
    deadline: Instant,
    /// Unix seconds when the run began: events' `created` count from it.
    started_secs: i64,
}

impl Shared {
    /// Event `n`'s `created`: fixed per event (a re-delivery must carry the very body Stripe
    /// sent first, or payhook rightly reports a duplicate with another body), growing with `n`
    /// over the run's planned duration, so never far ahead of the signature's `t`.
    fn created_of(&self, n: u64) -> i64 {
        let share = n as f64 / self.args.count.max(1) as f64;
        self.started_secs + (share * self.args.duration) as i64
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("payhook-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let target = parse_target(&args.url)?;
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!((0.0..=1.0).contains(&args.dup), "--dup is a fraction");
    let run = args.run_id.clone().unwrap_or_else(|| {
        let ms = payhook::store::now_ms();
        format!("L{:x}", ms)
    });
    let start = Instant::now();
    let shared = Arc::new(Shared {
        deadline: start + Duration::from_secs_f64(args.duration.max(0.001)),
        args: args.clone(),
        target,
        run,
        next: AtomicU64::new(0),
        start,
        started_secs: payhook::store::now_secs(),
    });
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|worker| tokio::spawn(connection(shared.clone(), worker)))
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.context("a connection task panicked")?;
        total.latencies_us.extend(tally.latencies_us);
        for (status, n) in tally.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    report(&args, &shared.run, &mut total, elapsed);
    Ok(())
}

fn report(args: &Args, run: &str, total: &mut Tally, elapsed: f64) {
    let sent = total.latencies_us.len();
    let ok: u64 = total
        .statuses
        .iter()
        .filter(|(s, _)| s.starts_with('2'))
        .map(|(_, n)| n)
        .sum();
    total.latencies_us.sort_unstable();
    let pct = |p: f64| -> f64 {
        if sent == 0 {
            return 0.0;
        }
        let i = ((p / 100.0) * sent as f64).ceil() as usize;
        f64::from(total.latencies_us[i.clamp(1, sent) - 1]) / 1000.0
    };
    println!(
        "target {} concurrency {} rate {} dup {} payload {} run {run}",
        args.url,
        args.concurrency,
        if args.rate > 0.0 {
            format!("{}/s", args.rate)
        } else {
            "max".into()
        },
        args.dup,
        if args.payload_bytes > 0 {
            format!("~{}B", args.payload_bytes)
        } else {
            "natural".into()
        },
    );
    println!(
        "requests {sent} in {elapsed:.2}s: {:.0} req/s, {:.0} acknowledged (2xx)/s",
        sent as f64 / elapsed,
        ok as f64 / elapsed
    );
    println!(
        "latency ms: p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(99.9),
        pct(100.0)
    );
    let statuses: Vec<String> = total
        .statuses
        .iter()
        .map(|(s, n)| format!("{s}:{n}"))
        .collect();
    println!("status {}", statuses.join(" "));
}

/// One keep-alive connection sending requests until the count or the time is up.
async fn connection(shared: Arc<Shared>, worker: usize) -> Tally {
    let args = &shared.args;
    let mut tally = Tally::default();
    let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
    let mut stream: Option<TcpStream> = None;
    let mut buf = Vec::with_capacity(4096);
    let mut request = Vec::with_capacity(4096);
    let timeout = Duration::from_millis(args.timeout_ms);
    // Open-loop pacing: each connection owns every `concurrency`-th slot of the schedule.
    let interval =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate));
    let mut slot = shared.start
        + interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(worker as f64 / args.concurrency as f64)
        });
    loop {
        if let Some(interval) = interval {
            tokio::time::sleep_until(slot.into()).await;
            slot += interval;
        }
        if Instant::now() >= shared.deadline {
            break;
        }
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        if n >= args.count {
            break;
        }
        let now = payhook::store::now_secs();
        // A re-delivery re-sends an earlier event: same id and body, new signature.
        let event_n = if n > 0 && args.dup > 0.0 && rng.random_bool(args.dup) {
            rng.random_range(0..n)
        } else {
            n
        };
        let body = make_event(
            &shared.run,
            event_n,
            args.mix,
            args.objects,
            args.payload_bytes,
            shared.created_of(event_n),
        );
        let signature = header_for(body.as_bytes(), &args.secret, now);
        request.clear();
        request.extend_from_slice(
            format!(
                "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\nContent-Type: application/json; charset=utf-8\r\nStripe-Signature: {signature}\r\nContent-Length: {}\r\n\r\n",
                shared.target.path,
                shared.target.host_header,
                body.len()
            )
            .as_bytes(),
        );
        request.extend_from_slice(body.as_bytes());
        let began = Instant::now();
        let outcome = tokio::time::timeout(
            timeout,
            exchange(&mut stream, &shared.target, &request, &mut buf),
        )
        .await;
        let micros = began.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
        let status = match outcome {
            Ok(Ok(code)) => code.to_string(),
            Ok(Err(e)) => {
                stream = None;
                format!("error({})", e.kind())
            }
            Err(_) => {
                stream = None;
                "timeout".to_owned()
            }
        };
        tally.latencies_us.push(micros);
        *tally.statuses.entry(status).or_default() += 1;
    }
    tally
}

/// Sends one request (connecting first if needed) and reads the whole response; returns the
/// status code. The connection is dropped when the server asks to close it.
async fn exchange(
    stream: &mut Option<TcpStream>,
    target: &Target,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> std::io::Result<u16> {
    if stream.is_none() {
        let s = TcpStream::connect(&target.connect).await?;
        s.set_nodelay(true)?;
        *stream = Some(s);
    }
    let Some(s) = stream.as_mut() else {
        unreachable!("connected above")
    };
    s.write_all(request).await?;
    buf.clear();
    let (head_end, status, length, close) = loop {
        let mut chunk = [0u8; 4096];
        let read = s.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..read]);
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or(std::io::ErrorKind::InvalidData)?;
            let mut length = 0usize;
            let mut close = false;
            for line in head.lines().skip(1) {
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    } else if name.eq_ignore_ascii_case("connection") {
                        close = value.trim().eq_ignore_ascii_case("close");
                    }
                }
            }
            break (end + 4, status, length, close);
        }
    };
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let read = s.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..read]);
    }
    if close {
        *stream = None;
    }
    Ok(status)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(parse_target("http://127.0.0.1:8080/webhooks/stripe").is_ok());
        assert!(parse_target("http://localhost:1/x").is_ok());
        assert_eq!(
            parse_target("http://[::1]:9/").map(|t| t.connect).ok(),
            Some("[::1]:9".to_owned())
        );
        for bad in [
            "http://example.com/",
            "http://10.0.0.1:80/",
            "https://127.0.0.1/",
            "http://127.0.0.1.evil.com/",
            "http://0.0.0.0:80/",
        ] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_are_valid_envelopes_of_the_requested_size() {
        for n in 0..40 {
            let body = make_event("T", n, Mix::Lifecycle, 7, 0, 1_700_000_000);
            let envelope =
                payhook::stripe::envelope::parse_envelope(body.as_bytes()).expect("envelope");
            assert_eq!(envelope.id.to_string(), format!("evt_T{n:010}"));
            let padded = make_event("T", n, Mix::Lifecycle, 7, 10_240, 1_700_000_000);
            assert!(padded.len().abs_diff(10_240) < 64, "{}", padded.len());
            serde_json::from_str::<serde_json::Value>(&padded).expect("JSON");
            let fresh = make_event("T", n, Mix::NewCheckouts, 7, 0, 1_700_000_000);
            let json: serde_json::Value = serde_json::from_str(&fresh).expect("JSON");
            assert_eq!(json["type"], "payment_intent.succeeded");
            assert_eq!(json["data"]["object"]["id"], format!("pi_T{n:010}"));
            assert_eq!(
                json["data"]["object"]["payment_method"],
                format!("pm_T{n:010}")
            );
        }
    }
}
