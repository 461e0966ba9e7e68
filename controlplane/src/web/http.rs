//! The routes, the access checks and the connection limit of `beeline web`.

use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State as Extract};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::backend::{FileView, TagView, WebError};
use super::{State, assets};

type Shared = Arc<State>;

/// Tags one request may add or remove at most.
const TAGS_PER_REQUEST_MAX: usize = 64;
/// Autocomplete answers at most this many tags.
const COMPLETIONS_MAX: usize = 20;
/// Related files listed at most.
const RELATED_MAX: usize = 20;
/// Hops a graph neighbourhood may span at most.
const GRAPH_DEPTH_MAX: u32 = 4;
/// Pieces of an upload or download in flight between the HTTP side and the storage side.
const STREAM_QUEUE_PIECES: usize = 8;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; \
connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(Body { error: self.message })).into_response()
    }
}

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/app.js", get(|| async { asset("text/javascript; charset=utf-8", assets::APP_JS) }))
        .route("/app.css", get(|| async { asset("text/css; charset=utf-8", assets::APP_CSS) }))
        .route("/cytoscape.min.js", get(|| async { asset("text/javascript; charset=utf-8", assets::CYTOSCAPE_JS) }))
        .route("/api/files", get(search))
        .route("/api/file", get(details).delete(remove))
        .route("/api/tags", get(complete).post(edit_tags))
        .route("/api/upload", axum::routing::put(upload))
        .route("/api/download", get(download))
        .route("/api/preview", get(preview))
        .route("/api/graph", get(graph))
        .route("/api/cluster", get(cluster))
        .layer(axum::extract::DefaultBodyLimit::max(64 << 10))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", assets::INDEX_HTML)
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie_name(port: u16) -> String {
    format!("beeline_token_{port}")
}

fn cookie_token<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(header::COOKIE).iter().filter_map(|value| value.to_str().ok()).find_map(|cookies| {
        cookies.split(';').find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
    })
}

fn query_token(request: &Request) -> Option<&str> {
    request.uri().query()?.split('&').find_map(|pair| pair.strip_prefix("token="))
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{message}\n")).into_response()
}

/// The access checks, before any route: the token (or, on localhost, the Host), then
/// the header every change needs.
async fn guard(Extract(state): Extract<Shared>, request: Request, next: Next) -> Response {
    match &state.token {
        Some(token) => {
            if let Some(offered) = query_token(&request) {
                if !equal_in_constant_time(offered.as_bytes(), token.as_bytes()) {
                    return refuse(StatusCode::UNAUTHORIZED, "wrong token: open the URL `beeline web` printed");
                }
                // Trade the URL's token for a cookie the page's scripts cannot read, and
                // drop it from the address bar.
                let cookie = format!("{}={token}; HttpOnly; SameSite=Strict; Path=/", cookie_name(state.port));
                return Response::builder()
                    .status(StatusCode::SEE_OTHER)
                    .header(header::LOCATION, "/")
                    .header(header::SET_COOKIE, cookie)
                    .body(Body::empty())
                    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
            }
            let bearer = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "));
            let offered = bearer.or_else(|| cookie_token(request.headers(), &cookie_name(state.port)));
            if !offered.is_some_and(|offered| equal_in_constant_time(offered.as_bytes(), token.as_bytes())) {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "this server needs its access token: open the URL with ?token= that `beeline web` printed",
                );
            }
        }
        None => {
            let host = request.headers().get(header::HOST).and_then(|value| value.to_str().ok()).unwrap_or("");
            let allowed = [
                format!("127.0.0.1:{}", state.port),
                format!("localhost:{}", state.port),
                format!("[::1]:{}", state.port),
            ];
            if !allowed.iter().any(|allowed| allowed == host) {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "wrong Host for a localhost server: open it as 127.0.0.1 or localhost, or listen elsewhere with --listen (which needs a token)",
                );
            }
        }
    }
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
    if changes && request.headers().get("x-beeline").is_none_or(|value| value != "1") {
        return refuse(StatusCode::FORBIDDEN, "changes need the X-Beeline: 1 header (the page sends it)");
    }
    next.run(request).await
}

#[derive(Deserialize)]
struct NameQuery {
    name: String,
}

fn checked_name(name: &str) -> Result<(), WebError> {
    crate::control::check_name_length(name).map_err(|message| WebError::new(400, message))?;
    crate::control::validate_name(name).map_err(|message| WebError::new(400, message))
}

#[derive(Deserialize)]
struct SearchQuery {
    /// A tag expression ([`crate::graph::expr`]).
    #[serde(default)]
    q: String,
    /// A substring of the name.
    #[serde(default)]
    name: String,
}

#[derive(Serialize)]
struct FileWithTags {
    #[serde(flatten)]
    file: FileView,
    tags: Vec<TagView>,
}

async fn search(Extract(state): Extract<Shared>, Query(query): Query<SearchQuery>) -> Result<Response, WebError> {
    if query.name.len() > crate::control::NAME_BYTES_MAX {
        return Err(WebError::new(400, "the name to look for is longer than any name: shorten it"));
    }
    let limits = state.options.limits;
    let files = state
        .run(move |backend| {
            let files = backend.search(&query.q, &query.name, &limits)?;
            let mut out = Vec::with_capacity(files.len());
            for file in files {
                let tags = backend.tags_of(&file.name)?;
                out.push(FileWithTags { file, tags });
            }
            Ok(out)
        })
        .await?;
    Ok(axum::Json(files).into_response())
}

#[derive(Serialize)]
struct Details {
    #[serde(flatten)]
    file: FileView,
    tags: Vec<TagView>,
    related: Vec<crate::graph::Related>,
    preview: &'static str,
}

fn preview_kind(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    let extension = lower.rsplit_once('.').map(|(_, extension)| extension).unwrap_or("");
    match extension {
        "png" | "jpg" | "jpeg" | "gif" | "webp" => "image",
        _ => "text",
    }
}

async fn details(Extract(state): Extract<Shared>, Query(query): Query<NameQuery>) -> Result<Response, WebError> {
    checked_name(&query.name)?;
    let preview_bytes_max = state.options.preview_bytes_max;
    let details = state
        .run(move |backend| {
            let record = backend.stat(&query.name)?;
            let tags = backend.tags_of(&query.name)?;
            let related = backend.related(&query.name, RELATED_MAX)?;
            let preview = if record.size_bytes > preview_bytes_max { "none" } else { preview_kind(&record.name) };
            Ok(Details { file: FileView::from(&record), tags, related, preview })
        })
        .await?;
    Ok(axum::Json(details).into_response())
}

async fn remove(Extract(state): Extract<Shared>, Query(query): Query<NameQuery>) -> Result<Response, WebError> {
    checked_name(&query.name)?;
    let record = state.run(move |backend| backend.remove(&query.name)).await?;
    Ok(axum::Json(FileView::from(&record)).into_response())
}

#[derive(Deserialize)]
struct PrefixQuery {
    #[serde(default)]
    prefix: String,
}

async fn complete(Extract(state): Extract<Shared>, Query(query): Query<PrefixQuery>) -> Result<Response, WebError> {
    if query.prefix.len() > crate::metadata::TAG_BYTES_MAX {
        return Ok(axum::Json(Vec::<String>::new()).into_response());
    }
    let tags = state.run(move |backend| backend.complete(&query.prefix, COMPLETIONS_MAX)).await?;
    Ok(axum::Json(tags).into_response())
}

#[derive(Deserialize)]
struct TagEdit {
    name: String,
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

fn checked_tag(tag: &str) -> Result<(), WebError> {
    crate::metadata::validate_tag(tag).map_err(|message| WebError::new(400, message))
}

async fn edit_tags(
    Extract(state): Extract<Shared>,
    axum::Json(edit): axum::Json<TagEdit>,
) -> Result<Response, WebError> {
    checked_name(&edit.name)?;
    if edit.add.len() + edit.remove.len() > TAGS_PER_REQUEST_MAX {
        return Err(WebError::new(400, format!("at most {TAGS_PER_REQUEST_MAX} tags per change: split it")));
    }
    for tag in edit.add.iter().chain(&edit.remove) {
        checked_tag(tag)?;
    }
    let tags = state
        .run(move |backend| {
            if !edit.add.is_empty() {
                backend.add_tags(&edit.name, &edit.add)?;
            }
            if !edit.remove.is_empty() {
                backend.remove_tags(&edit.name, &edit.remove)?;
            }
            backend.tags_of(&edit.name)
        })
        .await?;
    Ok(axum::Json(tags).into_response())
}

/// One piece of a stream between the HTTP side and the storage side. The upload's reader
/// sees the end only on [`Piece::End`]: a channel closed without it (the browser went
/// away) is an error, so a cut-off upload never records a shorter file.
enum Piece {
    Data(Bytes),
    End,
    Failed(String),
}

struct ChannelReader {
    receiver: mpsc::Receiver<Piece>,
    current: Bytes,
    ended: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.receiver.blocking_recv() {
                Some(Piece::Data(bytes)) => self.current = bytes,
                Some(Piece::End) => self.ended = true,
                Some(Piece::Failed(reason)) => return Err(std::io::Error::other(reason)),
                None => return Err(std::io::Error::other("the upload was cut off")),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

async fn upload(
    Extract(state): Extract<Shared>,
    Query(query): Query<NameQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, WebError> {
    checked_name(&query.name)?;
    let limit = state.options.upload_bytes_max;
    let too_large = || {
        WebError::new(413, format!("the upload is larger than {limit} bytes: raise `beeline web --upload-bytes-max`"))
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|declared| declared > limit) {
        return Err(too_large());
    }
    let _upload = state
        .uploads
        .clone()
        .try_acquire_owned()
        .map_err(|_| WebError::new(429, "too many uploads at once: wait for one to finish"))?;
    let (sender, receiver) = mpsc::channel(STREAM_QUEUE_PIECES);
    let name = query.name.clone();
    let put = state.run(move |backend| {
        let mut reader = ChannelReader { receiver, current: Bytes::new(), ended: false };
        backend.put(&name, &mut reader)
    });
    let feed = async move {
        let mut stream = body.into_data_stream();
        let mut total_bytes = 0u64;
        while let Some(piece) = stream.next().await {
            let piece = match piece {
                Ok(piece) => piece,
                Err(error) => {
                    let _ = sender.send(Piece::Failed(format!("the upload broke off: {error}"))).await;
                    return Err(WebError::new(400, format!("the upload broke off: {error}")));
                }
            };
            total_bytes += piece.len() as u64;
            if total_bytes > limit {
                let _ = sender.send(Piece::Failed("the upload is too large".into())).await;
                return Err(too_large());
            }
            if sender.send(Piece::Data(piece)).await.is_err() {
                // The put ended early (its own error says why).
                return Ok(total_bytes);
            }
        }
        let _ = sender.send(Piece::End).await;
        Ok(total_bytes)
    };
    let (fed, stored) = tokio::join!(feed, put);
    fed?;
    let record = stored?;
    Ok((StatusCode::CREATED, axum::Json(FileView::from(&record))).into_response())
}

struct ChannelWriter {
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sender
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the browser closed the download"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `attachment; filename="..."` with an ASCII stand-in and the exact UTF-8 name (RFC 6266).
fn content_disposition(name: &str) -> String {
    let base = name.rsplit('/').next().filter(|base| !base.is_empty()).unwrap_or("download");
    let ascii: String =
        base.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' { c } else { '_' }).collect();
    let mut encoded = String::new();
    for byte in base.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

async fn download(Extract(state): Extract<Shared>, Query(query): Query<NameQuery>) -> Result<Response, WebError> {
    checked_name(&query.name)?;
    let name = query.name.clone();
    let record = state.run(move |backend| backend.stat(&name)).await?;
    let (sender, receiver) = mpsc::channel(STREAM_QUEUE_PIECES);
    let name = query.name.clone();
    let errors = sender.clone();
    let streaming = state.clone();
    tokio::spawn(async move {
        let result = streaming.run(move |backend| backend.get(&name, &mut ChannelWriter { sender })).await;
        if let Err(error) = result {
            // Breaks the response off: the browser reports a failed download rather than
            // keeping a file whose hash did not check out.
            let _ = errors.send(Err(std::io::Error::other(error.message))).await;
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|piece| (piece, receiver))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, record.size_bytes)
        .header(header::CONTENT_DISPOSITION, content_disposition(&record.name))
        .body(Body::from_stream(stream))
        .map_err(|error| WebError::new(500, format!("cannot build the response: {error}")))
}

/// The image type of `bytes` by its magic bytes, if it is one the page previews.
fn image_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// The file for the page's preview: an image (by its magic bytes) or UTF-8 text; never
/// anything a browser would run.
async fn preview(Extract(state): Extract<Shared>, Query(query): Query<NameQuery>) -> Result<Response, WebError> {
    checked_name(&query.name)?;
    let limit = state.options.preview_bytes_max;
    let bytes = state
        .run(move |backend| {
            let record = backend.stat(&query.name)?;
            if record.size_bytes > limit {
                return Err(WebError::new(413, format!("files over {limit} bytes are not previewed: download it")));
            }
            let mut bytes = Vec::with_capacity(record.size_bytes as usize);
            backend.get(&query.name, &mut bytes)?;
            Ok(bytes)
        })
        .await?;
    let content_type = match image_type(&bytes) {
        Some(image) => image,
        None if std::str::from_utf8(&bytes).is_ok() => "text/plain; charset=utf-8",
        None => return Err(WebError::new(415, "neither text nor an image the page shows: download it")),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_DISPOSITION, "inline"),
            (header::CONTENT_SECURITY_POLICY, "sandbox; default-src 'none'"),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Deserialize)]
struct GraphQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    name: String,
    /// A file or tag name: its neighbourhood instead of the search's files.
    around: Option<String>,
    depth: Option<u32>,
}

async fn graph(Extract(state): Extract<Shared>, Query(query): Query<GraphQuery>) -> Result<Response, WebError> {
    let limits = state.options.limits;
    let depth = query.depth.unwrap_or(2).min(GRAPH_DEPTH_MAX);
    let around = query.around.filter(|around| !around.is_empty());
    let graph =
        state.run(move |backend| backend.graph(&query.q, &query.name, around.as_deref(), depth, &limits)).await?;
    Ok(axum::Json(graph).into_response())
}

async fn cluster(Extract(state): Extract<Shared>) -> Result<Response, WebError> {
    let view = state.run(|backend| backend.cluster()).await?;
    Ok(axum::Json(view).into_response())
}

/// A TCP listener that holds at most `max` connections open: the next accept waits
/// until one closes.
pub(crate) struct Limited {
    listener: tokio::net::TcpListener,
    slots: Arc<Semaphore>,
}

impl Limited {
    pub(crate) fn new(listener: tokio::net::TcpListener, max: usize) -> Self {
        Limited { listener, slots: Arc::new(Semaphore::new(max.max(1))) }
    }
}

/// A connection with no bytes in either direction for this long is closed, so that
/// clients that open connections and send nothing (or trickle a request) cannot hold all
/// the slots for long.
const IDLE_MS: u64 = 60_000;

/// A connection holding its slot until it is dropped, closed once idle for [`IDLE_MS`].
pub(crate) struct Connection {
    stream: tokio::net::TcpStream,
    idle: Pin<Box<tokio::time::Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    fn new(stream: tokio::net::TcpStream, slot: OwnedSemaphorePermit) -> Self {
        let idle = Box::pin(tokio::time::sleep(std::time::Duration::from_millis(IDLE_MS)));
        Connection { stream, idle, _slot: slot }
    }

    fn progressed(&mut self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(IDLE_MS);
        self.idle.as_mut().reset(deadline);
    }
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.progressed();
                }
                Poll::Ready(result)
            }
            Poll::Pending => match self.idle.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the connection was idle too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &result
            && *n > 0
        {
            self.progressed();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for Limited {
    type Io = Connection;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Connection, std::net::SocketAddr) {
        let slot = match self.slots.clone().acquire_owned().await {
            Ok(slot) => slot,
            Err(_) => std::future::pending().await,
        };
        loop {
            match self.listener.accept().await {
                Ok((stream, address)) => return (Connection::new(stream, slot), address),
                Err(error) => {
                    // Out of file descriptors and the like: wait a little, as axum's own
                    // listener does, rather than spin.
                    tracing::warn!("web: accept failed: {error}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_disposition_keeps_the_exact_name_and_an_ascii_stand_in() {
        assert_eq!(content_disposition("dir/a b.txt"), "attachment; filename=\"a_b.txt\"; filename*=UTF-8''a%20b.txt");
        assert_eq!(
            content_disposition("naïve\"x"),
            "attachment; filename=\"na_ve_x\"; filename*=UTF-8''na%C3%AFve%22x"
        );
    }

    #[test]
    fn tags_are_single_words() {
        assert!(checked_tag("rust").is_ok());
        for bad in ["", "a b", "a|b", "\u{7}"] {
            assert!(checked_tag(bad).is_err(), "{bad:?}");
        }
        assert!(checked_tag(&"x".repeat(crate::metadata::TAG_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn images_are_known_by_their_magic_bytes() {
        assert_eq!(image_type(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(image_type(b"<svg"), None);
        assert!(equal_in_constant_time(b"abc", b"abc") && !equal_in_constant_time(b"abc", b"abd"));
    }

    #[test]
    fn the_token_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; beeline_token_80=xyz; b=2"));
        assert_eq!(cookie_token(&headers, "beeline_token_80"), Some("xyz"));
        assert_eq!(cookie_token(&headers, "beeline_token_81"), None);
    }
}
