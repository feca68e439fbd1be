//! The serving certificate: read from PEM files and swapped in place when
//! they change on disk (cert-manager or a Secret rotation), or generated at
//! start with a CA of the injector's own.
//!
//! Each TLS handshake asks [`CertStore`] for the current key, so a swap
//! applies to the next connection without a restart; open connections keep
//! the key they started with.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::Watcher as _;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The PEM holds no usable certificate or key.
    #[error("{0}")]
    Pem(String),
    /// rcgen refused to make a certificate.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Builds a signing key and chain from PEM text.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, CertError> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut BufReader::new(cert_pem))
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Pem(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(CertError::Pem(
            "the certificate file holds no certificate".into(),
        ));
    }
    let key = rustls_pemfile::private_key(&mut BufReader::new(key_pem))
        .map_err(|e| CertError::Pem(format!("key PEM: {e}")))?
        .ok_or_else(|| CertError::Pem("the key file holds no private key".into()))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::Pem(format!("unusable private key: {e}")))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match()
        .map_err(|e| CertError::Pem(format!("the key does not match the certificate: {e}")))?;
    Ok(ck)
}

/// The certificate every handshake uses, swappable at any time.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
    swaps: AtomicU64,
}

impl CertStore {
    /// A store holding `key`.
    pub fn new(key: CertifiedKey) -> Arc<CertStore> {
        Arc::new(CertStore {
            current: ArcSwap::from_pointee(key),
            swaps: AtomicU64::new(0),
        })
    }

    /// Replaces the certificate for the following handshakes.
    pub fn swap(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
        self.swaps.fetch_add(1, Ordering::Relaxed);
    }

    /// How many times the certificate was replaced.
    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Relaxed)
    }

    /// A rustls server configuration (TLS 1.2 and 1.3, h2 and HTTP/1.1)
    /// taking its certificate from this store.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Loads the pair of files.
pub fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, CertError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| CertError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    certified_key(&read(cert)?, &read(key)?)
}

/// Keeps the store in step with the files: watches their folders (a
/// Kubernetes Secret volume swaps a `..data` symlink, so the folder is what
/// changes) and reloads both files after each burst of events. A pair that
/// does not load (half-written, mismatched) is logged and the old one kept;
/// the next event tries again. Dropping the returned watcher stops it.
pub fn watch_files(
    store: Arc<CertStore>,
    cert: PathBuf,
    key: PathBuf,
) -> notify::Result<notify::RecommendedWatcher> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok() {
            let _ = tx.send(());
        }
    })?;
    let mut dirs: Vec<PathBuf> = [&cert, &key]
        .iter()
        .map(|p| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    dirs.dedup();
    for d in &dirs {
        watcher.watch(d, notify::RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Let the rest of a rotation land before reading.
            tokio::time::sleep(Duration::from_millis(100)).await;
            while rx.try_recv().is_ok() {}
            match load_files(&cert, &key) {
                Ok(k) => {
                    let same = store
                        .current
                        .load()
                        .cert
                        .first()
                        .zip(k.cert.first())
                        .is_some_and(|(a, b)| a == b);
                    if !same {
                        store.swap(k);
                        tracing::info!(cert = %cert.display(), "serving certificate reloaded");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "certificate change not applied; keeping the current one")
                }
            }
        }
    });
    Ok(watcher)
}

/// A CA and a serving certificate it signed, as PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The CA certificate: the webhook's caBundle.
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving certificate's private key (PKCS#8).
    pub key_pem: String,
    /// When the serving certificate expires, in seconds since the epoch.
    pub not_after: i64,
}

/// DNS names the API server may use for the injector's Service.
pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Makes a CA (valid ten years) and a serving certificate for `names`
/// (valid one year); both ECDSA P-256.
pub fn generate(names: &[String]) -> Result<Generated, CertError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let now = time::OffsetDateTime::now_utc();
    let back = now - time::Duration::hours(1);

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "llmesh-injector CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = back;
    ca.not_after = now + time::Duration::days(3650);
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(names.to_vec())?;
    let cn = names
        .first()
        .map(String::as_str)
        .unwrap_or("llmesh-injector");
    leaf.distinguished_name.push(DnType::CommonName, cn);
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.not_before = back;
    let not_after = now + time::Duration::days(365);
    leaf.not_after = not_after;
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok(Generated {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after: not_after.unix_timestamp(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pair_loads() {
        let g = generate(&service_names("llmesh-injector", "llmesh-system")).expect("generate");
        assert!(g.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        certified_key(g.cert_pem.as_bytes(), g.key_pem.as_bytes()).expect("load");
    }

    #[test]
    fn a_mismatched_key_is_refused() {
        let a = generate(&["a".to_string()]).expect("a");
        let b = generate(&["b".to_string()]).expect("b");
        let e = certified_key(a.cert_pem.as_bytes(), b.key_pem.as_bytes());
        assert!(e.is_err());
    }
}
