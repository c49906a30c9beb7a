//! Liveness of one connection, proven by timely replies.
//!
//! A connection is alive while something keeps arriving from the peer. The transport reports
//! every inbound sign of life (a frame, a WebSocket pong, a QUIC packet); when the connection
//! has been quiet for `ping_interval` the machine asks the driver to probe it (a probe the
//! peer's network stack answers, never its application code), and when nothing at all has
//! arrived for `timeout` it declares the peer dead. Successful writes prove nothing: the
//! kernel accepts them into its send buffer long after the peer is gone.
//!
//! A lossy link must not look dead: once a probe of a silence went unanswered, the machine
//! probes again every ~1.5 round trips (bounded by an eighth and a half of the ping interval)
//! instead of every ping interval. Several probes in flight give the peer's TCP later segments
//! to send, so a lost reply is recovered by SACK / fast retransmit within a round trip or two,
//! not by the exponential RTO back-off that a single probe per interval runs into (0.4, 0.8,
//! 1.6, 3.2 s … until the timeout); over QUIC each probe is one more ack-eliciting packet. A
//! healthy quiet link answers the first probe and never sees the others: the idle cost is
//! unchanged. The deadline itself never moves: a vanished peer is still declared dead at
//! `timeout`.
//!
//! Over TCP, a lost reply can still leave the peer's TCP stuck: measured at 30 % loss, its RTO
//! grows to seconds (inflated by the losses themselves) and doubles on each try, and later
//! Pongs queue behind the lost one, so a live peer regularly cannot get one reply through
//! within the timeout — although its kernel keeps acknowledging every probe, and its later
//! replies arrive out of order. Where the gateway's TCP peer *is* the client (no proxy in
//! between: the driver decides, see `transport::tcp_liveness`), the driver reads both from the
//! kernel at each timer ([`Liveness::on_transport_report`]): out-of-order data is the
//! application's reply, only not deliverable yet, and counts as one; an acknowledgement proves
//! the path and the peer's host, and bridges the application's silence for at most
//! [`MAX_BRIDGE`] more timeouts. A vanished peer sends neither, so it is still declared dead
//! at `timeout`; a host that acknowledges while its application says nothing (an app
//! suspended by its OS) is declared dead after `(1 + MAX_BRIDGE) × timeout`.
//!
//! A verdict needs the caller to have been awake: if it is woken long after the deadline it
//! asked for (the process was starved of CPU), replies may be sitting unread in its own
//! buffers. It then probes and gives the peer one more `ping_interval` instead of declaring
//! it dead ([`LivenessEvent::Stalled`]) — once per silence, so a dead peer is still reaped.
//!
//! Sans-IO: no clock, no timers, no sockets. The caller passes `now`, waits until
//! [`Liveness::poll_timeout`] and calls [`Liveness::handle_timeout`].

use std::time::{Duration, Instant};

/// The two numbers of the liveness model. Validated by [`LivenessConfig::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessConfig {
    timeout: Duration,
    ping_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LivenessConfigError {
    #[error("liveness timeout must be at least 100ms, got {0:?}")]
    TimeoutTooShort(Duration),
    #[error(
        "ping interval ({ping_interval:?}) must be above zero and below half of the liveness \
         timeout ({timeout:?}), so that at least two probes go out before a peer is declared dead"
    )]
    PingIntervalTooLong {
        ping_interval: Duration,
        timeout: Duration,
    },
}

impl LivenessConfig {
    pub fn new(timeout: Duration, ping_interval: Duration) -> Result<Self, LivenessConfigError> {
        if timeout < Duration::from_millis(100) {
            return Err(LivenessConfigError::TimeoutTooShort(timeout));
        }
        if ping_interval.is_zero() || ping_interval * 2 >= timeout {
            return Err(LivenessConfigError::PingIntervalTooLong {
                ping_interval,
                timeout,
            });
        }
        Ok(Self {
            timeout,
            ping_interval,
        })
    }

    /// A peer from which nothing has arrived for this long is dead.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The longest a verdict can take: where transport acknowledgements bridge a silence.
    pub fn longest_verdict(&self) -> Duration {
        self.timeout * (1 + MAX_BRIDGE)
    }

    /// A connection quiet for this long gets a probe.
    pub fn ping_interval(&self) -> Duration {
        self.ping_interval
    }

    /// The grid on which every connection's liveness timer fires: a thirty-second of the ping
    /// interval, from 5 ms to 100 ms. Probes then leave in batches, and their answers come back
    /// in batches, so that one wake-up of the runtime serves many connections instead of one
    /// each (idle sessions at random phases cost the gateway twice the CPU without it). A
    /// verdict comes at most one grid step late: 100 ms at the defaults, 25 ms at 2 s / 0.8 s.
    pub fn timer_grid(&self) -> Duration {
        (self.ping_interval / 32).clamp(Duration::from_millis(5), Duration::from_millis(100))
    }

    /// When the transport itself gives up on a silent peer (QUIC's idle timeout, TCP's
    /// user timeout): a backstop strictly after the liveness verdict, so that the verdict —
    /// with its reason and its measured silence — is always ours.
    pub fn transport_backstop(&self) -> Duration {
        self.timeout + self.ping_interval
    }

    /// TCP's backstop: after [`Self::longest_verdict`], since a lossy but live TCP peer may keep
    /// one lost segment unacknowledged for longer than the timeout while it acknowledges the
    /// others (its SACKs bridge the silence).
    pub fn tcp_backstop(&self) -> Duration {
        self.longest_verdict() + self.ping_interval
    }
}

impl Default for LivenessConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(4),
        }
    }
}

/// What the driver must do when a timeout fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessEvent {
    /// Send a probe the peer's network stack answers (a WebSocket Ping, a QUIC datagram).
    Probe,
    /// Nothing arrived for the whole liveness timeout: the peer is gone.
    Dead { silent_for: Duration },
    /// The deadline passed while the caller was not running (woken `late_by` after it): no
    /// verdict on a peer we could not hear. Probe it; the deadline moves one ping interval on.
    Stalled { late_by: Duration },
}

/// Round trip assumed until one is measured (a mobile link, conservatively).
const DEFAULT_RTT: Duration = Duration::from_millis(200);

/// At least this many probes fit between the first probe of a silence and its deadline, however
/// long the round trip: each is one more independent chance for a reply on a lossy link.
const PROBES_PER_SILENCE: u32 = 8;

/// How long transport acknowledgements may stand in for the application's own replies, in
/// liveness timeouts: long enough for a TCP stream stuck in retransmission back-off to get its
/// bytes through, short enough that a host whose application hangs is still let go.
pub const MAX_BRIDGE: u32 = 2;

/// What the peer's TCP showed, read from the kernel at each liveness timer: only for
/// connections where the gateway's TCP peer is the client's own host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportReport {
    /// Time since the last acknowledgement that arrived while we had bytes in flight: the
    /// peer's host answering our probes.
    pub last_ack_age: Duration,
    /// Data segments that arrived beyond a hole, so far: the peer's replies, written by its
    /// application after one that is still missing.
    pub out_of_order_packets: u32,
}

#[derive(Debug, Clone)]
pub struct Liveness {
    config: LivenessConfig,
    last_inbound: Instant,
    last_probe: Option<Instant>,
    /// Set after a stall: the deadline of this silence is no earlier than this.
    grace_until: Option<Instant>,
    /// Smoothed round-trip time (7/8 old + 1/8 new, as TCP's SRTT).
    rtt: Option<Duration>,
    /// The last acknowledgement of our bytes by the peer's transport, where the driver counts
    /// those as replies.
    last_transport_ack: Option<Instant>,
    /// When the previous [`TransportReport`] was read, and its out-of-order count.
    last_report: Option<(Instant, u32)>,
    dead: bool,
}

impl Liveness {
    /// A connection that just opened counts as having spoken at `now`.
    pub fn new(now: Instant, config: LivenessConfig) -> Self {
        Self {
            config,
            last_inbound: now,
            last_probe: None,
            grace_until: None,
            rtt: None,
            last_transport_ack: None,
            last_report: None,
            dead: false,
        }
    }

    /// A round trip the transport measured (a WebSocket Ping's Pong, QUIC's estimate).
    pub fn on_rtt(&mut self, rtt: Duration) {
        self.rtt = Some(match self.rtt {
            Some(srtt) => (srtt * 7 + rtt) / 8,
            None => rtt,
        });
    }

    /// Between the probes of a silence after the first: ~1.5 round trips (the reply to the
    /// previous one is overdue), at least an eighth of the ping interval (bounding the probes
    /// a mass outage costs), at most half of it, and short enough that
    /// [`PROBES_PER_SILENCE`] fit before the deadline (with 2 s / 0.8 s, every 150 ms).
    fn escalated_gap(&self) -> Duration {
        let rtt = self.rtt.unwrap_or(DEFAULT_RTT);
        let ping = self.config.ping_interval;
        let fit = (self.config.timeout - ping) / PROBES_PER_SILENCE;
        (rtt + rtt / 2).min(fit).clamp(ping / 8, ping / 2)
    }

    /// Anything arrived from the peer. Late reports (an older `now`) never move time back.
    pub fn on_inbound(&mut self, now: Instant) {
        if now > self.last_inbound {
            self.last_inbound = now;
            self.grace_until = None;
        }
    }

    /// Whether a [`TransportReport`] can change anything now: only once a probe of the
    /// current silence went unanswered. A healthy quiet connection answers its first probe and
    /// is never asked (no system call per probe cycle on thousands of idle connections).
    pub fn wants_transport_report(&self) -> bool {
        self.last_probe
            .is_some_and(|probe| probe > self.last_inbound)
    }

    /// What the peer's transport showed at `now` (see [`TransportReport`]). Only for
    /// connections where that proves the client's own host, not a proxy in between.
    ///
    /// Out-of-order data that arrived since the previous report is the application's reply,
    /// which TCP cannot hand over yet: it counts as inbound, as of the previous report (the
    /// earliest it can have arrived; a conservative date). An acknowledgement bridges the
    /// application's silence for at most [`MAX_BRIDGE`] more timeouts.
    pub fn on_transport_report(&mut self, now: Instant, report: TransportReport) {
        if let Some((previous_at, previous_count)) = self.last_report
            && report.out_of_order_packets != previous_count
        {
            self.on_inbound(previous_at);
        }
        self.last_report = Some((now, report.out_of_order_packets));
        self.on_transport_ack(now.checked_sub(report.last_ack_age).unwrap_or(now));
    }

    /// The peer's transport acknowledged our bytes at `at` (its kernel ACKed a probe).
    fn on_transport_ack(&mut self, at: Instant) {
        if self.last_transport_ack.is_none_or(|last| at > last) {
            self.last_transport_ack = Some(at);
        }
    }

    /// After a [`LivenessEvent::Dead`] verdict the transport proved activity it had not
    /// reported yet (a sampler lagging behind): the peer is alive as of `now`.
    pub fn revive(&mut self, now: Instant) {
        self.dead = false;
        self.on_inbound(now);
    }

    pub fn last_inbound(&self) -> Instant {
        self.last_inbound
    }

    pub fn silent_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_inbound)
    }

    pub fn is_dead(&self) -> bool {
        self.dead
    }

    fn deadline(&self) -> Instant {
        let timeout = self.config.timeout;
        let mut deadline = self.last_inbound + timeout;
        if let Some(ack) = self.last_transport_ack {
            let bridged = (ack + timeout).min(self.last_inbound + timeout * (1 + MAX_BRIDGE));
            deadline = deadline.max(bridged);
        }
        self.grace_until
            .map_or(deadline, |grace| grace.max(deadline))
    }

    /// Woken later than this after the deadline, the caller was stalled, not listening.
    fn stall_tolerance(&self) -> Duration {
        self.config.ping_interval / 2
    }

    /// The first probe of a silence goes out `ping_interval` after the last inbound activity
    /// (a chatty peer is never probed); while it stays unanswered, the next ones follow every
    /// [`Self::escalated_gap`].
    fn next_probe(&self) -> Instant {
        match self.last_probe {
            Some(probe) if probe > self.last_inbound => probe + self.escalated_gap(),
            _ => self.last_inbound + self.config.ping_interval,
        }
    }

    /// The next instant at which [`Self::handle_timeout`] has work; `None` once dead.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.dead {
            return None;
        }
        Some(self.next_probe().min(self.deadline()))
    }

    /// Called at or after [`Self::poll_timeout`]. Calling it early is harmless (returns `None`).
    pub fn handle_timeout(&mut self, now: Instant) -> Option<LivenessEvent> {
        if self.dead {
            return None;
        }
        let deadline = self.deadline();
        if now >= deadline {
            let late_by = now - deadline;
            if late_by > self.stall_tolerance() && self.grace_until.is_none() {
                self.grace_until = Some(now + self.config.ping_interval);
                self.last_probe = Some(now);
                return Some(LivenessEvent::Stalled { late_by });
            }
            self.dead = true;
            return Some(LivenessEvent::Dead {
                silent_for: self.silent_for(now),
            });
        }
        if now >= self.next_probe() {
            self.last_probe = Some(now);
            return Some(LivenessEvent::Probe);
        }
        None
    }
}

/// `wake` moved up to the next point of the grid of step `grid` that starts at `epoch` (where
/// every connection's grid starts, so that their timers fall together). Never earlier than
/// `wake`, less than one step later.
pub fn on_grid(wake: Instant, epoch: Instant, grid: Duration) -> Instant {
    let Some(since) = wake.checked_duration_since(epoch) else {
        return wake;
    };
    let step = grid.as_nanos().max(1);
    let into_step = since.as_nanos() % step;
    if into_step == 0 {
        return wake;
    }
    let up = u64::try_from(step - into_step).unwrap_or(u64::MAX);
    wake + Duration::from_nanos(up)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn config() -> LivenessConfig {
        LivenessConfig::new(secs(10.0), secs(4.0)).expect("valid config")
    }

    #[test]
    fn rejects_ping_interval_not_below_half_the_timeout() {
        let err = LivenessConfig::new(secs(10.0), secs(5.0)).unwrap_err();
        assert!(err.to_string().contains("5s"), "{err}");
        assert!(LivenessConfig::new(secs(10.0), secs(4.999)).is_ok());
        assert!(LivenessConfig::new(secs(10.0), Duration::ZERO).is_err());
        assert!(LivenessConfig::new(secs(0.05), secs(0.01)).is_err());
    }

    #[test]
    fn quiet_peer_is_probed_then_probed_harder_then_declared_dead_exactly_at_timeout() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, config());
        l.on_rtt(secs(0.4));
        assert_eq!(l.poll_timeout(), Some(t0 + secs(4.0)));
        assert_eq!(l.handle_timeout(t0 + secs(4.0)), Some(LivenessEvent::Probe));
        // Unanswered: the next ones every 1.5 round trips (0.6 s), not every 4 s.
        let mut probes = vec![4.0];
        while let Some(at) = l.poll_timeout() {
            let at_s = (at - t0).as_secs_f64();
            if at_s >= 9.999 {
                break;
            }
            assert_eq!(l.handle_timeout(at), Some(LivenessEvent::Probe));
            probes.push((at_s * 1000.0).round() / 1000.0);
        }
        assert_eq!(probes, [4.0, 4.6, 5.2, 5.8, 6.4, 7.0, 7.6, 8.2, 8.8, 9.4]);
        // Whatever the probes, the deadline stays at 10 s of silence.
        assert_eq!(l.poll_timeout(), Some(t0 + secs(10.0)));
        assert_eq!(l.handle_timeout(t0 + secs(9.999)), None);
        assert_eq!(
            l.handle_timeout(t0 + secs(10.0)),
            Some(LivenessEvent::Dead {
                silent_for: secs(10.0)
            })
        );
        assert!(l.is_dead());
        assert_eq!(l.poll_timeout(), None);
        assert_eq!(
            l.handle_timeout(t0 + secs(20.0)),
            None,
            "dead is reported once"
        );
    }

    #[test]
    fn probing_harder_is_bounded_and_an_answer_brings_the_quiet_cadence_back() {
        let t0 = Instant::now();
        // No RTT measured yet: 1.5 x 200 ms, but at least an eighth of the ping interval.
        let mut l = Liveness::new(t0, config());
        assert_eq!(l.handle_timeout(t0 + secs(4.0)), Some(LivenessEvent::Probe));
        assert_eq!(l.poll_timeout(), Some(t0 + secs(4.5)));
        // A slow link (RTT 5 s): still 8 probes before the deadline (every 0.75 s).
        l.on_rtt(secs(5.0));
        assert_eq!(l.poll_timeout(), Some(t0 + secs(4.75)));
        // The answer arrives: the next probe is a whole ping interval after it.
        l.on_inbound(t0 + secs(4.2));
        assert_eq!(l.poll_timeout(), Some(t0 + secs(8.2)));
        // A fast link: 1.5 RTT would be 3 ms; the floor (1/8 of the ping interval) holds.
        let mut l = Liveness::new(t0, config());
        l.on_rtt(Duration::from_millis(2));
        l.handle_timeout(t0 + secs(4.0));
        assert_eq!(l.poll_timeout(), Some(t0 + secs(4.5)));
    }

    #[test]
    fn a_short_timeout_still_gets_eight_probes_into_a_silence() {
        // 2 s / 0.8 s on a 200 ms link: 1.5 RTT (300 ms) would leave room for 4 probes; every
        // 150 ms leaves room for 8, each one more chance through a lossy link.
        let t0 = Instant::now();
        let mut l = Liveness::new(
            t0,
            LivenessConfig::new(secs(2.0), secs(0.8)).expect("valid"),
        );
        l.on_rtt(secs(0.2));
        let mut probes = vec![];
        while let Some(at) = l.poll_timeout() {
            match l.handle_timeout(at) {
                Some(LivenessEvent::Probe) => {
                    probes.push(((at - t0).as_secs_f64() * 1000.0).round() as u64)
                }
                Some(LivenessEvent::Dead { silent_for }) => {
                    assert_eq!(silent_for, secs(2.0));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(probes, [800, 950, 1100, 1250, 1400, 1550, 1700, 1850]);
    }

    fn report(ack_age: f64, out_of_order_packets: u32) -> TransportReport {
        TransportReport {
            last_ack_age: secs(ack_age),
            out_of_order_packets,
        }
    }

    /// Runs the machine until its verdict, the driver reading `report_at(t)` at every timer.
    fn verdict_time(
        l: &mut Liveness,
        t0: Instant,
        report_at: impl Fn(f64) -> TransportReport,
    ) -> f64 {
        while let Some(at) = l.poll_timeout() {
            if l.wants_transport_report() {
                l.on_transport_report(at, report_at((at - t0).as_secs_f64()));
            }
            match l.handle_timeout(at) {
                Some(LivenessEvent::Dead { .. }) => return (at - t0).as_secs_f64(),
                Some(LivenessEvent::Probe) | None => {}
                Some(stalled) => panic!("unexpected {stalled:?}"),
            }
        }
        panic!("no verdict");
    }

    #[test]
    fn transport_acks_bridge_a_stuck_reply_for_at_most_two_more_timeouts() {
        let t0 = Instant::now();
        // The peer's kernel acknowledges every probe within 0.3 s; its application never
        // gets a reply through (or is suspended): let go at three timeouts, not before.
        let mut l = Liveness::new(t0, config());
        assert_eq!(verdict_time(&mut l, t0, |_| report(0.3, 0)), 30.0);
        assert_eq!(MAX_BRIDGE, 2);
        // Acknowledgements that stop (the path vanished at 12 s): dead one timeout later.
        let mut l = Liveness::new(t0, config());
        let t = verdict_time(&mut l, t0, |t| {
            report(if t < 12.0 { 0.3 } else { t - 12.0 }, 0)
        });
        assert!((22.0..22.6).contains(&t), "{t}");
        // No acknowledgement at all: the plain deadline.
        let mut l = Liveness::new(t0, config());
        assert_eq!(verdict_time(&mut l, t0, |t| report(t + 60.0, 0)), 10.0);
    }

    #[test]
    fn the_transport_is_asked_only_in_a_silence_whose_probe_went_unanswered() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, config());
        assert!(!l.wants_transport_report(), "quiet, not probed yet");
        assert_eq!(l.handle_timeout(t0 + secs(4.0)), Some(LivenessEvent::Probe));
        assert!(l.wants_transport_report(), "the probe is outstanding");
        l.on_inbound(t0 + secs(4.2));
        assert!(!l.wants_transport_report(), "answered: a healthy cycle");
        // And the verdict is always preceded by a probe of the same silence.
        let mut at = l.poll_timeout().expect("alive");
        while l.handle_timeout(at) == Some(LivenessEvent::Probe) {
            assert!(l.wants_transport_report());
            at = l.poll_timeout().expect("alive");
        }
        assert!(l.is_dead());
    }

    #[test]
    fn out_of_order_data_is_a_reply_dated_at_the_report_before_it() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, config());
        l.on_transport_report(t0 + secs(4.0), report(99.0, 7));
        l.on_transport_report(t0 + secs(4.5), report(99.0, 7));
        assert_eq!(l.last_inbound(), t0, "no new out-of-order data");
        l.on_transport_report(t0 + secs(5.0), report(99.0, 8));
        assert_eq!(l.last_inbound(), t0 + secs(4.5));
        // A reply that keeps arriving out of order keeps the peer alive indefinitely: it is
        // the application speaking.
        let mut l = Liveness::new(t0, config());
        let t = verdict_time(&mut l, t0, |t| {
            report(99.0, if t < 50.0 { (t * 2.0) as u32 } else { 100 })
        });
        assert!((58.0..60.6).contains(&t), "{t}");
    }

    #[test]
    fn any_inbound_activity_postpones_probe_and_death() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, config());
        assert_eq!(l.handle_timeout(t0 + secs(4.0)), Some(LivenessEvent::Probe));
        l.on_inbound(t0 + secs(4.01)); // the pong
        assert_eq!(l.poll_timeout(), Some(t0 + secs(8.01)));
        // At 10 s the old deadline no longer applies: the peer gets a probe, not death.
        assert_eq!(
            l.handle_timeout(t0 + secs(10.0)),
            Some(LivenessEvent::Probe)
        );
        assert_eq!(
            l.handle_timeout(t0 + secs(14.01)),
            Some(LivenessEvent::Dead {
                silent_for: secs(10.0)
            })
        );
    }

    #[test]
    fn chatty_peer_is_never_probed() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, config());
        for i in 1..100 {
            let now = t0 + secs(i as f64);
            l.on_inbound(now);
            assert_eq!(l.handle_timeout(now), None);
            assert_eq!(l.poll_timeout(), Some(now + secs(4.0)));
        }
    }

    #[test]
    fn a_slightly_late_timer_declares_dead_with_the_true_silence() {
        // Woken 1.5 s late (within half a ping interval): a verdict, with the real silence.
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, config());
        assert_eq!(
            l.handle_timeout(t0 + secs(11.5)),
            Some(LivenessEvent::Dead {
                silent_for: secs(11.5)
            })
        );
    }

    #[test]
    fn a_caller_stalled_past_the_deadline_probes_before_any_verdict() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, config());
        // The process slept from before the deadline (10 s) until 12.5 s.
        assert_eq!(
            l.handle_timeout(t0 + secs(12.5)),
            Some(LivenessEvent::Stalled { late_by: secs(2.5) })
        );
        assert!(!l.is_dead());
        // Probed harder meanwhile, and no verdict before one more ping interval (16.5 s).
        let mut probe = l.clone();
        assert_eq!(probe.poll_timeout(), Some(t0 + secs(13.0)));
        let mut at = t0 + secs(13.0);
        while at < t0 + secs(16.5) {
            assert_eq!(probe.handle_timeout(at), Some(LivenessEvent::Probe));
            at = probe.poll_timeout().expect("alive");
        }
        assert_eq!(at, t0 + secs(16.5));
        // The reply that was waiting in our buffers is read now: alive.
        l.on_inbound(t0 + secs(12.6));
        assert_eq!(l.poll_timeout(), Some(t0 + secs(16.6)));
        assert_eq!(
            l.handle_timeout(t0 + secs(16.6)),
            Some(LivenessEvent::Probe)
        );
    }

    #[test]
    fn a_stall_buys_one_grace_per_silence_so_a_dead_peer_is_still_reaped() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, config());
        assert!(matches!(
            l.handle_timeout(t0 + secs(13.0)),
            Some(LivenessEvent::Stalled { .. })
        ));
        // Late again at the end of the grace: this time the verdict comes.
        assert_eq!(
            l.handle_timeout(t0 + secs(20.0)),
            Some(LivenessEvent::Dead {
                silent_for: secs(20.0)
            })
        );
        // After new activity a later stall gets its own grace.
        let mut l = Liveness::new(t0, config());
        assert!(matches!(
            l.handle_timeout(t0 + secs(13.0)),
            Some(LivenessEvent::Stalled { .. })
        ));
        l.on_inbound(t0 + secs(14.0));
        assert!(matches!(
            l.handle_timeout(t0 + secs(27.0)),
            Some(LivenessEvent::Stalled { .. })
        ));
    }

    #[test]
    fn a_revived_peer_is_watched_again_from_then_on() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, config());
        assert!(matches!(
            l.handle_timeout(t0 + secs(10.0)),
            Some(LivenessEvent::Dead { .. })
        ));
        l.revive(t0 + secs(10.1));
        assert!(!l.is_dead());
        assert_eq!(l.poll_timeout(), Some(t0 + secs(14.1)));
    }

    #[test]
    fn out_of_order_activity_reports_do_not_move_time_back() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, config());
        l.on_inbound(t0 + secs(5.0));
        l.on_inbound(t0 + secs(3.0));
        assert_eq!(l.last_inbound(), t0 + secs(5.0));
        assert_eq!(l.silent_for(t0 + secs(4.0)), Duration::ZERO);
    }

    #[test]
    fn early_call_is_harmless() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, config());
        assert_eq!(l.handle_timeout(t0 + secs(1.0)), None);
        assert_eq!(l.poll_timeout(), Some(t0 + secs(4.0)));
    }

    #[test]
    fn timers_move_up_to_a_shared_grid_never_earlier_and_less_than_a_step_later() {
        let epoch = Instant::now();
        let grid = Duration::from_millis(100);
        let at = |ms: u64| epoch + Duration::from_millis(ms);
        assert_eq!(on_grid(at(1), epoch, grid), at(100));
        assert_eq!(on_grid(at(99), epoch, grid), at(100));
        assert_eq!(
            on_grid(at(100), epoch, grid),
            at(100),
            "on the grid already"
        );
        assert_eq!(on_grid(at(4_001), epoch, grid), at(4_100));
        // Two connections whose deadlines differ by less than a step wake together.
        assert_eq!(
            on_grid(at(4_010), epoch, grid),
            on_grid(at(4_090), epoch, grid)
        );
        // Before the grid's start (cannot happen in the gateway): left as it is.
        let before = epoch - Duration::from_millis(5);
        assert_eq!(on_grid(before, epoch, grid), before);
    }

    #[test]
    fn the_timer_grid_is_a_small_fraction_of_the_ping_interval() {
        let grid = |timeout: f64, interval: f64| {
            LivenessConfig::new(secs(timeout), secs(interval))
                .expect("valid")
                .timer_grid()
        };
        assert_eq!(grid(10.0, 4.0), Duration::from_millis(100));
        assert_eq!(grid(2.0, 0.8), Duration::from_millis(25));
        assert_eq!(grid(0.5, 0.1), Duration::from_millis(5));
    }
}
