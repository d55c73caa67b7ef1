//! Media files step by step: upload (streamed), look up, read a range,
//! list a user's files, a signed link where the store can sign, erase a
//! user's files, sweep.
//!
//! ```text
//! cargo run --example media
//! DATABASE_URL=postgres://postgres@127.0.0.1/test cargo run --example media
//! MEDIA_S3_URL=s3://my-bucket AWS_ENDPOINT=http://127.0.0.1:5000 AWS_ALLOW_HTTP=true \
//!   AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
//!   cargo run --features s3 --example media
//! ```
//!
//! With nothing set it needs nothing installed: rows in memory, bytes in a
//! temporary folder (removed at the end). `DATABASE_URL` puts the rows in
//! PostgreSQL (migrations applied); `MEDIA_S3_URL` (feature `s3`) puts the
//! bytes in S3 or any S3-compatible service, configured by the usual AWS
//! variables.

use std::time::Duration;

use dreamnet_db::{MediaStorage, NewMedia, Store};
use uuid::Uuid;

fn storage(tmp: &std::path::Path) -> dreamnet_db::Result<MediaStorage> {
    #[cfg(feature = "s3")]
    if let Ok(url) = std::env::var("MEDIA_S3_URL") {
        println!("bytes: S3 at {url}");
        return MediaStorage::s3(&url, Vec::<(&str, String)>::new());
    }
    println!("bytes: the local folder {}", tmp.display());
    Ok(MediaStorage::local(tmp))
}

#[tokio::main]
async fn main() -> dreamnet_db::Result<()> {
    let tmp = std::env::temp_dir().join(format!("dreamnet-media-example-{}", Uuid::new_v4()));
    let builder = Store::builder()
        .media_storage(storage(&tmp)?)
        .media_max_bytes(10 * 1024 * 1024);
    let store = match std::env::var("DATABASE_URL") {
        Ok(url) => {
            println!("rows: PostgreSQL");
            builder
                .database_url(url)
                .run_migrations(true)
                .connect()
                .await?
        }
        Err(_) => {
            println!("rows: in memory");
            builder.in_memory()
        }
    };
    let media = store.media();
    let owner = Uuid::now_v7();

    // An upload from any AsyncRead: the type comes from the bytes, not the
    // name, and the name never reaches the storage key.
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.extend((0..200_000u32).map(|i| (i % 251) as u8));
    let file = media
        .upload_reader(
            NewMedia::for_user(owner, "../../holiday photo.png"),
            &png[..],
        )
        .await?;
    println!(
        "uploaded {} ({}, {} bytes, sha256 {}…) as {}",
        file.file_name,
        file.content_type,
        file.size_bytes,
        &file.sha256[..12],
        file.storage_key
    );
    println!("Content-Disposition: {}", file.content_disposition(false));

    // Refused: an executable named like an image.
    let exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00".to_vec();
    let refused = media
        .upload_reader(NewMedia::for_user(owner, "cat.png"), &exe[..])
        .await
        .unwrap_err();
    println!("refused: {refused}");

    let head = media.head(file.id).await?;
    assert_eq!(head, file);
    let range = media.get_range(file.id, 0..8).await?.bytes().await?;
    println!("first 8 bytes: {range:02x?}");
    let page = media.list(owner, 10, None).await?;
    println!("{} file(s) for the owner", page.items.len());

    match media.signed_url(file.id, Duration::from_secs(300)).await? {
        Some(url) => println!(
            "signed link (5 min): {}…",
            &url.as_str()[..url.as_str().len().min(80)]
        ),
        None => {
            println!("no signed links on this store: serve the bytes yourself (see axum_media)")
        }
    }

    // Erasing a user: their files go, rows then objects.
    let erased = media.delete_owner(owner).await?;
    println!("erased {erased} file(s)");
    let swept = media.sweep(Duration::from_secs(3600)).await?;
    println!("sweep: {swept:?}");
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
