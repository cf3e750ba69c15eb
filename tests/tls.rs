//! HTTPS on the real binary, with a CA and a server certificate made here
//! (rcgen): the official openai client trusting that CA (and refusing the
//! server without it), keep-alive and bodies over TLS, plain HTTP on the TLS
//! port answered in plain HTTP, the hostile-client timeouts on TLS
//! connections (a silent, a trickled and a stalled handshake, a stalled
//! head), and the settings refused at start.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

use crate::util::{HttpServer, TEST_KEY, TempDir, command, parse_response, skip, wait_exit};

/// A test CA, and a certificate it signed for 127.0.0.1 and localhost.
struct Pki {
    dir: TempDir,
    ca_der: CertificateDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let dir = TempDir::new("tls-pki");
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "tabagent test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().unwrap();
        let mut leaf =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.use_authority_key_identifier_extension = true;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = leaf.signed_by(&key, &issuer).unwrap();

        std::fs::write(dir.path().join("ca.pem"), pem("CERTIFICATE", ca_cert.der())).unwrap();
        std::fs::write(dir.path().join("cert.pem"), pem("CERTIFICATE", cert.der())).unwrap();
        std::fs::write(
            dir.path().join("key.pem"),
            pem("PRIVATE KEY", &key.serialize_der()),
        )
        .unwrap();
        Pki {
            ca_der: ca_cert.der().clone(),
            dir,
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The binary serving HTTPS with this certificate, head timeout 1 s.
    fn server(&self, data: TempDir) -> HttpServer {
        HttpServer::start_with(data, |c| {
            c.env("TABAGENT_TLS_CERT", self.file("cert.pem"))
                .env("TABAGENT_TLS_KEY", self.file("key.pem"))
                .env("TABAGENT_HTTP_HEAD_TIMEOUT", "1");
        })
    }

    /// A TLS client that trusts the test CA only, connected to `addr`.
    fn connect(
        &self,
        addr: SocketAddr,
    ) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let socket = TcpStream::connect(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        rustls::StreamOwned::new(connection, socket)
    }
}

/// PEM of one DER block.
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

/// Reads one response with a `Content-Length` body from a kept-alive stream.
fn read_response(stream: &mut impl Read) -> crate::util::HttpReply {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "the head ended early");
        raw.push(byte[0]);
    }
    let head = parse_response(&raw);
    let length: usize = head
        .header("Content-Length")
        .expect("a Content-Length")
        .parse()
        .unwrap();
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    raw.extend_from_slice(&body);
    parse_response(&raw)
}

#[test]
fn the_openai_client_talks_https_given_the_ca() {
    let have_client = Command::new("python3")
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success());
    if !have_client {
        skip(
            "the_openai_client_talks_https_given_the_ca",
            "the openai Python package (python3 -m pip install openai) is missing",
        );
        return;
    }
    let pki = Pki::new();
    let data = TempDir::new("tls-openai");
    // With the llama backend: chat (streamed too) on the tiny model, over TLS.
    #[cfg(feature = "llama")]
    let chat_model = {
        std::fs::create_dir_all(data.path().join("models")).unwrap();
        std::fs::copy(
            crate::util::tiny_gguf(),
            data.path().join("models/tiny.gguf"),
        )
        .unwrap();
        "tiny"
    };
    #[cfg(not(feature = "llama"))]
    let chat_model = "-";
    let server = pki.server(data);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(format!("https://127.0.0.1:{}/v1", server.addr.port()))
        .arg(chat_model)
        .env("OPENAI_API_KEY", TEST_KEY)
        .env("TABAGENT_CA_FILE", pki.file("ca.pem"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openai_client.py over HTTPS failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn requests_keep_alive_and_carry_bodies_over_tls() {
    let pki = Pki::new();
    let server = pki.server(TempDir::new("tls-alive"));
    let mut stream = pki.connect(server.addr);
    for _ in 0..3 {
        write!(stream, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let reply = read_response(&mut stream);
        assert_eq!(reply.json()["status"], "ok");
    }
    let body = br#"{"id": 7, "request_type": "GetStats"}"#;
    write!(
        stream,
        "POST /v1/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TEST_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body).unwrap();
    let reply: Value = read_response(&mut stream).ok_json();
    assert_eq!(
        (&reply["id"], &reply["response_type"]),
        (&serde_json::json!(7), &serde_json::json!("Stats"))
    );
    // A stalled head on an established TLS connection: 408 within the head
    // timeout, as on plain HTTP.
    let started = Instant::now();
    write!(stream, "GET /health HTTP/1.1\r\n").unwrap();
    let reply = read_response(&mut stream);
    assert_eq!(reply.status, 408);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn plain_http_on_the_tls_port_is_told_to_use_https() {
    let pki = Pki::new();
    let server = pki.server(TempDir::new("tls-plain"));
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.addr
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let reply = parse_response(&raw);
    assert_eq!(reply.status, 400);
    assert_eq!(reply.header("Connection"), Some("close"));
    assert_eq!(
        reply.json()["detail"],
        "this port speaks HTTPS: use https://"
    );
    // The server goes on serving TLS.
    let mut tls = pki.connect(server.addr);
    write!(tls, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut tls).status, 200);
}

/// Whether the server closed `stream` within `limit`, while the client sends
/// `trickle` one byte at a time every 200 ms (nothing when empty).
fn closed_within(stream: &mut TcpStream, trickle: &[u8], limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut bytes = trickle.iter();
    let mut scratch = [0u8; 4096];
    while started.elapsed() < limit {
        if let Some(byte) = bytes.next()
            && stream.write_all(&[*byte]).is_err()
        {
            return Some(started.elapsed());
        }
        match stream.read(&mut scratch) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

#[test]
fn a_stalled_or_trickled_handshake_times_out() {
    let pki = Pki::new();
    let server = pki.server(TempDir::new("tls-stall"));
    let limit = Duration::from_secs(10);
    // Silent after connecting.
    let mut silent = TcpStream::connect(server.addr).unwrap();
    let closed = closed_within(&mut silent, &[], limit).expect("a silent client is closed");
    assert!(closed < Duration::from_secs(4), "{closed:?}");
    // A record header announcing 512 bytes of ClientHello, then one byte
    // every 200 ms: each byte arrives within the timeout, the whole does not.
    let mut trickle = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    trickle.extend(std::iter::repeat_n(0u8, 500));
    let mut slow = TcpStream::connect(server.addr).unwrap();
    let closed = closed_within(&mut slow, &trickle, limit).expect("a trickling client is closed");
    assert!(closed < Duration::from_secs(4), "{closed:?}");
    // Meanwhile, and after, others are served.
    let mut tls = pki.connect(server.addr);
    write!(tls, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut tls).status, 200);
}

/// Starts the binary with `args` and `env`, expecting it to exit; its code
/// and stderr.
fn refused_start(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let data = TempDir::new("tls-refused");
    let mut command = command(data.path());
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let code = wait_exit(&mut child, Duration::from_secs(20));
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (code, stderr)
}

#[test]
fn plain_http_off_loopback_and_half_a_pair_are_refused_at_start() {
    let (code, stderr) = refused_start(&["--mode", "http", "--bind", "0.0.0.0:0"], &[]);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("is not a loopback address") && stderr.contains("allow_insecure_http"),
        "{stderr}"
    );
    let pki = Pki::new();
    let cert = pki.file("cert.pem");
    let (code, stderr) = refused_start(
        &["--mode", "http", "--bind", "127.0.0.1:0"],
        &[("TABAGENT_TLS_CERT", cert.to_str().unwrap())],
    );
    assert_ne!(code, Some(0));
    assert!(stderr.contains("tls_cert and tls_key"), "{stderr}");
    // A key that is not the certificate's: refused before anything listens.
    let (code, stderr) = refused_start(
        &["--mode", "http", "--bind", "127.0.0.1:0"],
        &[
            ("TABAGENT_TLS_CERT", cert.to_str().unwrap()),
            ("TABAGENT_TLS_KEY", cert.to_str().unwrap()),
        ],
    );
    assert_ne!(code, Some(0));
    assert!(stderr.contains("tls_key"), "{stderr}");
    assert!(!stderr.contains("HTTP on"), "{stderr}");
}
