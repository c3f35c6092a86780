//! Pure domain rules: no I/O, no clock, no database. Callers pass values in and act on the
//! decisions that come out, so every rule is unit-tested here and lives in one place.
//!
//! - [`checkout`]: the checkout state machine.

pub mod checkout;
