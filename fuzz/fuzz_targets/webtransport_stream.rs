//! A WebTransport stream, chunked as the input says -> `LengthDelimitedDecoder` ->
//! `decode_client_frame`: see `signalgate_fuzz::codec`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    signalgate_fuzz::codec::check_webtransport_stream(data);
});
