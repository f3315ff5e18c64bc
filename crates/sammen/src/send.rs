//! `sammen send`: post message files to a broker over mutual TLS and print each answer.

use anyhow::{bail, Context, Result};
use axum::body::Body;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use sammen_identity::rustls::pki_types::ServerName;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Exit codes: 0 all accepted or duplicate, 1 any refused or invalid, 2 any transport error.
pub fn run(url: &str, cert: &Path, key: &Path, ca: &[PathBuf], files: &[PathBuf]) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sammen send: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async {
        let target = match Target::parse(url) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("sammen send: {e:#}");
                return ExitCode::from(2);
            }
        };
        let tls = match sammen_identity::client_config_from_files(cert, key, ca) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("sammen send: {e}");
                return ExitCode::from(2);
            }
        };
        let mut worst = 0u8;
        for f in files {
            let code = match send_one(&target, tls.clone(), f).await {
                Ok((status, body)) => {
                    let answer = serde_json::from_slice::<serde_json::Value>(&body)
                        .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned().into());
                    println!(
                        "{}",
                        serde_json::json!({"file": f.display().to_string(), "status": status, "answer": answer})
                    );
                    u8::from(!matches!(status, 200 | 202))
                }
                Err(e) => {
                    println!(
                        "{}",
                        serde_json::json!({"file": f.display().to_string(), "error": format!("{e:#}")})
                    );
                    2
                }
            };
            worst = worst.max(code);
        }
        ExitCode::from(worst)
    })
}

/// Where a broker is (`--url`); `sammen inbox` uses it too.
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) base: String,
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let uri: axum::http::Uri = url.parse().with_context(|| format!("--url {url:?}"))?;
        if uri.scheme_str() != Some("https") {
            bail!("--url must start with https://");
        }
        let host = uri.host().context("--url has no host")?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(Target {
            host,
            port: uri.port_u16().unwrap_or(443),
            base: uri.path().trim_end_matches('/').to_string(),
        })
    }
}

fn content_type(bytes: &[u8]) -> &'static str {
    let head = &bytes[..bytes.len().min(4096)];
    if head.windows(19).any(|w| w == b"http://hl7.org/fhir") {
        "application/fhir+xml"
    } else {
        "application/xml"
    }
}

async fn send_one(
    t: &Target,
    tls: Arc<sammen_identity::rustls::ClientConfig>,
    file: &Path,
) -> Result<(u16, Vec<u8>)> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let tcp = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
        .await
        .with_context(|| format!("connecting to {}:{}", t.host, t.port))?;
    let name = ServerName::try_from(t.host.clone()).context("server name")?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::post(format!("{}/v1/messages", t.base))
        .header("host", format!("{}:{}", t.host, t.port))
        .header("content-type", content_type(&bytes))
        .body(Body::from(bytes))
        .context("building the request")?;
    let resp = sender.send_request(req).await.context("sending")?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .context("reading the answer")?
        .to_bytes();
    drop(sender);
    conn.abort();
    Ok((status, body.to_vec()))
}
