//! api: the Docker Engine API edge — HTTP routing, wire shapes, and the error mapping.

pub mod error;
pub mod server;
