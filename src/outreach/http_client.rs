//! The one way this service builds an HTTP client. reqwest is compiled with rustls but
//! without a built-in crypto provider (`rustls-no-provider`), so that TLS runs on `ring`
//! alone and no C code (aws-lc) is compiled; rustls then needs a process-wide provider
//! before the first client is built, or building one panics. [`http_client`] and
//! [`builder`] install `ring` once, so callers — the binary, the benchmark, every test
//! binary — never have to.

use std::sync::Once;
use std::time::Duration;

static INSTALL: Once = Once::new();

/// Installs rustls' `ring` crypto provider as the process default, once. Harmless when
/// another provider was installed first (that one stays).
pub fn install_crypto_provider() {
    INSTALL.call_once(|| {
        // Err means a provider is already installed: nothing to do.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client builder with the crypto provider in place, for callers that need more than a
/// timeout (tests, the benchmark).
pub fn builder() -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
}

/// A client whose every request gives up after `timeout` (connecting included).
pub fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_build_repeatedly_without_installing_anything_first() {
        for _ in 0..3 {
            http_client(Duration::from_secs(1)).expect("client");
        }
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
