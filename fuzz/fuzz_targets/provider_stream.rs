//! A provider's streamed response body: SSE events and OpenAI-compatible chunks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The outcome matters to the seed tests; here only the properties checked inside.
    let _ = parley::fuzzing::provider_stream(data);
});
