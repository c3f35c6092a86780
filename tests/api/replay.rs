use std::process::Command;

use payhook::config::WebhookSecret;

use crate::helpers::{both_backends, fixtures_dir, spawn_app_on, Backend};

async fn replaying_every_fixture_applies_each_flow(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let deliveries = payhook::replay::replay(
        &[fixtures_dir()],
        &app.webhook_url(),
        &WebhookSecret::new(app.secret.clone()),
    )
    .await
    .unwrap();
    assert_eq!(deliveries.len(), 15);
    assert!(deliveries.iter().all(|d| d.status == 200), "{deliveries:?}");
    app.settle().await;
    for (intent, state) in [
        ("seti_1SWkbJLr8QmW2xNcWdeKLffX", "succeeded"),
        ("seti_1SWk89Lr8QmW2xNcD6uKL5Hk", "canceled"),
        ("pi_3SWkCFLr8QmW2xNcEnQpP95l", "succeeded"),
        ("pi_3SWkxvLr8QmW2xNcuz0OQydQ", "canceled"),
        ("pi_3SWknKLr8QmW2xNcpnYeB8m4", "requires_action"),
        ("pi_3SWkxiLr8QmW2xNc9pGd4t9w", "failed"),
    ] {
        assert_eq!(
            app.checkout(intent).unwrap().state.as_str(),
            state,
            "{intent}"
        );
    }
    assert_eq!(
        app.event("evt_1SWkp5Lr8QmW2xNcEktTIRUn")
            .unwrap()
            .status
            .as_str(),
        "ignored"
    );
}
both_backends!(replaying_every_fixture_applies_each_flow);

/// Runs `payhook replay FILE --url URL --secret SECRET` off the async runtime.
async fn replay_command(file: &str, url: String, secret: String) -> std::process::Output {
    let file = fixtures_dir().join(file);
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_payhook"))
            .args([
                "replay",
                file.to_str().unwrap(),
                "--url",
                &url,
                "--secret",
                &secret,
            ])
            .env_remove("STRIPE_WEBHOOK_SECRET")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

async fn the_replay_command_signs_and_posts_files_and_fails_on_rejection(backend: Backend) {
    let app = spawn_app_on(backend, |_| {}).await;
    let output = replay_command(
        "payment_intent.created.json",
        app.webhook_url(),
        app.secret.clone(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("-> 200"), "{stdout}");

    let output = replay_command(
        "payment_intent.created.json",
        app.webhook_url(),
        "whsec_wrong".into(),
    )
    .await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("-> 400"));
}

both_backends!(the_replay_command_signs_and_posts_files_and_fails_on_rejection);

#[test]
fn serve_without_a_webhook_secret_refuses_to_start_and_says_where_to_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_payhook"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env_remove("STRIPE_WEBHOOK_SECRET")
        .env("DATABASE_URL", dir.path().join("x.sqlite3"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("stripe listen") && stderr.contains("dashboard"),
        "{stderr}"
    );
}

#[test]
fn help_documents_every_setting_without_showing_secrets() {
    let output = Command::new(env!("CARGO_BIN_EXE_payhook"))
        .args(["serve", "--help"])
        .env("STRIPE_WEBHOOK_SECRET", "whsec_do_not_print")
        .env("STRIPE_SECRET_KEY", "sk_test_do_not_print")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for var in [
        "DATABASE_URL",
        "STRIPE_WEBHOOK_SECRET",
        "BIND",
        "WEBHOOK_TOLERANCE_SECS",
        "RUST_LOG",
        "STRIPE_SECRET_KEY",
        "STRIPE_API_BASE",
        "CHECKOUT_EXPIRY_MINS",
        "STRIPE_MAX_RPS",
        "ACTION_MAX_ATTEMPTS",
    ] {
        assert!(help.contains(var), "--help lacks {var}");
    }
    assert!(!help.contains("do_not_print"), "{help}");
}

#[test]
fn migrate_creates_the_embedded_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nested/payhook.sqlite3");
    let output = Command::new(env!("CARGO_BIN_EXE_payhook"))
        .args(["migrate", "--database-url", db.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(db.exists());
    // Every embedded migration ran on the fresh file.
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .unwrap()
        .count();
    assert!(String::from_utf8_lossy(&output.stdout)
        .contains(&format!("{migrations} migrations applied")));
}
