// One schema for both backends; checked against fresh databases of each by the
// `schema_matches_migrations` test. Keep in step with migrations/{sqlite,postgres}.

diesel::table! {
    webhook_events (id) {
        id -> Text,
        event_type -> Text,
        api_version -> Nullable<Text>,
        created -> BigInt,
        livemode -> Bool,
        account -> Nullable<Text>,
        object_id -> Nullable<Text>,
        object_type -> Nullable<Text>,
        payload -> Text,
        received_at -> BigInt,
        status -> Text,
        attempts -> Integer,
        next_attempt_at_ms -> BigInt,
        last_error -> Nullable<Text>,
        processed_at -> Nullable<BigInt>,
        endpoint -> Text,
        secret_index -> Nullable<Integer>,
    }
}

diesel::table! {
    webhook_event_queue (created, received_at, id) {
        created -> BigInt,
        received_at -> BigInt,
        id -> Text,
        object_id -> Nullable<Text>,
        next_attempt_at_ms -> BigInt,
    }
}

diesel::table! {
    customers (id) {
        id -> BigInt,
        customer_ref -> Nullable<Text>,
        email -> Nullable<Text>,
        stripe_customer_id -> Nullable<Text>,
        default_payment_method_id -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        account -> Text,
    }
}

diesel::table! {
    payment_methods (id) {
        id -> Text,
        customer_id -> Nullable<BigInt>,
        stripe_customer_id -> Nullable<Text>,
        method_type -> Nullable<Text>,
        brand -> Nullable<Text>,
        last4 -> Nullable<Text>,
        exp_month -> Nullable<Integer>,
        exp_year -> Nullable<Integer>,
        fingerprint -> Nullable<Text>,
        billing_email -> Nullable<Text>,
        status -> Text,
        attached_at -> Nullable<BigInt>,
        detached_at -> Nullable<BigInt>,
        created_at -> BigInt,
        updated_at -> BigInt,
        saved_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    checkouts (id) {
        id -> Text,
        kind -> Text,
        intent_id -> Text,
        customer_id -> Nullable<BigInt>,
        stripe_customer_id -> Nullable<Text>,
        payment_method_id -> Nullable<Text>,
        amount -> Nullable<BigInt>,
        currency -> Nullable<Text>,
        setup_future_usage -> Nullable<Text>,
        state -> Text,
        state_event_id -> Nullable<Text>,
        state_event_created -> BigInt,
        last_error_code -> Nullable<Text>,
        decline_code -> Nullable<Text>,
        last_error_message -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        notify_sequence -> BigInt,
        account -> Text,
        expiry_watch -> Nullable<BigInt>,
    }
}

diesel::table! {
    checkout_transitions (id) {
        id -> BigInt,
        checkout_id -> Text,
        event_id -> Nullable<Text>,
        from_state -> Nullable<Text>,
        to_state -> Text,
        outcome -> Text,
        reason -> Nullable<Text>,
        error_code -> Nullable<Text>,
        decline_code -> Nullable<Text>,
        event_created -> Nullable<BigInt>,
        at -> BigInt,
    }
}

diesel::table! {
    outbox (id) {
        id -> BigInt,
        kind -> Text,
        idempotency_key -> Text,
        lane -> Nullable<Text>,
        checkout_id -> Nullable<Text>,
        data -> Text,
        status -> Text,
        step -> Text,
        attempts -> Integer,
        next_attempt_at_ms -> BigInt,
        locked_until_ms -> BigInt,
        locked_by -> Nullable<Text>,
        last_error_code -> Nullable<Text>,
        last_error -> Nullable<Text>,
        result -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    outbox_attempts (id) {
        id -> BigInt,
        item_id -> BigInt,
        step -> Text,
        started_at_ms -> BigInt,
        duration_ms -> BigInt,
        outcome -> Text,
        status_code -> Nullable<Integer>,
        error_code -> Nullable<Text>,
        error -> Nullable<Text>,
    }
}

diesel::table! {
    app_checkouts (id) {
        id -> Text,
        kind -> Text,
        customer_id -> Nullable<BigInt>,
        customer_ref -> Nullable<Text>,
        email -> Nullable<Text>,
        amount -> Nullable<BigInt>,
        currency -> Nullable<Text>,
        save_card -> Bool,
        off_session -> Bool,
        description -> Nullable<Text>,
        metadata -> Nullable<Text>,
        payment_method_id -> Nullable<Text>,
        idempotency_key -> Nullable<Text>,
        request_hash -> Text,
        intent_id -> Nullable<Text>,
        client_secret -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        account -> Text,
    }
}

diesel::table! {
    reconcile_cursors (scope) {
        scope -> Text,
        cursor_at -> Nullable<BigInt>,
        locked_until_ms -> BigInt,
        locked_by -> Nullable<Text>,
        updated_at -> BigInt,
    }
}

diesel::joinable!(checkout_transitions -> checkouts (checkout_id));
diesel::joinable!(app_checkouts -> customers (customer_id));
diesel::joinable!(checkouts -> customers (customer_id));
diesel::joinable!(payment_methods -> customers (customer_id));
diesel::joinable!(outbox -> checkouts (checkout_id));
diesel::joinable!(outbox_attempts -> outbox (item_id));

diesel::allow_tables_to_appear_in_same_query!(
    webhook_events,
    webhook_event_queue,
    customers,
    payment_methods,
    checkouts,
    checkout_transitions,
    outbox,
    outbox_attempts,
    app_checkouts,
    reconcile_cursors,
);
