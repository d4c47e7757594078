//! The Docker create body as rules see it: parsed into JSON only when a rule reads it (a
//! script, or a `requestPath` precondition), since the default policy never does.

use std::cell::OnceCell;

use serde_json::Value;

pub struct RequestBody<'a> {
    raw: &'a [u8],
    parsed: OnceCell<Value>,
}

impl<'a> RequestBody<'a> {
    /// `raw` must be the JSON the decoder accepted; anything else reads as `null`.
    pub fn new(raw: &'a [u8]) -> Self {
        RequestBody {
            raw,
            parsed: OnceCell::new(),
        }
    }

    pub fn get(&self) -> &Value {
        self.parsed
            .get_or_init(|| serde_json::from_slice(self.raw).unwrap_or(Value::Null))
    }
}
