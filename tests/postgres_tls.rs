//! TLS against a PostgreSQL server this test owns (`common::private_pg`),
//! `ssl = on`, its certificate signed by a certificate authority the test
//! makes (rcgen), as a service's database behind a private CA is set up:
//! `verify-full` with `sslrootcert=<the CA>` connects; a server
//! certificate for another host name is refused by `verify-full` and
//! accepted by `verify-ca`; one signed by another CA is refused by both.
//! No error shows the password of the URL.
//!
//! The server lets the application's role in over TLS only, with a
//! password (SCRAM), so a connection that works was encrypted and
//! authenticated with the URL's password. The server's certificate is
//! swapped by a configuration reload between the cases.
//!
//! `sslmode_is_honoured_as_libpq_does` in `tests/postgres_ops.rs` covers a
//! self-signed certificate on the shared server.

mod common;

use std::time::{Duration, Instant};

use common::private_pg::PrivatePg;
use dreamnet_db::{Error, Store};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The application role's password, and a wrong one: neither may show in
/// an error.
const PASSWORD: &str = "tls-Secret-4f9a2c";
const WRONG_PASSWORD: &str = "not-the-Secret-77e1";

/// A certificate authority named `name`, with a fresh key.
fn authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A server certificate for `host` signed by `ca`: (certificate, key), PEM.
fn server_certificate(ca: &CertifiedIssuer<'_, KeyPair>, host: &str) -> (String, String) {
    let mut params = CertificateParams::new(vec![host.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, host);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Makes `cert` (certificate, key) the server's certificate, under `name`,
/// from its next start or reload.
fn install(pg: &PrivatePg, name: &str, (cert, key): &(String, String)) {
    pg.write_file(&format!("{name}.crt"), cert.as_bytes());
    pg.write_file(&format!("{name}.key"), key.as_bytes());
    pg.configure(&[
        &format!("ssl_cert_file = '{name}.crt'"),
        &format!("ssl_key_file = '{name}.key'"),
    ]);
}

/// Installs `cert` in the running server and waits until it has reloaded
/// its configuration with it: new connections see the new `ssl_cert_file`
/// (the postmaster loads the TLS files in the same reload, before it
/// accepts another connection).
async fn serve(pg: &PrivatePg, name: &str, cert: &(String, String)) {
    install(pg, name, cert);
    pg.reload().await;
    let start = Instant::now();
    loop {
        let now: String = pg
            .admin()
            .await
            .query_one("SHOW ssl_cert_file", &[])
            .await
            .unwrap()
            .get(0);
        if now == format!("{name}.crt") {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the server did not reload its certificate:\n{}",
            pg.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn verify_full_trusts_a_private_ca_and_refuses_another_name_or_another_ca() {
    let ca = authority("DreamNet test CA");
    let other_ca = authority("Another test CA");
    let Some(mut pg) = PrivatePg::init().await else {
        return;
    };
    let ca_file = pg.write_file("ca.pem", ca.pem().as_bytes());
    let other_ca_file = pg.write_file("other-ca.pem", other_ca.pem().as_bytes());
    // The application role: TLS and SCRAM, nothing else.
    pg.hba(&[
        "hostssl all app 127.0.0.1/32 scram-sha-256",
        "host all app 127.0.0.1/32 reject",
    ]);
    pg.configure(&["ssl = on"]);
    let localhost = server_certificate(&ca, "localhost");
    install(&pg, "localhost", &localhost);
    pg.start().await;
    let admin = pg.admin().await;
    for sql in [
        format!("CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'"),
        "CREATE DATABASE dreamnet OWNER app".to_owned(),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }

    let url = |host: &str, password: &str, params: &str| {
        format!(
            "postgres://app:{password}@{host}:{}/dreamnet?{params}",
            pg.port()
        )
    };
    let ca_root = format!("sslrootcert={}", ca_file.display());
    let full = format!("sslmode=verify-full&{ca_root}");
    let chain_only = format!("sslmode=verify-ca&{ca_root}");
    let connect = common::store_of_one;
    // A refusal: `Unavailable`, for the reason `because` (in the error's
    // chain of sources), and the password nowhere in it.
    let refused = |what: &str, result: Result<Store, Error>, because: &str| {
        let err = match result {
            Ok(_) => panic!("{what}: connected, but must be refused"),
            Err(e) => e,
        };
        let shown = common::shown(&err);
        assert!(matches!(err, Error::Unavailable { .. }), "{what}: {shown}");
        assert!(
            shown.contains(because),
            "{what}: not for {because:?}: {shown}"
        );
        for secret in [PASSWORD, WRONG_PASSWORD] {
            assert!(
                !shown.contains(secret),
                "{what}: the password leaked: {shown}"
            );
        }
    };

    // The CA's certificate for this host: verified, name and chain.
    let store = connect(url("localhost", PASSWORD, &full))
        .await
        .expect("verify-full with the CA that signed the server's certificate connects");
    store.migrate().await.expect("migrate over TLS");
    store.health().await.unwrap();
    drop(store);
    connect(url("localhost", PASSWORD, &chain_only))
        .await
        .expect("verify-ca connects");
    // Not encrypting is refused by the server: what connected above did
    // encrypt.
    refused(
        "sslmode=disable",
        connect(url("localhost", PASSWORD, "sslmode=disable")).await,
        "no encryption",
    );
    // A wrong password, after a verified handshake.
    refused(
        "a wrong password",
        connect(url("localhost", WRONG_PASSWORD, &full)).await,
        "password authentication failed",
    );
    // Trusting only another CA.
    let other_root = format!(
        "sslmode=verify-full&sslrootcert={}",
        other_ca_file.display()
    );
    refused(
        "verify-full trusting another CA",
        connect(url("localhost", PASSWORD, &other_root)).await,
        "UnknownIssuer",
    );

    // The server presents the CA's certificate for another host name.
    serve(
        &pg,
        "elsewhere",
        &server_certificate(&ca, "db.elsewhere.example"),
    )
    .await;
    refused(
        "verify-full, a certificate for another name",
        connect(url("localhost", PASSWORD, &full)).await,
        "not valid for name",
    );
    connect(url("localhost", PASSWORD, &chain_only))
        .await
        .expect("verify-ca does not check the host name");

    // The server presents a certificate for this host signed by another CA.
    serve(&pg, "other-ca", &server_certificate(&other_ca, "localhost")).await;
    refused(
        "verify-full, a certificate from another CA",
        connect(url("localhost", PASSWORD, &full)).await,
        "UnknownIssuer",
    );
    refused(
        "verify-ca, a certificate from another CA",
        connect(url("localhost", PASSWORD, &chain_only)).await,
        "UnknownIssuer",
    );
    // And back: the CA's certificate for this host is accepted again, so
    // the refusals above were the certificates' doing.
    serve(&pg, "localhost-again", &localhost).await;
    connect(url("localhost", PASSWORD, &full))
        .await
        .expect("verify-full connects again");
}
