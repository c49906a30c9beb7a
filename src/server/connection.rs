//! The driver of one connection, whatever its transport: proves liveness by timely replies
//! (the [`Liveness`] state machine), forwards frames to the hub, and ends the connection the
//! way the hub or the peer decides.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::Instrument;

use super::hub_driver::HubInput;
use super::{ServerContext, tokens};
use crate::core::hub::ConnId;
use crate::core::liveness::{Liveness, LivenessEvent, on_grid};
use crate::core::reason_label;
use crate::metrics;
use crate::proto::Reason;
use crate::transport::{Inbound, Link, Outbound};

enum End {
    /// The peer closed, broke, or went silent; or our writer died.
    Lost {
        reason: Reason,
        silent_for: Duration,
    },
    /// The hub closed the connection; the writer finishes what is queued.
    ClosedByHub,
    /// The hub aborted the connection (its queue was full).
    Killed,
    /// A fatal framing problem: the hub will close it.
    AwaitHubClose,
    /// The hub is gone (shutdown).
    HubGone,
}

pub async fn drive(ctx: Arc<ServerContext>, link: Link) {
    let conn = ConnId(ctx.next_conn_id());
    // A debug span: an enabled span costs every connection a slot in the subscriber's span
    // registry, which is never given back, and those slots, scattered among the sessions'
    // memory, kept 4 KiB per session from being trimmed after a peak (41 MB after 10,000
    // sessions left, against 7 MB). The info and warn events below name the connection.
    let span =
        tracing::debug_span!("conn", id = %conn, transport = %link.transport, peer = %link.peer);
    drive_as(ctx.clone(), conn, link).instrument(span).await;
    ctx.closes.count_one();
}

/// Where the timer grid of every connection starts ([`LivenessConfig::timer_grid`]).
///
/// [`LivenessConfig::timer_grid`]: crate::core::liveness::LivenessConfig::timer_grid
fn timer_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

async fn drive_as(ctx: Arc<ServerContext>, conn: ConnId, mut link: Link) {
    let (kill, mut killed) = oneshot::channel();
    let opened = HubInput::Opened {
        conn,
        transport: link.transport,
        outbox: link.outbox.clone(),
        kill,
    };
    metrics::connection_accepted(link.transport);
    let mut end = if ctx.hub.send(opened).await.is_err() {
        End::HubGone
    } else {
        tracing::debug!("connection opened");
        let mut liveness = Liveness::new(Instant::now(), ctx.config.hub.liveness);
        let grid = ctx.config.hub.liveness.timer_grid();
        // A lagging activity sampler may revive a Dead verdict once per silence, not forever.
        let mut revived_in_this_silence = false;
        loop {
            let wake = liveness
                .poll_timeout()
                .map_or_else(Instant::now, |wake| on_grid(wake, timer_epoch(), grid));
            let input = tokio::select! {
                biased;
                result = &mut killed => break if result.is_ok() { End::Killed } else { End::ClosedByHub },
                // The writer ended without being told to close: nothing sent reaches the peer
                // any more, so the connection is lost (not a session quietly eating frames).
                _ = &mut link.writer => {
                    tracing::info!(%conn, transport = %link.transport, peer = %link.peer, "connection writer ended");
                    break End::Lost { reason: Reason::ConnectionLost, silent_for: liveness.silent_for(Instant::now()) };
                }
                changed = link.written.changed() => {
                    if changed.is_ok() {
                        let mark = *link.written.borrow_and_update();
                        if ctx.hub.send(HubInput::Drained { conn, mark }).await.is_err() {
                            break End::HubGone;
                        }
                    }
                    continue;
                }
                event = link.inbound.recv() => event,
                () = tokio::time::sleep_until(wake.into()) => {
                    let now = Instant::now();
                    if liveness.wants_transport_report()
                        && let Some(report) = link.tcp_witness.and_then(|witness| witness.read())
                    {
                        liveness.on_transport_report(now, report);
                    }
                    match liveness.handle_timeout(now) {
                        Some(LivenessEvent::Probe) => {
                            // A full queue means a probe is pointless anyway: the connection
                            // is about to be closed as a slow consumer.
                            let _ = link.outbox.try_send(Outbound::Probe);
                        }
                        Some(LivenessEvent::Dead { silent_for }) => {
                            let lagging = !revived_in_this_silence
                                && link.unreported_activity.as_ref().is_some_and(|check| check());
                            if !lagging {
                                break End::Lost { reason: Reason::LivenessTimeout, silent_for };
                            }
                            // The peer spoke; our sampling of it fell behind (short of CPU).
                            metrics::liveness_stall(link.transport);
                            revived_in_this_silence = true;
                            liveness.revive(Instant::now());
                        }
                        Some(LivenessEvent::Stalled { late_by }) => {
                            tracing::warn!(
                                %conn,
                                transport = %link.transport,
                                peer = %link.peer,
                                late_by_ms = late_by.as_millis() as u64,
                                "liveness check ran late (the gateway is short of CPU): probing before any verdict"
                            );
                            metrics::liveness_stall(link.transport);
                            let _ = link.outbox.try_send(Outbound::Probe);
                        }
                        None => {}
                    }
                    continue;
                }
            };
            let now = Instant::now();
            if matches!(input, Some(Inbound::Frame(_) | Inbound::Activity { .. })) {
                revived_in_this_silence = false;
            }
            let to_hub = match input {
                Some(Inbound::Frame(frame)) => {
                    liveness.on_inbound(now);
                    tokens::hub_input(&ctx, conn, frame)
                }
                Some(Inbound::Rejected(problem)) => {
                    liveness.on_inbound(now);
                    let fatal = problem.is_fatal();
                    if ctx
                        .hub
                        .send(HubInput::Rejected { conn, problem })
                        .await
                        .is_err()
                    {
                        break End::HubGone;
                    }
                    if fatal {
                        break End::AwaitHubClose;
                    }
                    continue;
                }
                Some(Inbound::Activity { rtt }) => {
                    liveness.on_inbound(now);
                    if let Some(rtt) = rtt {
                        liveness.on_rtt(rtt);
                        metrics::observe_rtt(link.transport, rtt);
                    }
                    continue;
                }
                Some(Inbound::Closed(reason)) => {
                    break End::Lost {
                        reason,
                        silent_for: liveness.silent_for(now),
                    };
                }
                // The reader stopped without a word: the connection is unusable.
                None => {
                    break End::Lost {
                        reason: Reason::ConnectionLost,
                        silent_for: liveness.silent_for(now),
                    };
                }
            };
            if ctx.hub.send(to_hub).await.is_err() {
                break End::HubGone;
            }
        }
    };

    if let End::AwaitHubClose = end {
        end = match tokio::time::timeout(ctx.config.shutdown_grace, &mut killed).await {
            Ok(Ok(())) => End::Killed,
            Ok(Err(_)) => End::ClosedByHub,
            // The hub never closed it: tell it the connection is gone, so nothing of it lingers.
            Err(_) => End::Lost {
                reason: Reason::ProtocolError,
                silent_for: Duration::ZERO,
            },
        };
    }
    match end {
        End::Lost { reason, silent_for } => {
            tracing::info!(
                %conn,
                transport = %link.transport,
                peer = %link.peer,
                reason = reason_label(reason),
                silent_for_ms = silent_for.as_millis() as u64,
                "connection lost"
            );
            let _ = ctx
                .hub
                .send(HubInput::Lost {
                    conn,
                    reason,
                    silent_for,
                })
                .await;
            link.writer.abort();
        }
        End::ClosedByHub => {
            // Let the writer deliver the last frames and the close, within the grace period.
            if tokio::time::timeout(ctx.config.shutdown_grace, &mut link.writer)
                .await
                .is_err()
            {
                link.writer.abort();
            }
        }
        End::Killed | End::HubGone | End::AwaitHubClose => link.writer.abort(),
    }
    link.reader.abort();
}
