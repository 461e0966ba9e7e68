//! `beeline web`: a small HTTP server with a page to upload, find, tag, preview and
//! download files, an interactive file-tag graph and the cluster's state.
//!
//! Everything the page needs is inside the binary ([`assets`]): no CDN, nothing fetched
//! at run time. The storage is reached through the client library ([`backend`]), whose
//! calls block, on tokio's blocking threads, a bounded number at a time.
//!
//! Security: on 127.0.0.1 or ::1 (the default) the server answers only requests whose
//! Host is that address or `localhost` (no DNS rebinding). On any other address it makes
//! an access token, prints it once in the URL to open, and refuses (401) every request
//! without it; the page trades the URL's token for an HttpOnly SameSite=Strict cookie and
//! then drops it from the address bar. Requests that change anything need the
//! `X-Beeline: 1` header (which a form or a cross-site page cannot send without a CORS
//! preflight, which this server never grants). The cluster key never leaves the server.
//! Every response carries a Content-Security-Policy without inline scripts, and the page
//! writes names only through `textContent`.

pub mod assets;
pub mod backend;
mod http;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use backend::{Backend, Limits, Opener, WebError};

/// What `beeline web` is told.
#[derive(Debug, Clone)]
pub struct WebOptions {
    pub listen: SocketAddr,
    /// Largest upload accepted.
    pub upload_bytes_max: u64,
    /// Largest file previewed in the page.
    pub preview_bytes_max: u64,
    /// Open connections at most; more wait in the kernel's accept queue.
    pub connections_max: usize,
    /// Storage operations running at once at most (each holds a connection to storage).
    pub operations_max: usize,
    /// Uploads running at once at most.
    pub uploads_max: usize,
    /// How long a request waits for a free operation slot before a 503.
    pub queue_wait_ms: u64,
    pub limits: Limits,
}

impl WebOptions {
    pub fn new(listen: SocketAddr) -> Self {
        WebOptions {
            listen,
            upload_bytes_max: 1 << 30,
            preview_bytes_max: 4 << 20,
            connections_max: 64,
            operations_max: 8,
            uploads_max: 2,
            queue_wait_ms: 10_000,
            limits: Limits::default(),
        }
    }
}

/// Whether `address` is the local host only, where the server runs without a token.
pub fn is_localhost(address: &SocketAddr) -> bool {
    match address.ip() {
        std::net::IpAddr::V4(ip) => ip == std::net::Ipv4Addr::LOCALHOST,
        std::net::IpAddr::V6(ip) => ip == std::net::Ipv6Addr::LOCALHOST,
    }
}

/// A fresh access token: 32 random bytes in hex.
pub fn new_token() -> String {
    crate::keyfile::to_hex(&rand::random::<[u8; 32]>())
}

/// Shared by every request.
pub(crate) struct State {
    opener: Opener,
    /// Idle connections to the storage, at most `operations_max`.
    idle: Mutex<Vec<Backend>>,
    operations: Arc<tokio::sync::Semaphore>,
    uploads: Arc<tokio::sync::Semaphore>,
    token: Option<String>,
    port: u16,
    options: WebOptions,
}

impl State {
    fn take(&self) -> Result<Backend, WebError> {
        let idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop();
        match idle {
            Some(backend) => Ok(backend),
            None => self.opener.open(),
        }
    }

    fn give(&self, backend: Backend) {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < self.options.operations_max {
            idle.push(backend);
        }
    }

    /// Runs `work` on a blocking thread with a connection to the storage, once one of
    /// the `operations_max` slots is free (503 after `queue_wait_ms`).
    pub(crate) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&mut Backend) -> Result<T, WebError> + Send + 'static,
    ) -> Result<T, WebError> {
        let wait = Duration::from_millis(self.options.queue_wait_ms);
        let permit = tokio::time::timeout(wait, self.operations.clone().acquire_owned())
            .await
            .map_err(|_| WebError::new(503, "the server is busy with other requests: retry in a moment"))?
            .map_err(|_| WebError::new(503, "the server is shutting down"))?;
        let state = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut backend = state.take()?;
            let result = work(&mut backend);
            // A connection whose request failed on the storage side may be broken: only
            // keep those that worked or failed on the request itself.
            if result.as_ref().err().is_none_or(|error| error.status < 500) {
                state.give(backend);
            }
            result
        })
        .await
        .map_err(|error| WebError::new(500, format!("a storage request panicked ({error}); this is a bug")))?
    }
}

/// Serves until `shutdown` completes. Prints the address to open (with the token when
/// there is one) on standard output once listening.
pub async fn serve(
    options: WebOptions,
    opener: Opener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    // Fail early, with the client library's own message, when the storage is not there.
    let probe = opener.clone();
    let first = tokio::task::spawn_blocking(move || probe.open())
        .await
        .map_err(|error| format!("cannot reach the storage: {error}"))?
        .map_err(|error| error.message)?;
    let listener = tokio::net::TcpListener::bind(options.listen).await.map_err(|error| {
        format!("cannot listen on {}: {error}; pick another address with --listen HOST:PORT", options.listen)
    })?;
    let bound = listener.local_addr().map_err(|error| format!("cannot read the bound address: {error}"))?;
    let token = (!is_localhost(&bound)).then(new_token);
    let state = Arc::new(State {
        opener,
        idle: Mutex::new(vec![first]),
        operations: Arc::new(tokio::sync::Semaphore::new(options.operations_max.max(1))),
        uploads: Arc::new(tokio::sync::Semaphore::new(options.uploads_max.max(1))),
        token: token.clone(),
        port: bound.port(),
        options: options.clone(),
    });
    let host = match bound {
        SocketAddr::V6(_) => format!("[{}]:{}", bound.ip(), bound.port()),
        SocketAddr::V4(_) => bound.to_string(),
    };
    match &token {
        Some(token) => println!(
            "beeline web: open http://{host}/?token={token} (listening beyond localhost: requests need this token; it is shown only here)"
        ),
        None => println!("beeline web: open http://{host}/ (localhost only)"),
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let listener = http::Limited::new(listener, options.connections_max);
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|error| format!("the web server failed: {error}"))
}
