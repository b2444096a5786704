//! `gpt-fast serve`'s request parser: the input (after a selector byte for
//! the endpoint) as a request body. Any bytes give a request or an error
//! with an HTTP status of 4xx and a JSON body, never a panic.
#![no_main]

use gpt_fast::server::request::{parse, Endpoint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let endpoint = if selector & 1 == 0 { Endpoint::Chat } else { Endpoint::Completions };
    if let Err(e) = parse(endpoint, body) {
        assert!((400..500).contains(&e.status), "status {}", e.status);
        let _: serde_json::Value = serde_json::from_str(&e.body()).expect("error bodies are JSON");
    }
});
