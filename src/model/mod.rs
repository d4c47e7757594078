//! model: the neutral description of one Docker container, between the Docker wire format (`api`)
//! and the Kubernetes objects (`render`).
//!
//! Nothing here knows about HTTP or Kubernetes, and nothing does I/O: the types only say what the
//! Docker client asked for, already validated, so that policy and rendering never re-parse strings.

pub mod binds;
mod exec;
mod id;
mod image;
mod link;
mod record;
mod workload;

pub use binds::BindRoots;
pub use exec::{ConsoleSize, ExecRequest, ExecStart};
pub use id::{lookup, ContainerId, Lookup};
pub use image::{ImageConfig, ImageHealthcheck, ImageRef};
pub use link::{Link, LinkedContainer, LINK_TARGETS};
pub use record::{
    BindCopy, ClaimMount, ContainerRecord, LastExit, MountKind, MountRecord, RuntimeSettings,
};
pub use workload::*;

/// Why podbridge runs a pod. Decided by podbridge, never by the client: policy selectors can
/// trust it (`purposes:`), unlike Docker labels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Purpose {
    /// A Docker container.
    #[default]
    Container,
    /// The builder pod of one `docker build`.
    Build,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Container => "container",
            Purpose::Build => "build",
        }
    }
}

/// What can go wrong while building model values from strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// An image reference does not follow Docker's reference grammar. The message mirrors Docker's
    /// `invalid reference format` wording so clients show what they would show against dockerd.
    #[error("invalid reference format: {reason} (reference {reference:?})")]
    ParseImageReferenceFailed { reference: String, reason: String },
    /// A container ID is not 64 lowercase hexadecimal characters.
    #[error("invalid container ID {value:?}: expected 64 lowercase hexadecimal characters")]
    ParseContainerIdFailed { value: String },
    /// A `HostConfig.Links` entry is not `target`, `target:alias` or `/target:/self/alias`;
    /// `reason` is dockerd's message.
    #[error("{reason}")]
    ParseLinkFailed { entry: String, reason: String },
}

/// Result type of the model module.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
