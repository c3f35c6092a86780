//! Every real Stripe event in ../shared/stripe-events (API versions 2018 to 2025) is
//! accepted and applied. The files are read in place, never copied into the repo.

use std::path::PathBuf;

use crate::helpers::{both_backends, spawn_app_on, Backend};

fn shared_events() -> Option<Vec<PathBuf>> {
    let dir = std::env::var_os("PAYHOOK_REAL_EVENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/stripe-events/events")
        });
    let entries = std::fs::read_dir(&dir).ok()?;
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    Some(files)
}

fn expected_state(event_type: &str, payload: &serde_json::Value) -> Option<&'static str> {
    let object = &payload["data"]["object"];
    let error = object
        .get("last_payment_error")
        .or_else(|| object.get("last_setup_error"));
    let auth = error
        .map(|e| {
            e["code"] == "authentication_required" || e["decline_code"] == "authentication_required"
        })
        .unwrap_or(false);
    Some(match event_type.split_once('.')?.1 {
        "created" => "pending",
        "requires_action" => "requires_action",
        "processing" => "processing",
        "succeeded" => "succeeded",
        "payment_failed" | "setup_failed" if auth => "requires_action",
        "payment_failed" | "setup_failed" => "failed",
        "canceled" => "canceled",
        _ => return None,
    })
}

async fn every_real_stripe_event_is_accepted_and_applied(backend: Backend) {
    let Some(files) = shared_events() else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have ../shared/stripe-events beside the repo"
        );
        eprintln!(
            "SKIPPED: ../shared/stripe-events not found; set PAYHOOK_REAL_EVENTS to run this test"
        );
        return;
    };
    assert!(
        files.len() >= 47,
        "expected the 47 shared events, found {}",
        files.len()
    );
    for file in &files {
        let body = std::fs::read(file).unwrap();
        let payload: serde_json::Value = serde_json::from_slice(&body).unwrap();
        // Several files share an event id: each gets fresh state, as a real endpoint would.
        // A connected account's event (it has `account`) is sent to a Connect endpoint, as
        // Stripe does; an account endpoint refuses it (API.md section 4).
        let connected = payload["account"].is_string();
        let app = spawn_app_on(backend, |config| {
            if connected {
                config.webhook_kind = payhook::config::EndpointKind::Connect;
            }
        })
        .await;
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let answer = app.deliver(&body).await;
        assert_eq!(answer["duplicate"], false, "{name}");
        app.settle().await;
        let event_id = payload["id"].as_str().unwrap();
        let event_type = payload["type"].as_str().unwrap();
        let stored = app.event(event_id).unwrap();
        let handled = event_type.starts_with("payment_intent.")
            || event_type.starts_with("setup_intent.")
            || event_type.starts_with("payment_method.");
        match expected_state(event_type, &payload) {
            Some(state) if handled && !event_type.ends_with("amount_capturable_updated") => {
                assert_eq!(
                    stored.status.as_str(),
                    "processed",
                    "{name}: {:?}",
                    stored.last_error
                );
                let intent = payload["data"]["object"]["id"].as_str().unwrap();
                let checkout = app
                    .checkout(intent)
                    .unwrap_or_else(|| panic!("{name}: no checkout"));
                assert_eq!(checkout.state.as_str(), state, "{name}");
            }
            _ if event_type.starts_with("payment_method.") => {
                assert_eq!(
                    stored.status.as_str(),
                    "processed",
                    "{name}: {:?}",
                    stored.last_error
                );
                let pm = payload["data"]["object"]["id"].as_str().unwrap();
                let row = app
                    .with_conn(|c| {
                        payhook::store::payment_methods::find_payment_method(c, pm).unwrap()
                    })
                    .unwrap_or_else(|| panic!("{name}: payment method not recorded"));
                let detached = event_type.ends_with("detached");
                assert_eq!(row.is_detached(), detached, "{name}");
            }
            _ => assert_eq!(stored.status.as_str(), "ignored", "{name}"),
        }
    }
    eprintln!("{} real Stripe events accepted and applied", files.len());
}
both_backends!(every_real_stripe_event_is_accepted_and_applied);
