//! WebSocket frames from a client, as `/ws/chat` and `/api/chat/stream` read them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The outcome matters to the seed tests; here only the properties checked inside.
    let _ = parley::fuzzing::client_frames(data);
});
