//! A minimal Prometheus endpoint for a mount (`--metrics ADDR`): any HTTP GET on the
//! address is answered with the block cache's counters in the text exposition format.
//! One thread, one connection at a time; scrapes are small and rare.

use anyhow::{Context, Result};
use meridian_fs::cache::BlockCache;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

/// Starts serving metrics on `addr` (e.g. `127.0.0.1:9464`).
pub fn serve(addr: &str, cache: Arc<BlockCache>) -> Result<()> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("cannot listen for metrics on {addr}"))?;
    std::thread::Builder::new().name("meridian-metrics".into()).spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(2)));
            let mut request = [0u8; 1024];
            let _ = conn.read(&mut request);
            let body = cache.prometheus();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    })?;
    Ok(())
}
