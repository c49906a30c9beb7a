//! Building client frames so that the benchmarks keep compiling when the wire contract gains
//! fields (a new field gets its default).

use bytes::Bytes;
use signalgate::proto::{self, Ack, ClientFrame, client_frame, signal};

/// `ClientFrame { id, msg }`, every other field at its default.
// `..Default::default()` is there for the fields the contract does not have yet.
#[allow(clippy::needless_update)]
pub fn client_frame(id: u64, msg: client_frame::Msg) -> ClientFrame {
    ClientFrame {
        id,
        msg: Some(msg),
        ..Default::default()
    }
}

/// A `Signal` carrying application bytes to `to` in `room`.
#[allow(clippy::needless_update)]
pub fn data_signal(id: u64, room: &str, to: &str, data: Bytes) -> ClientFrame {
    client_frame(
        id,
        client_frame::Msg::Signal(proto::Signal {
            room: room.into(),
            to: to.into(),
            payload: Some(signal::Payload::Data(data)),
            ..Default::default()
        }),
    )
}

/// `Ack { seq }`: everything up to `seq` was processed.
#[allow(clippy::needless_update)]
pub fn ack(id: u64, seq: u64) -> ClientFrame {
    client_frame(
        id,
        client_frame::Msg::Ack(Ack {
            seq,
            ..Default::default()
        }),
    )
}
