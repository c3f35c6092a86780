//! `serve`'s WAL checkpointer on SQLite: [`Pool::checkpoint_wal`] on a timer, so that no
//! commit checkpoints inside the write gate (see [`super::WalCheckpoints::Background`]).

use std::time::Duration;

use log::{info, warn};
use tokio_util::sync::CancellationToken;

use super::Pool;

/// How often the WAL is copied back. At 1 000 deliveries/s a pass copies about 500 frames
/// (2 MB) outside the gate, and holds the gate 0.3–2 ms for the rest; the WAL stays near
/// 5 MB (BENCHMARKS.md, 1 December).
pub const INTERVAL: Duration = Duration::from_millis(50);

/// Checkpoints every [`INTERVAL`] until `shutdown`. A failed pass is logged once, when
/// passes start failing, and the next pass tries again; SQLite also checkpoints by itself
/// when its last connection closes.
pub async fn run(pool: Pool, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match pool.run_pool(|pool| pool.checkpoint_wal()).await {
            Ok(_) if failing => {
                failing = false;
                info!("WAL checkpoints work again");
            }
            Ok(_) => {}
            Err(e) if !failing => {
                failing = true;
                warn!("WAL checkpoint failed; retrying every {INTERVAL:?} until one works: {e}");
            }
            Err(_) => {}
        }
    }
}
