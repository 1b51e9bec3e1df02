//! A minimal Prometheus text endpoint on a loopback address (off unless configured).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves `render()` as `text/plain` to every HTTP request on `addr`.
pub async fn serve(addr: SocketAddr, render: impl Fn() -> String + Send + Sync + 'static) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, %e, "cannot bind the metrics endpoint");
            return;
        }
    };
    tracing::info!(%addr, "metrics endpoint");
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let body = render();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut buf)).await;
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}
