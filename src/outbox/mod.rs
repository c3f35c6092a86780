//! The way out: side effects written in the same transaction as the state change that asks
//! for them, performed later by a worker with idempotency keys.

pub mod save_card;
