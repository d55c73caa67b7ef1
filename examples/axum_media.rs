//! Media in an axum service: an upload form (multipart, each file streamed
//! into the store, the size limit enforced while it streams) and a
//! download route with `Range` support and safe headers, for stores that
//! cannot hand out signed links (the local folder).
//!
//! ```text
//! cargo run --example axum_media            # requests sent in-process
//! SERVE=127.0.0.1:3000 cargo run --example axum_media   # a real server
//! ```
//!
//! Without `SERVE` the example sends its requests to the router
//! in-process (no port) and prints what each response says.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use dreamnet_db::{Error, MediaStorage, NewMedia, Store};
use http_body_util::BodyExt;
use tower::ServiceExt;
use uuid::Uuid;

const FORM: &str = r#"<!doctype html>
<form method="post" action="/media" enctype="multipart/form-data">
  <input type="file" name="file" multiple> <button>Upload</button>
</form>"#;

/// The status a store error maps to.
fn status(e: &Error) -> StatusCode {
    match e {
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::InvalidInput {
            field: dreamnet_db::Field::Content,
            reason,
        } if reason.starts_with("larger") => StatusCode::PAYLOAD_TOO_LARGE,
        Error::InvalidInput {
            field: dreamnet_db::Field::Content,
            ..
        } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Error::InvalidInput { .. } | Error::UploadInterrupted { .. } => StatusCode::BAD_REQUEST,
        e if e.is_transient() => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn refuse(e: Error) -> Response {
    (status(&e), e.to_string()).into_response()
}

/// Each file part goes into the store as it arrives. A real service takes
/// the owner from its session.
async fn upload(State(store): State<Store>, mut form: Multipart) -> Response {
    let owner = Uuid::nil();
    let mut stored = Vec::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return (StatusCode::BAD_REQUEST, e.body_text()).into_response(),
        };
        let name = field.file_name().unwrap_or("file").to_owned();
        match store
            .media()
            .upload(NewMedia::for_user(owner, name), field)
            .await
        {
            Ok(m) => stored.push(m),
            Err(e) => return refuse(e),
        }
    }
    Json(stored).into_response()
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` against a file of `size` bytes:
/// `Ok(None)` for no (or an ignorable) header, `Err` if unsatisfiable.
fn parse_range(headers: &HeaderMap, size: u64) -> Result<Option<std::ops::Range<u64>>, ()> {
    let Some(spec) = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None); // several ranges: send the whole file
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let range = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            size.saturating_sub(n)..size
        }
        (a, "") => a.parse().map_err(|_| ())?..size,
        (a, b) => {
            let (a, b): (u64, u64) = (a.parse().map_err(|_| ())?, b.parse().map_err(|_| ())?);
            a..b.saturating_add(1).min(size)
        }
    };
    if range.start >= range.end {
        return Err(());
    }
    Ok(Some(range))
}

async fn download(
    State(store): State<Store>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> Response {
    let media = store.media();
    let head = match media.head(id).await {
        Ok(h) => h,
        Err(e) => return refuse(e),
    };
    let range = match parse_range(&headers, head.size_bytes) {
        Ok(r) => r,
        Err(()) => {
            let unsatisfiable = format!("bytes */{}", head.size_bytes);
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, unsatisfiable)],
            )
                .into_response();
        }
    };
    let got = match &range {
        Some(r) => media.get_range(id, r.clone()).await,
        None => media.get(id).await,
    };
    let got = match got {
        Ok(g) => g,
        Err(e) => return refuse(e),
    };
    let m = &got.media;
    let r = got.range.clone();
    let mut response = Response::new(Body::empty());
    let h = response.headers_mut();
    let value = |s: String| HeaderValue::from_str(&s).expect("a safe header value");
    h.insert(header::CONTENT_TYPE, value(m.content_type.clone()));
    h.insert(header::CONTENT_LENGTH, value((r.end - r.start).to_string()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, value(format!("\"{}\"", m.sha256)));
    h.insert(
        header::CONTENT_DISPOSITION,
        value(m.content_disposition(false)),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        let content_range = format!("bytes {}-{}/{}", r.start, r.end - 1, m.size_bytes);
        response
            .headers_mut()
            .insert(header::CONTENT_RANGE, value(content_range));
    }
    *response.body_mut() = Body::from_stream(got.into_stream());
    response
}

fn app(store: Store) -> Router {
    Router::new()
        .route("/", get(|| async { Html(FORM) }))
        .route("/media", axum::routing::post(upload))
        .route("/media/{id}", get(download))
        // The store enforces its own limit while streaming; axum's default
        // 2 MB limit on buffered bodies does not apply to a stream.
        .layer(DefaultBodyLimit::disable())
        .with_state(store)
}

fn multipart(name: &str, bytes: &[u8]) -> Request<Body> {
    let boundary = "dreamnet-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Request::post("/media")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .unwrap()
}

async fn show(app: &Router, what: &str, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    println!("{what}: {status}");
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_RANGE,
        header::CONTENT_DISPOSITION,
    ] {
        if let Some(v) = res.headers().get(&name) {
            println!("  {name}: {}", v.to_str().unwrap_or("?"));
        }
    }
    let body = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, body)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::temp_dir().join(format!("dreamnet-axum-media-{}", Uuid::new_v4()));
    let store = Store::builder()
        .media_storage(MediaStorage::local(&root))
        .media_max_bytes(1024 * 1024)
        .in_memory();
    let app = app(store);

    if let Ok(addr) = std::env::var("SERVE") {
        println!("serving on http://{addr}/ (files under {})", root.display());
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        axum::serve(listener, app).await?;
        return Ok(());
    }

    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.extend((0..100_000u32).map(|i| (i % 251) as u8));
    let (_, body) = show(&app, "upload", multipart("naïve plan.png", &png)).await;
    let stored: serde_json::Value = serde_json::from_slice(&body)?;
    let id = stored[0]["id"].as_str().unwrap().to_owned();
    println!("  stored as {id}");

    let too_big = vec![b'a'; 2 * 1024 * 1024];
    let (_, body) = show(
        &app,
        "upload of 2 MiB (limit 1 MiB)",
        multipart("big.txt", &too_big),
    )
    .await;
    println!("  {}", String::from_utf8_lossy(&body));

    let get = |range: Option<&str>| {
        let mut req = Request::get(format!("/media/{id}"));
        if let Some(r) = range {
            req = req.header(header::RANGE, r);
        }
        req.body(Body::empty()).unwrap()
    };
    let (_, body) = show(&app, "download", get(None)).await;
    assert_eq!(body, png);
    let (_, body) = show(&app, "download bytes=0-7", get(Some("bytes=0-7"))).await;
    assert_eq!(body, &png[..8]);
    let (_, body) = show(&app, "download bytes=-4", get(Some("bytes=-4"))).await;
    assert_eq!(body, &png[png.len() - 4..]);
    show(&app, "download bytes=999999-", get(Some("bytes=999999-"))).await;
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
