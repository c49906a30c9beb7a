//! Giving freed memory back to the operating system after a peak.
//!
//! glibc's allocator keeps what the process freed for reuse: measured on this gateway, 5,000
//! WebSocket sessions took RSS from 8 MB to 135 MB, and a minute after every one of them had
//! left it was still 135 MB. `malloc_trim(0)` hands the free pages of every arena back
//! (21 MB ten seconds later in the same run). It walks the heap, which takes up to ~50 ms in a
//! busy moment, so it runs on a blocking thread, and only while connections have been closing:
//! an idle or steady gateway is never trimmed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::ServerContext;

/// How often to look.
const EVERY: Duration = Duration::from_secs(10);

/// Counts connections as they end, for [`give_back_after_closes`].
#[derive(Debug, Default)]
pub struct Closes(AtomicU64);

impl Closes {
    pub fn count_one(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn total(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Trims every [`EVERY`] while connections closed within the last resume window (plus two
/// looks): their sessions' state is freed only when the window runs out.
pub async fn give_back_after_closes(ctx: Arc<ServerContext>) {
    let linger = ctx.config.hub.resume_window + 2 * EVERY;
    let mut seen = ctx.closes.total();
    let mut last_close: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            () = ctx.shutdown.cancelled() => return,
        }
        let now = tokio::time::Instant::now();
        let total = ctx.closes.total();
        if total != seen {
            seen = total;
            last_close = Some(now);
        }
        if last_close.is_some_and(|at| now.duration_since(at) <= linger) {
            let _ = tokio::task::spawn_blocking(trim).await;
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    let started = std::time::Instant::now();
    // SAFETY: malloc_trim only takes the allocator's own locks; any thread may call it.
    let released = unsafe { libc::malloc_trim(0) } == 1;
    tracing::debug!(
        released,
        took_us = started.elapsed().as_micros() as u64,
        "freed memory given back (malloc_trim)"
    );
}

/// Other allocators return memory by themselves (or offer no such call).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
