//! The operator commands of the CLI (`payhook events list|show|retry`, `reconcile`,
//! `resync`): the same verbs as the admin API, run as an operator runs them.

use std::path::Path;

use payhook::store::now_secs;
use serde_json::Value;

use crate::cli::{payhook, text};
use crate::fake_stripe::{FakeStripe, API_KEY};
use crate::helpers::{
    both_backends, bytes, intent_event, spawn_app_with_url, spawn_manual_app_with_url, Backend,
    TestDatabase,
};
use crate::reconcile::paid_intent;

/// Runs `payhook ARGS` against `url` (and a Stripe base) off the async runtime.
async fn run(args: &[&str], url: &str, stripe: Option<&str>) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let (url, stripe) = (url.to_owned(), stripe.map(str::to_owned));
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let mut env = vec![("DATABASE_URL", url.as_str())];
        if let Some(base) = &stripe {
            env.push(("STRIPE_SECRET_KEY", API_KEY));
            env.push(("STRIPE_API_BASE", base.as_str()));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        payhook(&args, &env, Path::new(dir.path()))
    })
    .await
    .unwrap()
}

fn json(output: &std::process::Output) -> Value {
    assert!(output.status.success(), "{}", text(output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("JSON: {}", text(output)))
}

async fn events_are_listed_shown_and_retried_from_the_command_line(backend: Backend) {
    let db = tokio::task::spawn_blocking(move || TestDatabase::create(backend))
        .await
        .unwrap();
    let url = db.url().expose();
    let app = spawn_manual_app_with_url(db.url(), |_| {}).await;
    let broken = format!(
        r#"{{"id":"evt_cli_broken","object":"event","type":"setup_intent.succeeded","created":{},"data":{{}}}}"#,
        now_secs()
    );
    app.deliver(broken.as_bytes()).await;
    app.deliver(&bytes(&intent_event(
        "evt_cli_ok",
        "payment_intent.created",
        "pi_cli",
        now_secs(),
    )))
    .await;
    app.settle().await;

    let list = run(&["events", "list"], &url, None).await;
    let table = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(list.status.success(), "{}", text(&list));
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("evt_cli_broken") && table.contains("failed"),
        "{table}"
    );
    assert!(
        table.contains("data.object"),
        "the last error is shown: {table}"
    );

    let failed = json(
        &run(
            &["events", "list", "--status", "failed", "--json"],
            &url,
            None,
        )
        .await,
    );
    assert_eq!(failed["data"].as_array().unwrap().len(), 1);
    assert_eq!(failed["data"][0]["id"], "evt_cli_broken");
    let shown = json(&run(&["events", "show", "evt_cli_broken", "--json"], &url, None).await);
    assert_eq!(
        shown["payload"],
        serde_json::from_str::<Value>(&broken).unwrap()
    );
    let human = run(&["events", "show", "evt_cli_broken"], &url, None).await;
    assert!(String::from_utf8_lossy(&human.stdout).contains("payload:"));

    let retried = json(&run(&["events", "retry", "evt_cli_broken", "--json"], &url, None).await);
    assert_eq!(retried["status"], "pending");
    assert_eq!(
        app.event("evt_cli_broken").unwrap().status.as_str(),
        "pending"
    );
    let again = run(&["events", "retry", "evt_cli_ok"], &url, None).await;
    assert!(!again.status.success());
    assert!(
        text(&again).contains("only failed and dead events"),
        "{}",
        text(&again)
    );
    let bad = run(&["events", "list", "--limit", "0"], &url, None).await;
    assert!(!bad.status.success());
    assert!(text(&bad).contains("limit"), "{}", text(&bad));
}
both_backends!(events_are_listed_shown_and_retried_from_the_command_line);

async fn reconcile_and_resync_run_from_the_command_line(backend: Backend) {
    let Some(fake) = FakeStripe::start("cli_reconcile") else {
        return;
    };
    let db = tokio::task::spawn_blocking(move || TestDatabase::create(backend))
        .await
        .unwrap();
    let url = db.url().expose();
    let app = spawn_app_with_url(db.url(), |_| {}).await;
    let pi = paid_intent(&fake).await;
    let base = Some(fake.base_url.as_str());

    let dry = json(
        &run(
            &["reconcile", "--since", "2h", "--dry-run", "--json"],
            &url,
            base,
        )
        .await,
    );
    let found = dry["new"].as_u64().unwrap();
    assert!(found >= 2, "{dry}");
    assert_eq!(app.count_events(), 0, "a dry run stores nothing");
    let pass = run(&["reconcile", "--since", "2h"], &url, base).await;
    assert!(pass.status.success(), "{}", text(&pass));
    assert!(
        String::from_utf8_lossy(&pass.stdout).contains(&format!("{found} new, 0 known")),
        "{}",
        text(&pass)
    );
    assert_eq!(app.count_events() as u64, found);
    app.settle().await;
    assert_eq!(app.checkout(&pi).unwrap().state.as_str(), "succeeded");

    let resynced = json(&run(&["resync", &pi, "--json"], &url, base).await);
    assert_eq!(resynced["state"], "succeeded");
    let human = run(&["resync", &pi], &url, base).await;
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("is succeeded"),
        "{}",
        text(&human)
    );
    let no_key = run(&["resync", &pi], &url, None).await;
    assert!(!no_key.status.success());
    assert!(
        text(&no_key).contains("STRIPE_SECRET_KEY"),
        "{}",
        text(&no_key)
    );
    assert!(!text(&no_key).contains(API_KEY));
}
both_backends!(reconcile_and_resync_run_from_the_command_line);
