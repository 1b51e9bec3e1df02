//! The witness's HTTP/1.1 server (hyper): `POST /add-checkpoint` and
//! `GET /metrics`, keep-alive, bodies bounded, slow clients timed out, and
//! a bound on open connections.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::protocol::MAX_BODY;
use super::{Answer, Witness};

/// Longest a client may take to send a request's headers (also the idle
/// time a kept-alive connection may sit between requests).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a client may take to send a request's body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 1024;

/// Serves `witness` on `listener` until `shutdown` changes (or closes).
pub async fn serve(
    listener: TcpListener,
    witness: Arc<Witness>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors and the like: back off, do not spin.
                tracing::warn!("witness: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let w = witness.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req| handle(w.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
    }
}

async fn handle(
    w: Arc<Witness>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let answer = match (req.method(), req.uri().path()) {
        (&Method::POST, "/add-checkpoint") => {
            let body = Limited::new(req.into_body(), MAX_BODY);
            match tokio::time::timeout(BODY_TIMEOUT, body.collect()).await {
                Ok(Ok(b)) => w.add_checkpoint(&b.to_bytes()).await,
                Ok(Err(e)) => {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        Answer::text(413, format!("the body is over {MAX_BODY} bytes\n"))
                    } else {
                        Answer::text(400, format!("cannot read the body: {e}\n"))
                    }
                }
                Err(_) => Answer::text(408, "the body took too long\n"),
            }
        }
        (&Method::GET, "/metrics") => Answer {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: w.metrics_text(),
        },
        (_, "/add-checkpoint") => Answer::text(405, "add-checkpoint takes POST\n"),
        _ => Answer::text(404, "no such endpoint\n"),
    };
    let mut r = Response::new(Full::new(Bytes::from(answer.body)));
    *r.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = hyper::header::HeaderValue::from_str(answer.content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(r)
}

/// Binds `cfg.listen`, opens the witness's state and serves until
/// `shutdown`; returns the bound address through `bound` first.
pub async fn run(
    cfg: &super::config::WitnessConfig,
    shutdown: tokio::sync::watch::Receiver<bool>,
    bound: impl FnOnce(std::net::SocketAddr, &Witness),
) -> Result<(), String> {
    let witness = Arc::new(Witness::open(cfg).map_err(|e| e.to_string())?);
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    bound(addr, &witness);
    serve(listener, witness, shutdown).await;
    Ok(())
}
