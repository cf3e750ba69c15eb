//! HTTPS settings: the certificate chain and private key (`tls_cert`,
//! `tls_key`, PEM files) made into the rustls server config that the patched
//! tiny_http speaks (vendor/tiny_http/src/util/tls.rs). The crypto provider
//! is ring, the one ureq's rustls already brings: one crypto library for
//! pulls and the server.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The server config for the chain in `cert` and the key in `key`; the
/// error names the setting and the file.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "tls_cert {}: no CERTIFICATE block in it",
            cert.display()
        ));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls_key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            format!(
                "tls_cert {} and tls_key {} do not make a usable pair: {e}",
                cert.display(),
                key.display()
            )
        })?;
    // HTTP/1.1 only: a client offering h2 alone is refused in the handshake
    // rather than talked to in a protocol it did not ask for.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let text = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn a_pair_loads_and_mistakes_name_the_setting() {
        let dir = std::env::temp_dir().join(format!("tabagent-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_file = write("cert.pem", &pem("CERTIFICATE", cert.der()));
        let key_file = write("key.pem", &pem("PRIVATE KEY", &key.serialize_der()));
        assert!(server_config(&cert_file, &key_file).is_ok());

        let other = rcgen::KeyPair::generate().unwrap();
        let other_file = write("other.pem", &pem("PRIVATE KEY", &other.serialize_der()));
        let error = server_config(&cert_file, &other_file).unwrap_err();
        assert!(error.contains("do not make a usable pair"), "{error}");
        let error = server_config(&dir.join("missing.pem"), &key_file).unwrap_err();
        assert!(error.starts_with("tls_cert "), "{error}");
        let error = server_config(&key_file, &key_file).unwrap_err();
        assert!(error.contains("no CERTIFICATE"), "{error}");
        let error = server_config(&cert_file, &cert_file).unwrap_err();
        assert!(error.starts_with("tls_key "), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
