//! A provider's streamed response body: SSE events and OpenAI-compatible chunks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    parley::fuzzing::provider_stream(data);
});
