//! api: the Docker side of the pipeline — the wire format of Docker requests and their decoding
//! into the neutral [`crate::model`], the HTTP server, and the one mapping of errors to Docker
//! responses.

pub mod decode;
pub mod error;
pub mod server;
pub mod translate;
pub mod wire;
