//! The sidecar injector: admission reviews in, patched pods out
//! (`injector/webhook.rs`), TLS with generated and rotated certificates
//! (`injector/tls.rs`), the real binary set up as installed
//! (`injector/binary.rs`), and the Helm chart and plain manifests that install
//! it (`injector/install.rs`).
#![allow(clippy::unwrap_used)]

#[path = "injector/binary.rs"]
mod binary;
#[path = "injector/install.rs"]
mod install;
#[path = "injector/tls.rs"]
mod tls;
#[path = "injector/webhook.rs"]
mod webhook;

use std::path::PathBuf;

/// The repository root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}
