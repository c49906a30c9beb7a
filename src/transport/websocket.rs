//! WebSocket adapter: one binary message = one ClientFrame / ServerFrame.
//!
//! Liveness probes are control-frame Pings (RFC 6455 §5.5.2), which browsers answer in their
//! network stack, so a frozen tab still proves it is alive. Their payload carries the send
//! time, so each Pong also yields a round-trip time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use super::tcp_liveness::TcpWitness;
use super::{INBOUND_QUEUE, Inbound, Link, Outbound, READ_CHUNK, close_code};
use crate::core::Transport;
use crate::core::codec::{FrameProblem, decode_client_frame, encode_server_frame};
use crate::core::reason_label;
use crate::proto::Reason;

/// tungstenite settings: refuse oversized input before buffering it, and keep the buffers
/// small (signaling frames are small; tungstenite's 128 KiB defaults cost ~150 KiB per idle
/// connection).
pub fn config(max_frame_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_frame_bytes))
        .max_frame_size(Some(max_frame_bytes))
        .read_buffer_size(READ_CHUNK)
        .write_buffer_size(0)
}

/// Starts the reader and writer tasks of an upgraded WebSocket.
pub fn spawn<S>(
    ws: WebSocketStream<S>,
    peer: SocketAddr,
    max_frame_bytes: usize,
    outbox_capacity: usize,
    tcp_witness: Option<TcpWitness>,
) -> Link
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, stream) = ws.split();
    let (inbound_tx, inbound) = mpsc::channel(INBOUND_QUEUE);
    let (outbox, outbox_rx) = mpsc::channel(outbox_capacity);
    let (written_tx, written) = watch::channel(0);
    let epoch = Instant::now();
    Link {
        transport: Transport::WebSocket,
        peer,
        inbound,
        outbox,
        reader: tokio::spawn(read_loop(stream, inbound_tx, max_frame_bytes, epoch)),
        writer: tokio::spawn(write_loop(sink, outbox_rx, written_tx, epoch)),
        written,
        // Every inbound message is reported as it is read.
        unreported_activity: None,
        tcp_witness,
    }
}

async fn read_loop<St>(
    mut stream: St,
    tx: mpsc::Sender<Inbound>,
    max_frame_bytes: usize,
    epoch: Instant,
) where
    St: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    loop {
        let (event, last) = match stream.next().await {
            // A copy of its own: tungstenite hands out a slice of its read buffer, and the
            // frame's `bytes` fields (a signal's data) would be slices of that too, so one held
            // signal would keep the whole buffer alive (up to max_frame_bytes and more, per
            // held signal, when small held frames alternate with large ones).
            Some(Ok(Message::Binary(bytes))) => {
                match decode_client_frame(Bytes::copy_from_slice(&bytes), max_frame_bytes) {
                    Ok(frame) => (Inbound::Frame(Box::new(frame)), false),
                    Err(problem) => (Inbound::Rejected(problem), false),
                }
            }
            Some(Ok(Message::Text(_))) => (
                Inbound::Rejected(FrameProblem::Unsupported {
                    what: "text message (frames are binary protobuf)",
                }),
                false,
            ),
            // tungstenite answers Pings itself.
            Some(Ok(Message::Ping(_) | Message::Frame(_))) => {
                (Inbound::Activity { rtt: None }, false)
            }
            Some(Ok(Message::Pong(payload))) => (
                Inbound::Activity {
                    rtt: probe_rtt(&payload, epoch),
                },
                false,
            ),
            Some(Ok(Message::Close(_))) => (Inbound::Closed(Reason::ClientClosed), true),
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => (
                Inbound::Rejected(FrameProblem::TooLarge {
                    size,
                    max: max_size,
                }),
                true,
            ),
            Some(Err(WsError::ConnectionClosed)) => (Inbound::Closed(Reason::ClientClosed), true),
            Some(Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))) | None => {
                (Inbound::Closed(Reason::ConnectionLost), true)
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "websocket read failed");
                (Inbound::Closed(Reason::ConnectionLost), true)
            }
        };
        if tx.send(event).await.is_err() || last {
            return;
        }
    }
}

async fn write_loop<Si>(
    mut sink: Si,
    mut rx: mpsc::Receiver<Outbound>,
    written: watch::Sender<u64>,
    epoch: Instant,
) where
    Si: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    while let Some(out) = rx.recv().await {
        let written = match out {
            Outbound::Frame(frame) => {
                sink.feed(Message::Binary(encode_server_frame(&frame)))
                    .await
            }
            Outbound::Checkpoint(mark) => {
                // Written means handed to the socket, not sitting in our buffers.
                let flushed = sink.flush().await;
                written.send_replace(mark);
                flushed
            }
            Outbound::Probe => sink.feed(Message::Ping(probe_payload(epoch))).await,
            Outbound::Close(reason) => {
                let frame = CloseFrame {
                    code: CloseCode::from(close_code(reason)),
                    reason: reason_label(reason).into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                let _ = sink.close().await;
                return;
            }
        };
        // Batch: flush once the queue is drained, not after every frame.
        if written.is_err() || (rx.is_empty() && sink.flush().await.is_err()) {
            return;
        }
    }
}

/// Nanoseconds since the connection's epoch, big-endian.
fn probe_payload(epoch: Instant) -> Bytes {
    let nanos = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
    Bytes::copy_from_slice(&nanos.to_be_bytes())
}

/// The round trip of one of our probes; `None` for pongs we did not ask for (or forged).
fn probe_rtt(payload: &[u8], epoch: Instant) -> Option<Duration> {
    let sent = Duration::from_nanos(u64::from_be_bytes(payload.try_into().ok()?));
    let rtt = epoch.elapsed().checked_sub(sent)?;
    (rtt < Duration::from_secs(60)).then_some(rtt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_payload_round_trips_into_an_rtt_and_rejects_foreign_pongs() {
        let epoch = Instant::now() - Duration::from_secs(5);
        let payload = probe_payload(epoch);
        let rtt = probe_rtt(&payload, epoch).expect("our probe");
        assert!(rtt < Duration::from_secs(1));
        assert_eq!(probe_rtt(b"hello", epoch), None);
        let future = (u64::MAX / 2).to_be_bytes();
        assert_eq!(probe_rtt(&future, epoch), None);
    }

    #[test]
    fn close_codes_are_distinct_per_gateway_reason() {
        let reasons = [
            Reason::ServerShutdown,
            Reason::ProtocolError,
            Reason::Superseded,
            Reason::SlowConsumer,
            Reason::HelloTimeout,
            Reason::LivenessTimeout,
            Reason::Suspended,
            Reason::TokenExpired,
            Reason::Disconnected,
            Reason::GatewayFull,
        ];
        let mut codes: Vec<u16> = reasons.iter().map(|r| close_code(*r)).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), reasons.len());
    }
}
