//! Connections: URL parsing, TLS as libpq's `sslmode` means it, and the pool.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use diesel::{ConnectionError, ConnectionResult};
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::PoolableConnection;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use secrecy::ExposeSecret;

use crate::error::{Error, Result};

/// How to reach PostgreSQL and how to pool connections: the PostgreSQL part
/// of a [`StoreBuilder`](crate::StoreBuilder), whose methods document each
/// field and its default.
#[derive(Clone)]
pub(crate) struct PgOptions {
    pub(crate) database_url: Option<secrecy::SecretString>,
    pub(crate) max_connections: u32,
    pub(crate) min_idle: Option<u32>,
    pub(crate) idle_timeout: Option<std::time::Duration>,
    pub(crate) connection_timeout: std::time::Duration,
    pub(crate) max_lifetime: Option<std::time::Duration>,
    pub(crate) statement_cache: bool,
    /// Read replicas: see `replicas.rs`.
    pub(crate) replicas: super::replicas::ReplicaOptions,
    pub(crate) migration_url: Option<secrecy::SecretString>,
    /// Roles granted their privileges after every migration run.
    pub(crate) grant_roles: Option<crate::model::RoleNames>,
}

impl Default for PgOptions {
    fn default() -> Self {
        use std::time::Duration;
        PgOptions {
            database_url: None,
            max_connections: 100,
            min_idle: None,
            idle_timeout: Some(Duration::from_secs(30)),
            connection_timeout: Duration::from_secs(2),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
            statement_cache: true,
            replicas: Default::default(),
            migration_url: None,
            grant_roles: None,
        }
    }
}

/// Never shows the URL: it may hold a password.
impl fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgOptions")
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "[REDACTED]"),
            )
            .field("max_connections", &self.max_connections)
            .field("min_idle", &self.min_idle)
            .field("idle_timeout", &self.idle_timeout)
            .field("connection_timeout", &self.connection_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("statement_cache", &self.statement_cache)
            .field("replicas", &self.replicas)
            .field(
                "migration_url",
                &self.migration_url.as_ref().map(|_| "[REDACTED]"),
            )
            .field("grant_roles", &self.grant_roles)
            .finish()
    }
}

/// The pool every PostgreSQL operation of a store goes through.
pub(crate) type PgPool = bb8::Pool<Manager>;

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => SslMode::Disable,
            // libpq's `allow` tries plain first; encrypting when offered is
            // never worse, so it is treated as `prefer`.
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(Error::Config(format!(
                    "unknown sslmode {other:?}: expected disable, prefer, require, verify-ca or verify-full"
                )));
            }
        })
    }
}

/// How to open one connection: the URL without the TLS parameters, and the
/// TLS set-up they asked for.
#[derive(Clone)]
pub(crate) struct ConnectSpec {
    /// The URL handed to tokio-postgres, `sslmode`/`sslrootcert` removed.
    /// Holds the password: never printed.
    url: Arc<secrecy::SecretString>,
    mode: SslMode,
    tls: Option<Arc<ClientConfig>>,
    statement_cache: bool,
}

impl fmt::Debug for ConnectSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectSpec")
            .field("url", &"[REDACTED]")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl ConnectSpec {
    /// Parses a `postgres://` URL. Errors never quote the URL.
    pub(crate) fn parse(raw: &str, statement_cache: bool) -> Result<Self> {
        let mut url = url::Url::parse(raw)
            .map_err(|e| Error::Config(format!("the database URL is not a valid URL ({e})")))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(Error::Config(
                "the database URL must start with postgres:// or postgresql://".to_owned(),
            ));
        }
        let mut mode = SslMode::Prefer;
        let mut root: Option<PathBuf> = None;
        let mut kept = Vec::new();
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "sslmode" => mode = SslMode::parse(&v)?,
                "sslrootcert" => root = Some(PathBuf::from(v.as_ref())),
                _ => kept.push((k.into_owned(), v.into_owned())),
            }
        }
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
        let tls = match mode {
            SslMode::Disable => None,
            SslMode::Prefer | SslMode::Require => Some(no_verification()?),
            SslMode::VerifyCa => Some(verified(root.as_ref(), false)?),
            SslMode::VerifyFull => Some(verified(root.as_ref(), true)?),
        };
        // Check the rest now, so a bad parameter is a configuration error at
        // start-up rather than a failed connection later.
        url.as_str()
            .parse::<tokio_postgres::Config>()
            .map_err(|_| {
                Error::Config(
                    "the database URL has a parameter PostgreSQL does not accept".to_owned(),
                )
            })?;
        Ok(ConnectSpec {
            url: Arc::new(secrecy::SecretString::from(url.to_string())),
            mode,
            tls,
            statement_cache,
        })
    }

    /// Opens one connection.
    pub(crate) async fn connect(&self) -> ConnectionResult<AsyncPgConnection> {
        // Without the statement cache (behind a transaction pooler), the
        // two `SET`s diesel-async makes on a new connection, each a
        // prepared statement, run inside a transaction, so that each is
        // parsed and run on one server connection.
        let pinned = !self.statement_cache;
        let mut conn = match self.config()? {
            (config, None) => {
                let (client, mut connection) =
                    config.connect(tokio_postgres::NoTls).await.map_err(bad)?;
                if pinned {
                    begin(&client, &mut connection).await?;
                }
                AsyncPgConnection::try_from_client_and_connection(client, connection).await?
            }
            (config, Some(tls)) => {
                let (client, mut connection) = config.connect(tls).await.map_err(bad)?;
                if pinned {
                    begin(&client, &mut connection).await?;
                }
                AsyncPgConnection::try_from_client_and_connection(client, connection).await?
            }
        };
        if pinned {
            use diesel_async::{AsyncConnection, SimpleAsyncConnection};
            conn.batch_execute("COMMIT")
                .await
                .map_err(|e| ConnectionError::BadConnection(e.to_string()))?;
            conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
        }
        Ok(conn)
    }

    /// Opens one plain tokio-postgres connection (driven by a task of its
    /// own until the client is dropped), for the checks that need protocol
    /// level control.
    pub(crate) async fn client(&self) -> ConnectionResult<tokio_postgres::Client> {
        match self.config()? {
            (config, None) => {
                let (client, connection) =
                    config.connect(tokio_postgres::NoTls).await.map_err(bad)?;
                tokio::spawn(connection);
                Ok(client)
            }
            (config, Some(tls)) => {
                let (client, connection) = config.connect(tls).await.map_err(bad)?;
                tokio::spawn(connection);
                Ok(client)
            }
        }
    }

    /// The tokio-postgres configuration and, unless `sslmode=disable`, the
    /// TLS connector.
    fn config(
        &self,
    ) -> ConnectionResult<(
        tokio_postgres::Config,
        Option<tokio_postgres_rustls::MakeRustlsConnect>,
    )> {
        let mut config: tokio_postgres::Config =
            self.url.expose_secret().parse().map_err(|_| {
                ConnectionError::InvalidConnectionUrl("invalid database URL".to_owned())
            })?;
        match &self.tls {
            None => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                Ok((config, None))
            }
            Some(tls) => {
                config.ssl_mode(if self.mode == SslMode::Prefer {
                    tokio_postgres::config::SslMode::Prefer
                } else {
                    tokio_postgres::config::SslMode::Require
                });
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
                Ok((config, Some(tls)))
            }
        }
    }
}

/// Opens a transaction on a new connection, driving the connection (not
/// yet handed to diesel-async) until it is open.
async fn begin<S, T>(
    client: &tokio_postgres::Client,
    connection: &mut tokio_postgres::Connection<S, T>,
) -> ConnectionResult<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let begin = client.batch_execute("BEGIN");
    tokio::pin!(begin);
    tokio::select! {
        done = &mut begin => done.map_err(bad),
        closed = connection => Err(match closed {
            Err(e) => bad(e),
            Ok(()) => ConnectionError::BadConnection("the server closed the connection".to_owned()),
        }),
    }
}

/// The error with its causes (tokio-postgres's own message is only its
/// kind, "db error", "error performing TLS handshake"): the server's
/// message, the socket's or the certificate check's. None of them holds the
/// password.
fn bad(e: tokio_postgres::Error) -> ConnectionError {
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        message.push_str(&format!(": {c}"));
        cause = c.source();
    }
    ConnectionError::BadConnection(message)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS set-up failed: {e}")))
}

/// `require` and `prefer`: encrypt, but check no certificate (as libpq).
fn no_verification() -> Result<Arc<ClientConfig>> {
    let verifier = Arc::new(AcceptAnyCert(provider().signature_verification_algorithms));
    Ok(Arc::new(
        builder()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth(),
    ))
}

/// `verify-ca` (chain only) and `verify-full` (chain and host name).
fn verified(root: Option<&PathBuf>, check_name: bool) -> Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    match root {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| {
                Error::Config(format!("cannot read sslrootcert {}: {e}", path.display()))
            })?;
            for cert in certs {
                let cert = cert.map_err(|e| {
                    Error::Config(format!("cannot parse sslrootcert {}: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    Error::Config(format!("unusable certificate in {}: {e}", path.display()))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| Error::Config(format!("TLS set-up failed: {e}")))?;
    let b = builder()?;
    Ok(Arc::new(if check_name {
        b.with_webpki_verifier(webpki).with_no_client_auth()
    } else {
        b.dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
            .with_no_client_auth()
    }))
}

/// Checks signatures (so the handshake is sound) but no certificate.
#[derive(Debug)]
struct AcceptAnyCert(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is
/// not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A pooled connection, and whether a call on it found it broken.
pub(crate) struct PgConn {
    pub(crate) conn: AsyncPgConnection,
    /// Set when a call on this connection failed because the connection is
    /// gone, so the pool drops it rather than handing it out again.
    pub(crate) broken: bool,
}

/// Opens connections with [`ConnectSpec`], and keeps them healthy without a
/// round trip per checkout: a connection is dropped when its socket has
/// closed or a call found it broken.
pub(crate) struct Manager {
    spec: ConnectSpec,
}

impl bb8::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = ConnectionError;

    async fn connect(&self) -> Result<PgConn, ConnectionError> {
        Ok(PgConn {
            conn: self.spec.connect().await?,
            broken: false,
        })
    }

    async fn is_valid(&self, conn: &mut PgConn) -> Result<(), ConnectionError> {
        use diesel_async::RunQueryDsl;
        diesel::sql_query("SELECT 1")
            .execute(&mut conn.conn)
            .await
            .map(drop)
            .map_err(|e| ConnectionError::BadConnection(e.to_string()))
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.broken || std::thread::panicking() || conn.conn.is_broken()
    }
}

/// The last error the pool met opening a connection, so that a checkout
/// that times out because the server is gone says so.
#[derive(Clone, Default)]
pub(crate) struct LastConnectError(Arc<std::sync::Mutex<Option<(std::time::Instant, String)>>>);

impl LastConnectError {
    /// The error, if one happened within `window`.
    pub(crate) fn within(&self, window: std::time::Duration) -> Option<String> {
        let last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref()
            .filter(|(at, _)| at.elapsed() <= window)
            .map(|(_, e)| e.clone())
    }
}

impl fmt::Debug for LastConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LastConnectError")
    }
}

impl bb8::ErrorSink<ConnectionError> for LastConnectError {
    fn sink(&self, e: ConnectionError) {
        tracing::warn!(error = %e, "opening a PostgreSQL connection failed");
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((std::time::Instant::now(), e.to_string()));
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<ConnectionError>> {
        Box::new(self.clone())
    }
}

/// The longest one round of waiting for a connection lasts: see
/// `PgBackend::conn`.
pub(crate) const RETRY_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Builds the pool. Connections are not tested with a query on checkout
/// (that would cost a round trip per call); see [`Manager`].
pub(crate) async fn pool(
    spec: &ConnectSpec,
    b: &PgOptions,
    errors: LastConnectError,
) -> Result<PgPool> {
    let manager = Manager { spec: spec.clone() };
    Ok(bb8::Pool::builder()
        .max_size(b.max_connections.max(1))
        .min_idle(b.min_idle)
        .idle_timeout(b.idle_timeout)
        .max_lifetime(b.max_lifetime)
        .connection_timeout(b.connection_timeout.min(RETRY_EVERY))
        .test_on_check_out(false)
        .retry_connection(false)
        .error_sink(Box::new(errors))
        .build_unchecked(manager))
}
