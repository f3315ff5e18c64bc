//! `sammen inbox`: read a receiver's inbox over mutual TLS (`GET /v1/inbox/{gln}`), optionally store each
//! message and ack it. The client side of the HTTP inbox, for trying it out and as a reference.

use crate::send::Target;
use anyhow::{bail, Context, Result};
use axum::body::Body;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use sammen_identity::rustls::pki_types::ServerName;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// What to do with the inbox.
pub struct Args<'a> {
    pub url: &'a str,
    pub cert: &'a Path,
    pub key: &'a Path,
    pub ca: &'a [PathBuf],
    pub gln: &'a str,
    pub wait: u64,
    pub out: Option<&'a Path>,
    pub ack: bool,
}

type Tls = Arc<sammen_identity::rustls::ClientConfig>;

struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: axum::body::Bytes,
}

/// Exit codes: 0 done (inbox empty), 1 refused (4xx/5xx), 2 transport or usage error.
pub fn run(a: &Args<'_>) -> ExitCode {
    if a.ack && a.out.is_none() {
        eprintln!(
            "sammen inbox: --ack needs --out DIR (a message is acked only once it is stored)"
        );
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sammen inbox: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    rt.block_on(async {
        match drain(a).await {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                println!("{}", serde_json::json!({"error": format!("{e:#}")}));
                ExitCode::from(2)
            }
        }
    })
}

/// Without `--ack` one message is read (it comes back after the visibility timeout); with `--ack` every
/// message until the inbox answers 204.
async fn drain(a: &Args<'_>) -> Result<u8> {
    let target = Target::parse(a.url)?;
    let tls = sammen_identity::client_config_from_files(a.cert, a.key, a.ca)?;
    loop {
        let path = format!("{}/v1/inbox/{}?wait={}", target.base, a.gln, a.wait);
        let r = request(&target, tls.clone(), "GET", &path).await?;
        match r.status {
            204 => {
                println!("{}", serde_json::json!({"status": 204, "inbox": "empty"}));
                return Ok(0);
            }
            200 => {}
            s => {
                let answer: serde_json::Value = serde_json::from_slice(&r.body)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&r.body).into_owned().into());
                println!("{}", serde_json::json!({"status": s, "answer": answer}));
                return Ok(1);
            }
        }
        let h = |n: &str| {
            r.headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let message_id = h("sammen-message-id");
        let file = match a.out {
            Some(dir) => Some(store(dir, &message_id, &r.body)?),
            None => None,
        };
        let mut line = serde_json::json!({
            "status": 200,
            "message_id": message_id,
            "delivery_id": h("sammen-delivery-id"),
            "family": h("sammen-family"),
            "event": h("sammen-event"),
            "sender_gln": h("sammen-sender-gln"),
            "resend": h("sammen-resend") == "true",
            "redelivered": h("sammen-redelivered") == "true",
            "bytes": r.body.len(),
            "file": file.as_ref().map(|p| p.display().to_string()),
        });
        if !a.ack {
            println!("{line}");
            return Ok(0);
        }
        let ack_path = format!("{}{}", target.base, h("sammen-ack"));
        let acked = request(&target, tls.clone(), "POST", &ack_path).await?;
        line["acked"] = (acked.status == 200).into();
        println!("{line}");
        if acked.status != 200 {
            return Ok(1);
        }
    }
}

/// Write `DIR/<message_id>.xml` durably (temporary file, fsync, rename, directory fsync); an existing
/// file is a duplicate and left alone.
fn store(dir: &Path, message_id: &str, body: &[u8]) -> Result<PathBuf> {
    let name = sammen_subscriber::file_name_for(message_id)
        .map_err(|e| anyhow::anyhow!("message id cannot be a file name: {e}"))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(&name);
    if path.exists() {
        return Ok(path);
    }
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}

async fn request(t: &Target, tls: Tls, method: &str, path: &str) -> Result<Answer> {
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
    let req = match method {
        "GET" => hyper::Request::get(path),
        "POST" => hyper::Request::post(path),
        m => bail!("unsupported method {m}"),
    }
    .header("host", format!("{}:{}", t.host, t.port))
    .body(Body::empty())
    .context("building the request")?;
    let resp = sender.send_request(req).await.context("sending")?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .context("reading the answer")?
        .to_bytes();
    drop(sender);
    conn.abort();
    Ok(Answer {
        status,
        headers,
        body,
    })
}
