//! api: the Docker side of the pipeline — the wire format of Docker requests and their decoding
//! into the neutral [`crate::model`].

pub mod decode;
pub mod wire;
