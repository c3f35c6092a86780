//! `payhook::replay` as a library: every fixture flow through the real app. The `payhook
//! replay` command is tested in `cli.rs`.

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
