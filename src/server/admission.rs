//! Admission of new connections, before anything costly happens: at most so many connections
//! open at once and so many new ones per second from one source address (TCP and QUIC
//! together), and at most so many connections in their handshake (TLS + WebSocket upgrade,
//! QUIC handshake + WebTransport session request) in total.
//!
//! A TCP connection that finds every handshake slot taken waits for one, first come first
//! served, in a bounded queue ([`Admission::admit_or_queue`]): in a reconnect storm, resetting
//! it would only bring it back (another accept, another TLS attempt) and turn the storm into a
//! retry storm, measured at 3.8 attempts per client and 6.2 s instead of 3.6 s for 10,000
//! clients (bench/storm.py). Its handshake deadline runs while it waits. QUIC connections are
//! refused at once (a client's QUIC stack retries by itself, and Retry already screens them).
//!
//! A source is an IPv4 address, or an IPv6 /64 (one subscriber's prefix: a host that owns a
//! /64 can use any of its 2^64 addresses). Loopback is a source like any other. The per-source
//! table stays bounded: an entry goes as soon as its source has no connection open and a full
//! bucket of new-connection tokens, a sweep drops such entries every few seconds, and a table
//! at [`MAX_TRACKED_SOURCES`] refuses sources it does not know yet.
//!
//! [`Table`] is the rule, with the clock passed in (unit-tested with made-up instants);
//! [`Admission`] wraps it for the listeners and hands out permits that release themselves.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
use crate::core::rate_limit::TokenBucket;
use crate::metrics;

/// Sources tracked at most (each entry is a few dozen bytes).
pub const MAX_TRACKED_SOURCES: usize = 100_000;
/// How often entries whose source went quiet are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Why a connection was not admitted; [`Refusal::label`] is the metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source has `max_connections_per_ip` connections open.
    PerIpLimit,
    /// The source used up its new-connection tokens.
    PerIpRate,
    /// The per-source table is full of sources with connections open.
    PerIpTable,
    /// `max_handshakes` connections are in their handshake.
    Handshakes,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::PerIpLimit => "per_ip_limit",
            Refusal::PerIpRate => "per_ip_rate",
            Refusal::PerIpTable => "per_ip_table",
            Refusal::Handshakes => "handshakes",
        }
    }
}

/// The limits, from the configuration. 0 turns a per-source limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_ip: u32,
    pub per_ip_per_sec: u32,
    pub handshakes: u32,
    /// TCP connections that may wait for a handshake slot.
    pub handshake_queue: u32,
    pub max_tracked: usize,
}

impl Limits {
    pub fn from_config(config: &Config) -> Limits {
        Limits {
            per_ip: config.max_connections_per_ip,
            per_ip_per_sec: config.new_connections_per_ip_per_sec,
            handshakes: config.max_handshakes,
            handshake_queue: config.handshake_queue,
            max_tracked: MAX_TRACKED_SOURCES,
        }
    }

    fn tracks_sources(&self) -> bool {
        self.per_ip > 0 || self.per_ip_per_sec > 0
    }

    /// A source's new-connection bucket: the rate, bursts of twice the rate.
    fn bucket(&self, now: Instant) -> TokenBucket {
        TokenBucket::new(
            now,
            self.per_ip_per_sec,
            self.per_ip_per_sec.saturating_mul(2),
        )
    }
}

/// An IPv4 address, or an IPv6 /64 (IPv4-mapped IPv6 addresses count as IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(u32),
    V6Prefix(u64),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => Source::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    open: u32,
    new_connections: TokenBucket,
}

impl Entry {
    /// Whether the entry says nothing a fresh one would not: no connection open, bucket full.
    fn idle(&self, now: Instant) -> bool {
        self.open == 0 && self.new_connections.is_full(now)
    }
}

/// The per-source rule, without a clock of its own.
#[derive(Debug)]
pub struct Table {
    limits: Limits,
    entries: HashMap<Source, Entry>,
    last_sweep: Option<Instant>,
}

impl Table {
    pub fn new(limits: Limits) -> Table {
        Table {
            limits,
            entries: HashMap::new(),
            last_sweep: None,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Connections `source` has open now.
    #[cfg(test)]
    fn open(&self, source: Source) -> u32 {
        self.entries.get(&source).map_or(0, |e| e.open)
    }

    /// A new connection from `source` at `now`: counted if admitted.
    pub fn admit(&mut self, source: Source, now: Instant) -> Result<(), Refusal> {
        if self
            .last_sweep
            .is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY)
        {
            self.sweep(now);
        }
        if !self.entries.contains_key(&source) && self.entries.len() >= self.limits.max_tracked {
            self.sweep(now);
            if self.entries.len() >= self.limits.max_tracked {
                return Err(Refusal::PerIpTable);
            }
        }
        let limits = self.limits;
        let mut entry = self.entries.get(&source).copied().unwrap_or(Entry {
            open: 0,
            new_connections: limits.bucket(now),
        });
        if limits.per_ip > 0 && entry.open >= limits.per_ip {
            return Err(Refusal::PerIpLimit);
        }
        if limits.per_ip_per_sec > 0 && !entry.new_connections.try_take(now) {
            return Err(Refusal::PerIpRate);
        }
        entry.open += 1;
        self.entries.insert(source, entry);
        Ok(())
    }

    /// A connection from `source` ended at `now`.
    pub fn release(&mut self, source: Source, now: Instant) {
        let Some(entry) = self.entries.get_mut(&source) else {
            return;
        };
        entry.open = entry.open.saturating_sub(1);
        if entry.idle(now) {
            self.entries.remove(&source);
        }
    }

    /// Drops every entry that says nothing any more.
    pub fn sweep(&mut self, now: Instant) {
        self.entries.retain(|_, entry| !entry.idle(now));
        self.last_sweep = Some(now);
    }
}

/// What the listeners share: the per-source table, the handshake slots and their queue.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    table: Mutex<Table>,
    /// One permit per handshake slot; fair, so queued connections get slots in order.
    handshakes: Arc<Semaphore>,
    /// TCP connections waiting for a slot.
    waiting: AtomicU32,
}

/// Counts one connection against its source until dropped (keep it as long as the connection).
#[derive(Debug)]
pub struct ConnectionPermit {
    admission: Arc<Admission>,
    source: Option<Source>,
}

/// Holds one handshake slot until dropped.
#[derive(Debug)]
pub struct HandshakePermit {
    admission: Arc<Admission>,
    _slot: OwnedSemaphorePermit,
}

/// Both permits of an admitted connection.
#[derive(Debug)]
pub struct Admitted {
    pub connection: ConnectionPermit,
    pub handshake: HandshakePermit,
}

/// A TCP connection's admission: a slot now, or a place in the queue for one.
#[derive(Debug)]
pub enum Admittance {
    Now(Admitted),
    Queued(Queued),
}

/// A TCP connection waiting for a handshake slot ([`Queued::slot`]); dropping it leaves the
/// queue.
#[derive(Debug)]
pub struct Queued {
    connection: ConnectionPermit,
    place: QueuePlace,
}

/// Counts one connection in the queue until dropped.
#[derive(Debug)]
struct QueuePlace {
    admission: Arc<Admission>,
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            table: Mutex::new(Table::new(limits)),
            handshakes: Arc::new(Semaphore::new(limits.handshakes as usize)),
            waiting: AtomicU32::new(0),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a new connection from `ip` with a handshake slot, or says why not. Nothing is
    /// counted on refusal (a refused connection costs its source no token of the rate either,
    /// except when only the handshake limit refused it).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        let connection = self.admit_source(ip)?;
        // `connection` is dropped on refusal: the source's count goes back.
        self.take_slot(connection).ok_or(Refusal::Handshakes)
    }

    /// As [`admit`](Self::admit), but when every slot is taken the connection may wait for
    /// one, if the queue has room.
    pub fn admit_or_queue(self: &Arc<Self>, ip: IpAddr) -> Result<Admittance, Refusal> {
        let connection = self.admit_source(ip)?;
        // No jumping the queue: a free slot goes to those already waiting.
        if self.waiting.load(Ordering::Acquire) == 0
            && let Ok(slot) = self.handshakes.clone().try_acquire_owned()
        {
            return Ok(Admittance::Now(self.admitted(connection, slot)));
        }
        let max = self.limits.handshake_queue;
        let placed = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        match placed {
            Ok(before) => {
                metrics::handshakes_waiting(before + 1);
                let place = QueuePlace {
                    admission: self.clone(),
                };
                Ok(Admittance::Queued(Queued { connection, place }))
            }
            Err(_) => Err(Refusal::Handshakes),
        }
    }

    /// The per-source rule: a permit that counts the connection against its source.
    fn admit_source(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let source = if self.limits.tracks_sources() {
            let source = Source::from(ip);
            let tracked = {
                let mut table = self.table();
                table.admit(source, Instant::now()).map(|()| table.len())
            };
            metrics::tracked_sources(tracked.unwrap_or_else(|_| self.table().len()));
            tracked?;
            Some(source)
        } else {
            None
        };
        Ok(ConnectionPermit {
            admission: self.clone(),
            source,
        })
    }

    fn take_slot(self: &Arc<Self>, connection: ConnectionPermit) -> Option<Admitted> {
        let slot = self.handshakes.clone().try_acquire_owned().ok()?;
        Some(self.admitted(connection, slot))
    }

    fn admitted(
        self: &Arc<Self>,
        connection: ConnectionPermit,
        slot: OwnedSemaphorePermit,
    ) -> Admitted {
        metrics::handshakes_in_progress(self.handshakes_in_progress());
        Admitted {
            connection,
            handshake: HandshakePermit {
                admission: self.clone(),
                _slot: slot,
            },
        }
    }

    /// Connections in their handshake now.
    pub fn handshakes_in_progress(&self) -> u32 {
        let free = u32::try_from(self.handshakes.available_permits()).unwrap_or(u32::MAX);
        self.limits.handshakes.saturating_sub(free)
    }

    /// Half the handshake slots or more are taken: QUIC clients must prove their address
    /// (Retry) before they get one, so that spoofed Initials cannot take the rest.
    pub fn under_load(&self) -> bool {
        u64::from(self.handshakes_in_progress()) * 2 >= u64::from(self.limits.handshakes)
    }
}

impl Queued {
    /// Waits for a handshake slot, in the order the connections came. Cancel-safe: dropped
    /// while waiting, the connection leaves the queue and takes no slot.
    pub async fn slot(self) -> Option<Admitted> {
        let Queued { connection, place } = self;
        let admission = place.admission.clone();
        // Never closed, so acquiring fails only if it was (then: no slot).
        let slot = admission.handshakes.clone().acquire_owned().await.ok()?;
        drop(place);
        Some(admission.admitted(connection, slot))
    }
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        let before = self.admission.waiting.fetch_sub(1, Ordering::AcqRel);
        metrics::handshakes_waiting(before.saturating_sub(1));
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        if let Some(source) = self.source {
            let len = {
                let mut table = self.admission.table();
                table.release(source, Instant::now());
                table.len()
            };
            metrics::tracked_sources(len);
        }
    }
}

impl Drop for HandshakePermit {
    fn drop(&mut self) {
        // The slot itself is given back right after this (the field is dropped next).
        let in_progress = self.admission.handshakes_in_progress().saturating_sub(1);
        metrics::handshakes_in_progress(in_progress);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_ip: u32, per_sec: u32) -> Limits {
        Limits {
            per_ip,
            per_ip_per_sec: per_sec,
            handshakes: 8,
            handshake_queue: 0,
            max_tracked: 4,
        }
    }

    fn ip(text: &str) -> Source {
        Source::from(text.parse::<IpAddr>().expect("address"))
    }

    fn secs(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    #[test]
    fn concurrent_connections_per_source_are_capped_and_released() {
        let t0 = Instant::now();
        let mut table = Table::new(limits(2, 0));
        let a = ip("127.0.0.1");
        assert_eq!(table.admit(a, t0), Ok(()));
        assert_eq!(table.admit(a, t0), Ok(()));
        assert_eq!(table.admit(a, t0), Err(Refusal::PerIpLimit));
        assert_eq!(table.admit(ip("127.0.0.2"), t0), Ok(()), "another source");
        table.release(a, t0);
        assert_eq!(table.admit(a, t0), Ok(()));
        assert_eq!(table.open(a), 2);
    }

    #[test]
    fn new_connections_per_second_have_a_burst_of_twice_the_rate() {
        let t0 = Instant::now();
        let mut table = Table::new(limits(0, 2));
        let a = ip("10.0.0.1");
        for _ in 0..4 {
            assert_eq!(table.admit(a, t0), Ok(()));
        }
        assert_eq!(table.admit(a, t0), Err(Refusal::PerIpRate));
        assert_eq!(table.admit(a, secs(t0, 0.4)), Err(Refusal::PerIpRate));
        assert_eq!(
            table.admit(a, secs(t0, 0.5)),
            Ok(()),
            "one token after 0.5 s"
        );
        assert_eq!(table.admit(a, secs(t0, 0.5)), Err(Refusal::PerIpRate));
        // Refusals cost no token: after 1 s more, two connections again.
        assert_eq!(table.admit(a, secs(t0, 1.5)), Ok(()));
        assert_eq!(table.admit(a, secs(t0, 1.5)), Ok(()));
        assert_eq!(table.admit(a, secs(t0, 1.5)), Err(Refusal::PerIpRate));
    }

    #[test]
    fn ipv6_sources_are_their_64_prefix_and_mapped_ipv4_is_ipv4() {
        assert_eq!(ip("2001:db8:1:2::1"), ip("2001:db8:1:2:ffff::9"));
        assert_ne!(ip("2001:db8:1:2::1"), ip("2001:db8:1:3::1"));
        assert_eq!(ip("::ffff:192.0.2.7"), ip("192.0.2.7"));
        let t0 = Instant::now();
        let mut table = Table::new(limits(1, 0));
        assert_eq!(table.admit(ip("2001:db8::1"), t0), Ok(()));
        assert_eq!(
            table.admit(ip("2001:db8::2"), t0),
            Err(Refusal::PerIpLimit),
            "the same /64"
        );
    }

    #[test]
    fn the_table_forgets_quiet_sources_and_stays_bounded() {
        let t0 = Instant::now();
        let mut table = Table::new(limits(8, 1));
        // A source with nothing open and a full bucket is forgotten at once.
        let a = ip("192.0.2.1");
        table.admit(a, t0).expect("admitted");
        table.release(a, secs(t0, 3.0));
        assert!(table.is_empty(), "{table:?}");
        // Sources whose bucket is not full yet are swept later.
        for n in 1..=4 {
            let source = ip(&format!("192.0.2.{n}"));
            table.admit(source, t0).expect("admitted");
            table.release(source, t0);
        }
        assert_eq!(table.len(), 4);
        // Full: a new source waits until a sweep can drop someone.
        assert_eq!(
            table.admit(ip("192.0.2.5"), secs(t0, 0.5)),
            Err(Refusal::PerIpTable)
        );
        assert_eq!(table.admit(ip("192.0.2.5"), secs(t0, 2.5)), Ok(()));
        assert_eq!(table.len(), 1, "the quiet ones were swept");
        // Sources with connections open are never dropped.
        let mut held = Table::new(limits(8, 0));
        for n in 1..=4 {
            held.admit(ip(&format!("198.51.100.{n}")), t0)
                .expect("admitted");
        }
        assert_eq!(
            held.admit(ip("198.51.100.5"), secs(t0, 60.0)),
            Err(Refusal::PerIpTable)
        );
        assert_eq!(held.len(), 4);
        assert_eq!(
            held.admit(ip("198.51.100.1"), secs(t0, 60.0)),
            Ok(()),
            "known source"
        );
    }

    #[test]
    fn every_refusal_has_a_registered_metric_label() {
        for refusal in [
            Refusal::PerIpLimit,
            Refusal::PerIpRate,
            Refusal::PerIpTable,
            Refusal::Handshakes,
        ] {
            assert!(
                metrics::REFUSAL_REASONS_LIMITS.contains(&refusal.label()),
                "{refusal:?}"
            );
        }
    }

    #[test]
    fn permits_release_what_they_hold() {
        let admission = Admission::new(Limits {
            per_ip: 1,
            per_ip_per_sec: 0,
            handshakes: 2,
            handshake_queue: 0,
            max_tracked: 16,
        });
        let local: IpAddr = "127.0.0.1".parse().expect("ip");
        let first = admission.admit(local).expect("admitted");
        assert_eq!(admission.admit(local).map(|_| ()), Err(Refusal::PerIpLimit));
        assert!(admission.under_load(), "1 of 2 handshakes");
        drop(first.handshake);
        assert_eq!(admission.handshakes_in_progress(), 0);
        assert_eq!(
            admission.admit(local).map(|_| ()),
            Err(Refusal::PerIpLimit),
            "still connected"
        );
        drop(first.connection);
        let a = admission.admit(local).expect("admitted again");
        let b = admission
            .admit("127.0.0.2".parse().expect("ip"))
            .expect("second handshake");
        assert_eq!(
            admission
                .admit("127.0.0.3".parse().expect("ip"))
                .map(|_| ()),
            Err(Refusal::Handshakes)
        );
        // The refused connection did not stay counted against its source.
        drop((a, b));
        admission
            .admit("127.0.0.3".parse().expect("ip"))
            .expect("admitted once slots are free");
    }

    fn queue_limits(handshakes: u32, handshake_queue: u32) -> Limits {
        Limits {
            per_ip: 0,
            per_ip_per_sec: 0,
            handshakes,
            handshake_queue,
            max_tracked: 4,
        }
    }

    fn is_pending<F: Future + Unpin>(future: &mut F) -> bool {
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        std::pin::Pin::new(future).poll(&mut context).is_pending()
    }

    fn localhost() -> IpAddr {
        IpAddr::from([127, 0, 0, 1])
    }

    #[tokio::test]
    async fn beyond_the_handshake_slots_tcp_waits_in_order_until_the_queue_is_full() {
        let admission = Admission::new(queue_limits(1, 2));
        let Ok(Admittance::Now(first)) = admission.admit_or_queue(localhost()) else {
            panic!("a free slot is taken at once");
        };
        let Ok(Admittance::Queued(second)) = admission.admit_or_queue(localhost()) else {
            panic!("no free slot: queued");
        };
        let Ok(Admittance::Queued(third)) = admission.admit_or_queue(localhost()) else {
            panic!("queued behind the second");
        };
        assert_eq!(
            admission.admit_or_queue(localhost()).err(),
            Some(Refusal::Handshakes),
            "the queue is full"
        );
        // QUIC does not wait, and does not jump the queue either.
        assert_eq!(
            admission.admit(localhost()).err(),
            Some(Refusal::Handshakes)
        );

        let mut second = Box::pin(second.slot());
        let mut third = Box::pin(third.slot());
        assert!(
            is_pending(&mut second) && is_pending(&mut third),
            "every slot is taken"
        );
        drop(first);
        let second = second
            .await
            .expect("the first in the queue gets the freed slot");
        assert!(is_pending(&mut third), "one slot, one handshake");
        assert_eq!(admission.handshakes_in_progress(), 1);
        drop(second);
        let third = third.await.expect("then the next");
        drop(third);
        assert_eq!(admission.handshakes_in_progress(), 0);
        assert!(matches!(
            admission.admit_or_queue(localhost()),
            Ok(Admittance::Now(_))
        ));
    }

    #[tokio::test]
    async fn a_connection_that_leaves_the_queue_takes_no_slot_and_frees_its_place() {
        let admission = Admission::new(queue_limits(1, 1));
        let Ok(Admittance::Now(first)) = admission.admit_or_queue(localhost()) else {
            panic!("a free slot is taken at once");
        };
        let Ok(Admittance::Queued(gone)) = admission.admit_or_queue(localhost()) else {
            panic!("queued");
        };
        assert!(admission.admit_or_queue(localhost()).is_err(), "queue full");
        // Its deadline ran out while it waited.
        let waited = tokio::time::timeout(Duration::from_millis(10), gone.slot()).await;
        assert!(waited.is_err());
        let Ok(Admittance::Queued(next)) = admission.admit_or_queue(localhost()) else {
            panic!("its place is free again");
        };
        drop(first);
        assert!(
            next.slot().await.is_some(),
            "the freed slot goes to the one still waiting"
        );
    }
}
