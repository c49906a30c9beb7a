//! The properties the two codec targets check (`websocket_frame`, `webtransport_stream`).
//!
//! Both derive the frame-size limit from the first two input bytes, so the fuzzer explores
//! tiny limits (every frame too large), the gateway's range (1 KiB to 16 MiB) and in between.

use bytes::Bytes;
use prost::Message;
use signalgate::core::codec::{FrameProblem, LengthDelimitedDecoder, decode_client_frame};
use signalgate::proto::ClientFrame;

/// Frame-size limits worth hitting exactly: zero, tiny, the gateway's bounds (1 KiB and
/// 16 MiB, `src/config.rs`), the default (64 KiB) and far beyond (4 GiB).
const PRESET_MAX: [usize; 8] = [0, 1, 16, 255, 1024, 64 * 1024, 16 * 1024 * 1024, 1 << 32];

/// The limit chosen by two input bytes: a preset, or 0..=2047.
pub fn max_from(a: u8, b: u8) -> usize {
    let pick = u16::from_le_bytes([a, b]);
    if pick & 0x8000 != 0 {
        PRESET_MAX[usize::from(pick & 7)]
    } else {
        usize::from(pick & 0x7ff)
    }
}

/// Two input bytes that [`max_from`] turns into `max` (for seeds); `None` if `max` is neither
/// a preset nor below 2048.
pub fn max_to_bytes(max: usize) -> Option<[u8; 2]> {
    if let Some(i) = PRESET_MAX.iter().position(|&m| m == max) {
        return Some((0x8000u16 | i as u16).to_le_bytes());
    }
    (max < 2048).then(|| (max as u16).to_le_bytes())
}

/// A decoded frame re-encodes to bytes that decode to the same frame, and encoding is a fixed
/// point from there on (the canonical form).
fn check_round_trip(frame: &ClientFrame) {
    let canonical = frame.encode_to_vec();
    let again = decode_client_frame(Bytes::from(canonical.clone()), usize::MAX)
        .unwrap_or_else(|e| panic!("re-encoded frame does not decode: {e}; frame {frame:?}"));
    assert_eq!(&again, frame, "re-encoded frame decodes to another frame");
    assert_eq!(
        again.encode_to_vec(),
        canonical,
        "encoding is not a fixed point"
    );
    // Length-delimited, as over WebTransport: the same frame comes out of the stream decoder.
    let mut decoder = LengthDelimitedDecoder::new(canonical.len());
    decoder.extend(&frame.encode_length_delimited_to_vec());
    let body = decoder
        .next_frame()
        .expect("own length prefix is valid")
        .expect("the whole frame was given");
    assert_eq!(decoder.pending(), 0);
    let third = decode_client_frame(body, canonical.len()).expect("same bytes as above");
    assert_eq!(&third, frame);
}

/// `websocket_frame`: input = 2 bytes of limit, then one WebSocket binary message.
pub fn check_websocket_frame(data: &[u8]) {
    let [a, b, message @ ..] = data else {
        return;
    };
    let max = max_from(*a, *b);
    let len = message.len();
    match decode_client_frame(Bytes::copy_from_slice(message), max) {
        Ok(frame) => {
            assert!(
                len <= max,
                "a frame of {len} bytes over the limit {max} was accepted"
            );
            assert!(
                frame.msg.is_some(),
                "a frame without a message was accepted"
            );
            check_round_trip(&frame);
        }
        Err(problem @ FrameProblem::TooLarge { size, max: m }) => {
            assert!(
                len > max,
                "{len} bytes within the limit {max} refused as too large"
            );
            assert_eq!((size, m), (len, max), "TooLarge reports other numbers");
            assert!(problem.is_fatal(), "TooLarge must be fatal");
        }
        Err(problem @ FrameProblem::Malformed { .. }) => {
            assert!(
                len <= max,
                "{len} bytes over the limit {max} not refused as too large"
            );
            assert!(!problem.is_fatal(), "a malformed message must not be fatal");
            // Independent judgement: prost refuses the bytes, or they carry no message.
            if let Ok(frame) = ClientFrame::decode(message) {
                assert!(
                    frame.msg.is_none(),
                    "refused a frame prost accepts: {frame:?}"
                );
            }
        }
        Err(other) => panic!("decode_client_frame cannot report {other:?}"),
    }
}

/// What a stream decoder produced, to compare runs with different chunking.
#[derive(Debug, PartialEq)]
enum Event {
    Frame(Bytes),
    Error(FrameProblem),
}

/// Feeds `chunks` one after the other, taking every complete frame after each. After an
/// error, the remaining chunks are still fed and the error must stay (sticky: a broken stream
/// does not heal with more bytes). Returns the events and the bytes left pending.
fn run_decoder<'a>(max: usize, chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<Event>, usize) {
    let mut decoder = LengthDelimitedDecoder::new(max);
    let mut events = Vec::new();
    let mut failed: Option<FrameProblem> = None;
    for chunk in chunks {
        decoder.extend(chunk);
        if let Some(problem) = &failed {
            assert_eq!(
                decoder.next_frame().as_ref(),
                Err(problem),
                "the decoder recovered from a fatal error"
            );
            continue;
        }
        loop {
            match decoder.next_frame() {
                Ok(Some(body)) => {
                    assert!(body.len() <= max, "a body of {} > {max} bytes", body.len());
                    events.push(Event::Frame(body));
                }
                Ok(None) => break,
                Err(problem) => {
                    assert!(problem.is_fatal(), "stream errors are fatal: {problem:?}");
                    assert_eq!(
                        decoder.next_frame().as_ref(),
                        Err(&problem),
                        "the error is not sticky"
                    );
                    events.push(Event::Error(problem.clone()));
                    failed = Some(problem);
                    break;
                }
            }
        }
    }
    (events, decoder.pending())
}

/// Where the stream splits into chunks: the lengths cycle through `sizes`, a 0 feeds an empty
/// chunk before a 1-byte one; no sizes means one chunk.
fn chunks<'a>(stream: &'a [u8], sizes: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = stream;
    let mut i = 0;
    let mut empty_first = false;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        if sizes.is_empty() || rest.is_empty() {
            done = true;
            return Some(std::mem::take(&mut rest));
        }
        let size = sizes[i % sizes.len()];
        if size == 0 && !empty_first {
            empty_first = true;
            return Some(&rest[..0]);
        }
        empty_first = false;
        i += 1;
        let (chunk, tail) = rest.split_at(usize::from(size.max(1)).min(rest.len()));
        rest = tail;
        Some(chunk)
    })
}

/// The stream as a reference parser sees it: prost's own varint decoder for the length
/// prefixes. Returns the bodies, and whether the stream ends with a prefix over the limit
/// (or a broken one) rather than with an incomplete frame.
fn reference(stream: &[u8], max: usize) -> (Vec<&[u8]>, bool, usize) {
    let mut bodies = Vec::new();
    let mut at = 0;
    loop {
        let rest = &stream[at..];
        // A varint is complete when a byte without the continuation bit comes within 10.
        let Some(end) = rest.iter().take(10).position(|b| b & 0x80 == 0) else {
            // No end within 10 bytes: broken when 10 are there, incomplete otherwise.
            return (bodies, rest.len() >= 10, rest.len());
        };
        let mut buf = &rest[..=end];
        let Ok(len) = prost::encoding::decode_varint(&mut buf) else {
            return (bodies, true, rest.len()); // overflows 64 bits
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len > max {
            return (bodies, true, rest.len());
        }
        if rest.len() < end + 1 + len {
            return (bodies, false, rest.len());
        }
        bodies.push(&rest[end + 1..end + 1 + len]);
        at += end + 1 + len;
    }
}

/// `webtransport_stream`: input = 2 bytes of limit, 1 byte `n`, `n % 32` chunk sizes, then
/// the bytes of the stream (varint length prefixes included).
pub fn check_webtransport_stream(data: &[u8]) {
    let [a, b, n, rest @ ..] = data else {
        return;
    };
    let max = max_from(*a, *b);
    let n = usize::from(*n % 32).min(rest.len());
    let (sizes, stream) = rest.split_at(n);

    let (whole, whole_pending) = run_decoder(max, std::iter::once(stream));
    let (chunked, chunked_pending) = run_decoder(max, chunks(stream, sizes));
    assert_eq!(whole, chunked, "chunking {sizes:?} changed the frames");
    assert_eq!(
        whole_pending, chunked_pending,
        "chunking changed what is pending"
    );
    if stream.len() <= 256 {
        let (bytewise, pending) = run_decoder(max, stream.chunks(1));
        assert_eq!(whole, bytewise, "byte-by-byte feeding changed the frames");
        assert_eq!(whole_pending, pending);
    }

    let (bodies, broken, left) = reference(stream, max);
    let frames: Vec<&[u8]> = whole
        .iter()
        .filter_map(|e| match e {
            Event::Frame(body) => Some(body.as_ref()),
            Event::Error(_) => None,
        })
        .collect();
    assert_eq!(frames, bodies, "the decoder disagrees with prost's varints");
    let errored = matches!(whole.last(), Some(Event::Error(_)));
    assert_eq!(
        errored, broken,
        "error / incomplete verdict differs from the reference"
    );
    assert_eq!(
        whole_pending, left,
        "pending bytes differ from the reference"
    );
    if let Some(Event::Error(FrameProblem::TooLarge { size, max: m })) = whole.last() {
        assert!(
            *size > max && *m == max,
            "TooLarge {size} / {m} with limit {max}"
        );
    }

    for body in frames {
        match decode_client_frame(Bytes::copy_from_slice(body), max) {
            Ok(frame) => {
                assert!(frame.msg.is_some());
                check_round_trip(&frame);
            }
            Err(problem @ FrameProblem::Malformed { .. }) => assert!(!problem.is_fatal()),
            Err(other) => panic!("a body within the limit refused as {other:?}"),
        }
    }
}
