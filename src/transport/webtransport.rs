//! WebTransport adapter (HTTP/3 over QUIC, crate `wtransport`).
//!
//! The client opens one bidirectional stream right after the session is established; frames
//! on it are varint-length-delimited protobuf. Liveness uses the same model as WebSocket:
//! QUIC keep-alives (every `ping_interval` after the last packet received) and the driver's
//! probes (an empty WebTransport datagram) are what the browser's network stack answers (with
//! ACKs). Life is a QUIC frame that decrypted and authenticated — never a bare UDP datagram,
//! which anyone who saw the connection ID can send. The adapter samples quinn's count of
//! received frames and reports activity to the connection driver, which declares death after
//! `liveness_timeout` of silence exactly as for WebSocket. QUIC's own idle timeout is set a
//! little longer, as a backstop only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use wtransport::error::{ConnectionError, StreamReadError};
use wtransport::{Connection, RecvStream, SendStream, ServerConfig, VarInt};

use super::{INBOUND_QUEUE, Inbound, Link, Outbound, READ_CHUNK, UnreportedActivity, close_code};
use crate::config::Config;
use crate::core::Transport;
use crate::core::codec::{
    FrameProblem, LengthDelimitedDecoder, decode_client_frame, encode_server_frame_length_delimited,
};
use crate::core::liveness::LivenessConfig;
use crate::core::reason_label;
use crate::metrics;
use crate::proto::Reason;
use crate::tls::{LiveCertificate, TlsError};

/// Stream error code used to refuse a second stream.
const REFUSED_STREAM: u32 = 0x5347_0001;

/// How often quinn's receive counter is sampled: the precision of the silence measurement.
pub fn activity_sampling(liveness: &LivenessConfig) -> Duration {
    (liveness.timeout() / 40).clamp(Duration::from_millis(25), Duration::from_millis(250))
}

/// Kernel receive/send buffer of the QUIC socket. All sessions share one UDP socket; with
/// the default (~200 KiB) a burst — thousands of clients reconnecting at once — overflows it,
/// and established sessions whose packets are dropped look silent. Measured with 19,000
/// sessions: 437,461 datagrams dropped and 9,514 live sessions declared dead with the default,
/// 55,000 dropped and 19 declared dead with 8 MiB. The kernel caps it at net.core.rmem_max.
const UDP_BUFFER_BYTES: usize = 8 * 1024 * 1024;

/// The UDP socket for the QUIC endpoint at `addr`, with large kernel buffers.
pub fn bind_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    for (what, result) in [
        ("receive", socket.set_recv_buffer_size(UDP_BUFFER_BYTES)),
        ("send", socket.set_send_buffer_size(UDP_BUFFER_BYTES)),
    ] {
        if let Err(error) = result {
            tracing::warn!(%error, "cannot enlarge the QUIC socket's {what} buffer");
        }
    }
    if let Ok(size) = socket.recv_buffer_size()
        && size < UDP_BUFFER_BYTES
    {
        tracing::info!(
            bytes = size,
            "QUIC socket receive buffer capped by net.core.rmem_max; raise it for large reconnect bursts"
        );
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The QUIC server configuration: our certificate with ALPN h3, keep-alives every
/// `ping_interval`, the idle backstop, migration allowed, on `socket`; the transport sized
/// for signaling ([`transport_config`]) and connection attempts bounded before they are
/// accepted ([`INCOMING_BUFFER_BYTES`]).
pub fn server_config(
    socket: std::net::UdpSocket,
    certificate: &Arc<LiveCertificate>,
    config: &Config,
) -> Result<ServerConfig, TlsError> {
    let liveness = &config.hub.liveness;
    let tls = certificate.quic_server_config(vec![b"h3".to_vec()])?;
    let transport = transport_config(config.hub.limits.max_frame_bytes);
    let mut server = ServerConfig::builder()
        .with_bind_socket(socket)
        .with_custom_tls_and_transport(tls, transport)
        .max_idle_timeout(Some(liveness.transport_backstop()))
        .expect("the idle timeout is far below QUIC's 2^62 ms limit")
        .keep_alive_interval(Some(liveness.ping_interval()))
        .allow_migration(true)
        .build();
    let max_incoming = usize::try_from(config.max_handshakes)
        .unwrap_or(usize::MAX)
        .saturating_mul(2);
    server
        .quic_config_mut()
        .max_incoming(max_incoming)
        .incoming_buffer_size(INCOMING_BUFFER_BYTES)
        .incoming_buffer_size_total(INCOMING_BUFFER_TOTAL_BYTES);
    Ok(server)
}

/// Packets buffered for one connection attempt not yet admitted (quinn: 10 MiB), and for all
/// (quinn: 100 MiB). Attempts are admitted or refused as they come, so this is only a bound.
pub const INCOMING_BUFFER_BYTES: u64 = 64 * 1024;
pub const INCOMING_BUFFER_TOTAL_BYTES: u64 = 8 * 1024 * 1024;

/// Bidirectional streams a client may have open: the session's extended-CONNECT request
/// stream, the control stream, and one more so that a second stream is refused with an
/// Error (UNSUPPORTED_FRAME) rather than left blocked without a word.
pub const MAX_BIDI_STREAMS: u32 = 3;
/// Unidirectional streams a client may have open: exactly HTTP/3's own (control, QPACK
/// encoder, QPACK decoder). The protocol uses none of WebTransport's.
pub const MAX_UNI_STREAMS: u32 = 3;
/// Receive window of a stream beyond the largest frame: its length prefix and a few small
/// frames behind it.
pub const STREAM_WINDOW_HEADROOM: usize = 16 * 1024;
/// Inbound datagrams: the smallest size that still announces datagram support (WebTransport
/// over HTTP/3 requires a max_datagram_frame_size > 0, and quinn sends datagrams only with a
/// receive buffer), but into which no HTTP/3 datagram fits: a client's datagram is a protocol
/// violation that closes its connection, and nothing a client sends is ever held here.
pub const DATAGRAM_RECEIVE_BYTES: usize = 1;
/// Outbound datagrams queued: the probes are empty.
pub const DATAGRAM_SEND_BYTES: usize = 4 * 1024;

/// QUIC at what the protocol needs, instead of quinn's bulk-transfer defaults (1.25 MB per
/// stream, an unlimited connection window, 100 streams each way, 1.25 MB of inbound
/// datagrams): the streams above; receive windows of the largest frame plus headroom (per
/// stream) and twice that (per connection), which is all a client can make the gateway hold
/// in stream data; inbound datagrams refused.
pub fn transport_config(max_frame_bytes: usize) -> quinn::TransportConfig {
    let stream_window = max_frame_bytes.saturating_add(STREAM_WINDOW_HEADROOM);
    let varint = |n: usize| {
        quinn::VarInt::from_u64(u64::try_from(n).unwrap_or(u64::MAX)).unwrap_or(quinn::VarInt::MAX)
    };
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(MAX_BIDI_STREAMS.into())
        .max_concurrent_uni_streams(MAX_UNI_STREAMS.into())
        .stream_receive_window(varint(stream_window))
        .receive_window(varint(stream_window.saturating_mul(2)))
        .datagram_receive_buffer_size(Some(DATAGRAM_RECEIVE_BYTES))
        .datagram_send_buffer_size(DATAGRAM_SEND_BYTES);
    transport
}

/// Starts the reader and writer tasks of an established session with its control stream,
/// and has `sampler` report the connection's activity.
pub fn spawn(
    connection: Connection,
    send: SendStream,
    recv: RecvStream,
    config: &Config,
    sampler: &ActivitySampler,
) -> Link {
    let (inbound_tx, inbound) = mpsc::channel(INBOUND_QUEUE);
    let (outbox, outbox_rx) = mpsc::channel(config.outbound_queue);
    let (written_tx, written) = watch::channel(0);
    let reported = sampler.watch(connection.quic_connection().clone(), inbound_tx.clone());
    let quic = connection.quic_connection().clone();
    let sampler = sampler.clone();
    // Only a running sampler can lag behind: a dead one must not keep a silent peer alive.
    let unreported_activity: UnreportedActivity = Box::new(move || {
        sampler.is_running() && authenticated_frames(&quic) != reported.load(Ordering::Relaxed)
    });
    let reader = Reader {
        connection: connection.clone(),
        recv,
        tx: inbound_tx,
        decoder: LengthDelimitedDecoder::new(config.hub.limits.max_frame_bytes),
        max_frame_bytes: config.hub.limits.max_frame_bytes,
    };
    Link {
        transport: Transport::WebTransport,
        peer: connection.remote_address(),
        inbound,
        outbox,
        reader: tokio::spawn(reader.run()),
        writer: tokio::spawn(write_loop(connection, send, outbox_rx, written_tx)),
        written,
        unreported_activity: Some(unreported_activity),
        // QUIC's acknowledgements come from the client's own QUIC stack and are already
        // counted as activity (authenticated frames).
        tcp_witness: None,
    }
}

/// Reports, for every watched connection, that datagrams arrived since the last look (with
/// the RTT estimate now and then) and logs address changes (QUIC migration). One task and
/// one timer for all connections: a timer per connection would cost thousands of wake-ups
/// per second at this precision.
#[derive(Clone)]
pub struct ActivitySampler {
    watch: mpsc::UnboundedSender<Watched>,
    /// When the sampling task last looked, in ms since `epoch` (0: never).
    last_tick: Arc<AtomicU64>,
    epoch: Instant,
    every: Duration,
}

/// QUIC frames received that decrypted and authenticated: proof that the peer itself spoke.
/// (quinn counts UDP datagrams before decryption; a forged or replayed packet carrying the
/// connection ID would count there.)
fn authenticated_frames(quic: &quinn::Connection) -> u64 {
    let f = quic.stats().frame_rx;
    f.acks
        + f.ack_frequency
        + f.crypto
        + f.connection_close
        + f.data_blocked
        + f.datagram
        + u64::from(f.handshake_done)
        + f.immediate_ack
        + f.max_data
        + f.max_stream_data
        + f.max_streams_bidi
        + f.max_streams_uni
        + f.new_connection_id
        + f.new_token
        + f.path_challenge
        + f.path_response
        + f.ping
        + f.reset_stream
        + f.retire_connection_id
        + f.stream_data_blocked
        + f.streams_blocked_bidi
        + f.streams_blocked_uni
        + f.stop_sending
        + f.stream
}

struct Watched {
    quic: quinn::Connection,
    events: mpsc::Sender<Inbound>,
    /// The authenticated-frame counter as last reported (shared with the link's
    /// unreported-activity check).
    received: Arc<AtomicU64>,
    remote: SocketAddr,
    rtt_reported: Option<Instant>,
}

impl ActivitySampler {
    /// Starts the sampling task; it ends when every handle is dropped.
    pub fn spawn(liveness: &LivenessConfig) -> ActivitySampler {
        let (watch, registrations) = mpsc::unbounded_channel();
        let every = activity_sampling(liveness);
        let last_tick = Arc::new(AtomicU64::new(0));
        let epoch = Instant::now();
        let ticks = Ticks {
            last: last_tick.clone(),
            epoch,
        };
        tokio::spawn(sample(
            registrations,
            every,
            liveness.ping_interval(),
            ticks,
        ));
        ActivitySampler {
            watch,
            last_tick,
            epoch,
            every,
        }
    }

    /// Whether the sampling task looked recently (within four sampling periods).
    pub fn is_running(&self) -> bool {
        let last = self.last_tick.load(Ordering::Relaxed);
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let every = u64::try_from(self.every.as_millis()).unwrap_or(u64::MAX);
        last != 0 && now.saturating_sub(last) <= 4 * every.max(1)
    }

    /// Returns the reported frame counter, for [`Link::unreported_activity`].
    fn watch(&self, quic: quinn::Connection, events: mpsc::Sender<Inbound>) -> Arc<AtomicU64> {
        let received = Arc::new(AtomicU64::new(authenticated_frames(&quic)));
        let watched = Watched {
            received: received.clone(),
            remote: quic.remote_address(),
            quic,
            events,
            rtt_reported: None,
        };
        let _ = self.watch.send(watched);
        received
    }
}

/// Where the sampling task records that it is alive.
struct Ticks {
    last: Arc<AtomicU64>,
    epoch: Instant,
}

async fn sample(
    mut registrations: mpsc::UnboundedReceiver<Watched>,
    every: Duration,
    rtt_every: Duration,
    ticks_seen: Ticks,
) {
    let mut watched: Vec<Watched> = Vec::new();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Once every handle is gone no registration can come: stop polling the channel (a
    // closed channel is always ready, and polling it would spin).
    let mut registering = true;
    loop {
        tokio::select! {
            registration = registrations.recv(), if registering => match registration {
                Some(w) => watched.push(w),
                None => registering = false,
            },
            _ = ticks.tick() => {
                let now = Instant::now();
                let since_epoch = now.saturating_duration_since(ticks_seen.epoch).as_millis();
                ticks_seen
                    .last
                    .store(u64::try_from(since_epoch).unwrap_or(u64::MAX).max(1), Ordering::Relaxed);
                watched.retain_mut(|w| w.look(now, rtt_every));
                if !registering && watched.is_empty() {
                    return;
                }
            }
        }
    }
}

impl Watched {
    /// `false` once nobody listens any more.
    fn look(&mut self, now: Instant, rtt_every: Duration) -> bool {
        if self.events.is_closed() {
            return false;
        }
        let remote = self.quic.remote_address();
        if remote != self.remote {
            tracing::info!(from = %self.remote, to = %remote, "client address changed (QUIC migration)");
            metrics::quic_migration();
            self.remote = remote;
        }
        let frames = authenticated_frames(&self.quic);
        if frames == self.received.load(Ordering::Relaxed) {
            return true;
        }
        let rtt_due = self.rtt_reported.is_none_or(|at| now - at >= rtt_every);
        let activity = Inbound::Activity {
            rtt: rtt_due.then(|| self.quic.rtt()),
        };
        match self.events.try_send(activity) {
            Ok(()) => {
                self.received.store(frames, Ordering::Relaxed);
                if rtt_due {
                    self.rtt_reported = Some(now);
                }
                true
            }
            // Frames are queued for the driver: they prove life too. Look again next tick.
            Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

struct Reader {
    connection: Connection,
    recv: RecvStream,
    tx: mpsc::Sender<Inbound>,
    decoder: LengthDelimitedDecoder,
    max_frame_bytes: usize,
}

/// How an end of the QUIC connection without a FIN on the control stream maps onto the
/// core's reasons. (Whatever the reason, the session stays resumable: only Bye leaves.)
fn loss_reason(error: &ConnectionError) -> Reason {
    match error {
        // Only the backstop: the driver normally declares the peer dead first.
        ConnectionError::TimedOut => Reason::LivenessTimeout,
        _ => Reason::ConnectionLost,
    }
}

impl Reader {
    async fn run(mut self) {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut accepting_streams = true;
        loop {
            let event = tokio::select! {
                read = self.recv.read(&mut buf) => match read {
                    Ok(Some(n)) => {
                        self.decoder.extend(&buf[..n]);
                        if !self.forward_frames().await {
                            return;
                        }
                        continue;
                    }
                    // The client finished its side of the control stream: a close handshake
                    // (which says nothing about leaving: only Bye does). Close the session.
                    Ok(None) => {
                        let code = VarInt::from_u32(u32::from(close_code(Reason::ClientClosed)));
                        self.connection.close(code, reason_label(Reason::ClientClosed).as_bytes());
                        Inbound::Closed(Reason::ClientClosed)
                    }
                    Err(StreamReadError::Reset(_)) => Inbound::Closed(Reason::ConnectionLost),
                    Err(_) => Inbound::Closed(loss_reason(&self.connection.closed().await)),
                },
                stream = self.connection.accept_bi(), if accepting_streams => match stream {
                    Ok((mut send, recv)) => {
                        let _ = send.reset(VarInt::from_u32(REFUSED_STREAM));
                        recv.stop(VarInt::from_u32(REFUSED_STREAM));
                        Inbound::Rejected(FrameProblem::Unsupported {
                            what: "a second bidirectional stream (one control stream per session)",
                        })
                    }
                    Err(_) => {
                        accepting_streams = false;
                        continue;
                    }
                },
                stream = self.connection.accept_uni(), if accepting_streams => match stream {
                    Ok(recv) => {
                        recv.stop(VarInt::from_u32(REFUSED_STREAM));
                        Inbound::Rejected(FrameProblem::Unsupported {
                            what: "a unidirectional stream (one bidirectional control stream per session)",
                        })
                    }
                    Err(_) => {
                        accepting_streams = false;
                        continue;
                    }
                },
            };
            let last = matches!(event, Inbound::Closed(_));
            if self.tx.send(event).await.is_err() || last {
                return;
            }
        }
    }

    /// Sends every complete frame to the driver. `false` when reading must stop.
    async fn forward_frames(&mut self) -> bool {
        loop {
            let event = match self.decoder.next_frame() {
                Ok(Some(body)) => match decode_client_frame(body, self.max_frame_bytes) {
                    Ok(frame) => Inbound::Frame(Box::new(frame)),
                    Err(problem) => Inbound::Rejected(problem),
                },
                Ok(None) => return true,
                Err(problem) => {
                    let _ = self.tx.send(Inbound::Rejected(problem)).await;
                    return false;
                }
            };
            if self.tx.send(event).await.is_err() {
                return false;
            }
        }
    }
}

async fn write_loop(
    connection: Connection,
    mut send: SendStream,
    mut rx: mpsc::Receiver<Outbound>,
    written: watch::Sender<u64>,
) {
    while let Some(out) = rx.recv().await {
        match out {
            Outbound::Frame(frame) => {
                if send
                    .write_all(&encode_server_frame_length_delimited(&frame))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // write_all returned: quinn took the bytes (within the stream's flow control).
            Outbound::Checkpoint(mark) => {
                written.send_replace(mark);
            }
            // An empty datagram: an ack-eliciting packet of its own next to QUIC's keep-alive,
            // outside the keep-alive's retransmission back-off. Measured with 1,000 sessions,
            // 30% loss each way and +200 ms RTT for 5 minutes: 244 false deaths with it, 348
            // when it is sent only after an unanswered keep-alive. Peers without datagram
            // support still get the keep-alives.
            Outbound::Probe => {
                let _ = connection.send_datagram([]);
            }
            Outbound::Close(reason) => {
                // Closing the connection discards stream data not yet delivered, so the last
                // frames (a GoAway, an Error) get a few round trips to arrive — but a peer that
                // is gone never acknowledges the FIN, and must not hold the close back. At
                // least 200 ms: a browser delays its ACKs (25 ms) and a loaded one more; with
                // 50 ms a drain's GoAway was lost now and then in headless Chromium.
                let rtt = connection.quic_connection().rtt();
                let patience = (rtt * 4).clamp(Duration::from_millis(200), Duration::from_secs(1));
                let _ = tokio::time::timeout(patience, send.finish()).await;
                let code = VarInt::from_u32(u32::from(close_code(reason)));
                connection.close(code, reason_label(reason).as_bytes());
                // Give the close frame a moment to leave before the handles drop.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quic_windows_follow_the_largest_frame_and_datagrams_get_no_room() {
        let text = format!("{:?}", transport_config(65536));
        for expected in [
            "max_concurrent_bidi_streams: 3,",
            "max_concurrent_uni_streams: 3,",
            "stream_receive_window: 81920,",
            "receive_window: 163840,",
            "datagram_receive_buffer_size: Some(1),",
        ] {
            assert!(text.contains(expected), "{expected} in {text}");
        }
    }

    #[test]
    fn silence_is_measured_finely_enough_for_the_half_second_bound() {
        for (timeout, ping) in [(10.0, 4.0), (2.0, 0.6), (1.0, 0.3), (60.0, 20.0)] {
            let l = LivenessConfig::new(
                Duration::from_secs_f64(timeout),
                Duration::from_secs_f64(ping),
            )
            .expect("valid");
            assert!(activity_sampling(&l) <= Duration::from_millis(250));
            assert!(
                l.transport_backstop() > l.timeout(),
                "QUIC's idle timeout is only a backstop"
            );
        }
    }
}
