//! `llmesh-injector`: the mutating admission webhook that adds the llmesh
//! sidecar to selected pods.
//!
//! - [`review`]: one AdmissionReview in, one out (select, validate, patch).
//! - [`mutate`]: the JSON patch itself, built from the pod as raw JSON.
//! - [`overrides`]: the `llmesh.io/*` pod annotations.
//! - [`config`]: the sidecar every pod gets before overrides.
//! - [`server`]: HTTPS with rustls; [`tls`]: certificates from files
//!   (hot-swapped) or self-generated; [`cluster`]: the Secret and caBundle.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used)]
#![deny(missing_docs)]

pub mod cluster;
pub mod config;
pub mod mutate;
pub mod overrides;
pub mod quantity;
pub mod review;
pub mod server;
pub mod tls;

pub use config::SidecarConfig;
pub use review::{Injector, Outcome};
pub use server::Server;
