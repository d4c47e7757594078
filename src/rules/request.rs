//! The Docker create body as rules see it: the very document the decoder accepted (see
//! `api::decode::decode_create`), never a second, lossy parse of the bytes.

use serde_json::Value;

pub struct RequestBody<'a> {
    parsed: &'a Value,
}

impl<'a> RequestBody<'a> {
    pub fn new(parsed: &'a Value) -> Self {
        RequestBody { parsed }
    }

    pub fn get(&self) -> &Value {
        self.parsed
    }
}
