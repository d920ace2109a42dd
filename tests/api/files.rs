//! `/files/*` (multipart upload streamed to disk, download with ranges, metadata, delete) and
//! the admin file API (`/admin/files*`, `/admin/storage-stats`, `/admin/blocked-hashes*`).

use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use palaver_entity::audit_log;
use reqwest::multipart::{Form, Part};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::common::fixtures::{channel_with, db, users};
use crate::common::{Backend, Reply, TestApp, TestUser, spawn_app, spawn_app_with};

// ---------------------------------------------------------------------------------------
// Helpers

/// Deterministic bytes that look like ciphertext (not text, no known magic).
fn opaque(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut rng = Generator::new(seed);
    while out.len() < len {
        out.extend_from_slice(&rng.next_block());
    }
    out.truncate(len);
    out
}

/// xorshift64*, 8 bytes at a time; the first block starts with a byte no sniffer knows.
struct Generator {
    state: u64,
    first: bool,
}

impl Generator {
    fn new(seed: u64) -> Self {
        Self { state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, first: true }
    }
    fn next_block(&mut self) -> [u8; 8] {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let mut block = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        if self.first {
            block[..4].copy_from_slice(&[0x01, 0xfe, 0x00, 0xfd]);
            self.first = false;
        }
        block
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0\x90wS\xde";

/// Sends a multipart form the way the web client does (`name`, `channel_id`, then `file`).
async fn upload_form(app: &TestApp, token: &str, form: Form) -> Reply {
    let resp = app
        .client
        .post(app.url("/files/upload"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .expect("upload sent");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body read");
    let body =
        if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
    Reply { status, body, headers }
}

fn form(bytes: &[u8], name: Option<&str>, channel: Option<&str>) -> Form {
    let mut form = Form::new();
    if let Some(name) = name {
        form = form.text("name", name.to_string());
    }
    if let Some(channel) = channel {
        form = form.text("channel_id", channel.to_string());
    }
    form.part("file", Part::bytes(bytes.to_vec()).file_name("blob.bin").mime_str("image/png").unwrap())
}

async fn upload(app: &TestApp, user: &TestUser, bytes: &[u8], name: Option<&str>) -> Reply {
    upload_form(app, &user.token, form(bytes, name, None)).await
}

/// Uploads and returns the new file id.
async fn uploaded(app: &TestApp, user: &TestUser, bytes: &[u8], name: &str) -> Uuid {
    let body = upload(app, user, bytes, Some(name)).await.expect(200);
    body["id"].as_str().unwrap().parse().unwrap()
}

/// A raw download: status, headers and body bytes.
async fn download(
    app: &TestApp,
    token: &str,
    id: Uuid,
    range: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = app.client.get(app.url(&format!("/files/{id}"))).bearer_auth(token);
    if let Some(range) = range {
        req = req.header("range", range);
    }
    let resp = req.send().await.expect("download sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.expect("body").to_vec())
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers.get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap()
}

fn error_code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    v["code"].as_str().unwrap_or_default().to_string()
}

fn files_dir(app: &TestApp) -> PathBuf {
    app.config.data_dir.join("files")
}

/// Every stored blob (not temp files), as paths relative to the store.
fn stored_blobs(app: &TestApp) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "tmp") {
                    continue;
                }
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let root = files_dir(app);
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out.sort();
    out
}

fn temp_files(app: &TestApp) -> usize {
    std::fs::read_dir(files_dir(app).join("tmp")).map(|d| d.count()).unwrap_or(0)
}

async fn audit_rows(app: &TestApp, action: &str) -> Vec<audit_log::Model> {
    audit_log::Entity::find().filter(audit_log::Column::Action.eq(action)).all(db(app)).await.unwrap()
}

fn metadata(row: &audit_log::Model) -> Value {
    serde_json::from_str(row.metadata.as_deref().unwrap_or("null")).unwrap()
}

// ---------------------------------------------------------------------------------------
// Upload, download, metadata

async fn upload_and_download_round_trip(backend: Backend) {
    let app = spawn_app(backend).await;
    let (root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);

    let bytes = opaque(100_000, 1);
    let reply = upload(&app, alice, &bytes, Some("c2VjcmV0LnBkZg==")).await.expect(200);
    let id: Uuid = reply["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(reply["size_bytes"], 100_000);
    chrono::DateTime::parse_from_rfc3339(reply["created_at"].as_str().unwrap()).unwrap();
    assert_eq!(reply.as_object().unwrap().len(), 3, "{reply}");

    let meta = app.get(&format!("/files/{id}/meta"), &alice.token).await.expect(200);
    assert_eq!(
        meta,
        json!({
            "id": id, "uploader_id": alice.id, "encrypted_name": "c2VjcmV0LnBkZg==", "size_bytes": 100_000,
            "content_type": null, "checksum": sha256_hex(&bytes), "created_at": reply["created_at"],
        })
    );

    let (status, headers, body) = download(&app, &alice.token, id, None).await;
    assert_eq!(status, 200);
    assert!(body == bytes, "downloaded bytes differ");
    assert_eq!(header(&headers, "content-type"), "application/octet-stream", "client type is not trusted");
    assert_eq!(header(&headers, "content-length"), "100000");
    assert_eq!(header(&headers, "cache-control"), "private, no-store");
    assert_eq!(header(&headers, "content-disposition"), "attachment; filename=\"c2VjcmV0LnBkZg==\"");
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    assert_eq!(header(&headers, "accept-ranges"), "bytes");

    // Stored once, in the sharded layout, and nothing left in the temp dir.
    let simple = id.simple().to_string();
    let n = simple.len();
    assert_eq!(stored_blobs(&app), vec![format!("{}/{}/{id}", &simple[n - 2..], &simple[n - 4..n - 2])]);
    assert_eq!(temp_files(&app), 0);

    // Sniffed types override the declared one; name defaults to "unnamed".
    let png = upload(&app, alice, PNG, None).await.expect(200);
    let png_id = png["id"].as_str().unwrap();
    let meta = app.get(&format!("/files/{png_id}/meta"), &alice.token).await.expect(200);
    assert_eq!(meta["content_type"], "image/png");
    assert_eq!(meta["encrypted_name"], "unnamed");
    let (_, headers, body) = download(&app, &alice.token, png_id.parse().unwrap(), None).await;
    assert_eq!(header(&headers, "content-type"), "image/png");
    assert_eq!(body, PNG);
    let text = upload(&app, alice, "héllo wörld\n".as_bytes(), Some("notes")).await.expect(200);
    let meta =
        app.get(&format!("/files/{}/meta", text["id"].as_str().unwrap()), &alice.token).await.expect(200);
    assert_eq!(meta["content_type"], "text/plain");

    // A name that is not plain ASCII cannot break the header.
    let odd = uploaded(&app, alice, &bytes[..10], "a\"b\\c é").await;
    let (_, headers, _) = download(&app, &alice.token, odd, None).await;
    assert_eq!(
        header(&headers, "content-disposition"),
        "attachment; filename=\"a_b_c _\"; filename*=UTF-8''a%22b%5Cc%20%C3%A9"
    );

    // No channel: only the uploader and instance staff.
    let (status, _, body) = download(&app, &bob.token, id, None).await;
    assert_eq!((status, error_code(&body).as_str()), (403, "forbidden"));
    assert_eq!(app.get(&format!("/files/{id}/meta"), &bob.token).await.expect_error(403), "forbidden");
    let (status, _, body) = download(&app, &root.token, id, None).await;
    assert_eq!(status, 200);
    assert!(body == bytes);
    app.get(&format!("/files/{id}/meta"), &root.token).await.expect(200);

    // No token, malformed id, unknown id, no thumbnail.
    let anonymous = app.client.get(app.url(&format!("/files/{id}"))).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    assert_eq!(app.get("/files/not-a-uuid", &alice.token).await.expect_error(400), "validation_error");
    assert_eq!(
        app.get(&format!("/files/{}", Uuid::now_v7()), &alice.token).await.expect_error(404),
        "not_found"
    );
    assert_eq!(
        app.get(&format!("/files/{}/meta", Uuid::now_v7()), &alice.token).await.expect_error(404),
        "not_found"
    );
    assert_eq!(app.get(&format!("/files/{id}/thumb"), &alice.token).await.expect_error(404), "not_found");
    assert_eq!(app.get(&format!("/files/{id}/thumb"), &bob.token).await.expect_error(403), "forbidden");
    app.stop().await;
}

async fn channel_files_follow_membership(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob", "carol"]).await;
    let (alice, bob, carol) = (&u[0], &u[1], &u[2]);
    let channel = channel_with(&app, alice, &[bob]).await;
    let bytes = opaque(5000, 2);

    let reply = upload_form(&app, &alice.token, form(&bytes, Some("n"), Some(&channel.to_string()))).await;
    let id: Uuid = reply.expect(200)["id"].as_str().unwrap().parse().unwrap();
    let (status, _, body) = download(&app, &bob.token, id, None).await;
    assert_eq!(status, 200, "a channel member may download");
    assert!(body == bytes);
    app.get(&format!("/files/{id}/meta"), &bob.token).await.expect(200);
    let (status, _, _) = download(&app, &carol.token, id, None).await;
    assert_eq!(status, 403, "a non-member may not");
    app.get(&format!("/files/{id}/meta"), &carol.token).await.expect_error(403);

    // After leaving the channel bob loses access.
    app.post(&format!("/channels/{channel}/leave"), &bob.token, json!({})).await.expect(200);
    let (status, _, _) = download(&app, &bob.token, id, None).await;
    assert_eq!(status, 403);

    // Uploading into a channel needs membership, whichever order the fields come in.
    let blobs_before = stored_blobs(&app);
    let refused = upload_form(&app, &carol.token, form(&bytes, None, Some(&channel.to_string()))).await;
    assert_eq!(refused.expect_error(403), "forbidden");
    let file_first = Form::new()
        .part("file", Part::bytes(bytes.clone()).file_name("x"))
        .text("channel_id", channel.to_string());
    assert_eq!(upload_form(&app, &carol.token, file_first).await.expect_error(403), "forbidden");
    let unknown =
        upload_form(&app, &alice.token, form(&bytes, None, Some(&Uuid::now_v7().to_string()))).await;
    assert_eq!(unknown.expect_error(404), "not_found");
    assert_eq!(stored_blobs(&app), blobs_before, "refused uploads leave nothing behind");
    assert_eq!(temp_files(&app), 0);

    // An unparsable channel_id is treated as absent: the file is the uploader's alone.
    let reply = upload_form(&app, &carol.token, form(&bytes, None, Some("general"))).await.expect(200);
    let carols: Uuid = reply["id"].as_str().unwrap().parse().unwrap();
    let (status, _, _) = download(&app, &carol.token, carols, None).await;
    assert_eq!(status, 200);
    let (status, _, _) = download(&app, &alice.token, carols, None).await;
    assert_eq!(status, 403);
    app.stop().await;
}

/// 30 MB generated on the fly, streamed up and down, compared by hash (never held whole).
async fn large_file_streams_by_hash(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice"]).await;
    let alice = &u[0];
    const SIZE: u64 = 30 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;

    let mut expected = Sha256::new();
    let mut rng = Generator::new(7);
    let mut chunks = Vec::new();
    // Hash is computed here from the same generator the stream uses (re-created below).
    let mut left = SIZE as usize;
    while left > 0 {
        let n = left.min(CHUNK);
        let mut chunk = Vec::with_capacity(n);
        while chunk.len() < n {
            chunk.extend_from_slice(&rng.next_block());
        }
        chunk.truncate(n);
        expected.update(&chunk);
        left -= n;
        chunks.push(n);
    }
    let expected = hex::encode(expected.finalize());
    let mut rng = Generator::new(7);
    let stream = futures_util::stream::iter(chunks).map(move |n| {
        let mut chunk = Vec::with_capacity(n);
        while chunk.len() < n {
            chunk.extend_from_slice(&rng.next_block());
        }
        chunk.truncate(n);
        Ok::<_, std::io::Error>(chunk)
    });
    let part = Part::stream_with_length(reqwest::Body::wrap_stream(stream), SIZE).file_name("big");
    let reply = upload_form(&app, &alice.token, Form::new().text("name", "big").part("file", part)).await;
    let reply = reply.expect(200);
    assert_eq!(reply["size_bytes"], SIZE);
    let id = reply["id"].as_str().unwrap();
    let meta = app.get(&format!("/files/{id}/meta"), &alice.token).await.expect(200);
    assert_eq!(meta["checksum"], expected);

    let resp =
        app.client.get(app.url(&format!("/files/{id}"))).bearer_auth(&alice.token).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.content_length(), Some(SIZE));
    let mut body = resp.bytes_stream();
    let mut got = Sha256::new();
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        total += chunk.len() as u64;
        got.update(&chunk);
    }
    assert_eq!(total, SIZE);
    assert_eq!(hex::encode(got.finalize()), expected);
    app.stop().await;
}

async fn range_requests(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let bytes = opaque(1000, 3);
    let id = uploaded(&app, alice, &bytes, "r").await;

    let (status, headers, body) = download(&app, &alice.token, id, Some("bytes=10-19")).await;
    assert_eq!(status, 206);
    assert_eq!(body, bytes[10..20]);
    assert_eq!(header(&headers, "content-range"), "bytes 10-19/1000");
    assert_eq!(header(&headers, "content-length"), "10");
    assert_eq!(header(&headers, "content-type"), "application/octet-stream");

    let (status, headers, body) = download(&app, &alice.token, id, Some("bytes=990-")).await;
    assert_eq!((status, body.as_slice()), (206, &bytes[990..]));
    assert_eq!(header(&headers, "content-range"), "bytes 990-999/1000");
    let (status, _, body) = download(&app, &alice.token, id, Some("bytes=-5")).await;
    assert_eq!((status, body.as_slice()), (206, &bytes[995..]));
    let (status, headers, body) = download(&app, &alice.token, id, Some("bytes=500-5000")).await;
    assert_eq!((status, body.as_slice()), (206, &bytes[500..]));
    assert_eq!(header(&headers, "content-range"), "bytes 500-999/1000");

    let (status, headers, body) = download(&app, &alice.token, id, Some("bytes=1000-")).await;
    assert_eq!(status, 416);
    assert_eq!(header(&headers, "content-range"), "bytes */1000");
    assert!(body.is_empty());
    // Unusable ranges are ignored: the whole file.
    for ignored in ["bytes=5-2", "pages=1-2", "bytes=0-1,5-6", "bytes=x-"] {
        let (status, _, body) = download(&app, &alice.token, id, Some(ignored)).await;
        assert_eq!(status, 200, "{ignored}");
        assert!(body == bytes, "{ignored}");
    }
    // Access rules apply to ranges too.
    let (status, _, _) = download(&app, &bob.token, id, Some("bytes=0-1")).await;
    assert_eq!(status, 403);
    app.stop().await;
}

async fn size_limit_and_quota(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.max_file_size = 1000;
        c.upload_quota = 2500;
    })
    .await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);

    let too_big = upload(&app, alice, &opaque(1001, 4), None).await;
    let message = too_big.body["message"].as_str().unwrap_or_default().to_string();
    assert_eq!(too_big.expect_error(400), "validation_error");
    assert!(message.contains("too large"), "{message}");
    // Far over the limit: cut off early, and the client still reads a clean answer.
    let way_too_big = upload(&app, alice, &opaque(5 * 1024 * 1024, 5), None).await;
    assert_eq!(way_too_big.expect_error(400), "validation_error");

    let first = uploaded(&app, alice, &opaque(1000, 6), "1").await;
    uploaded(&app, alice, &opaque(1000, 7), "2").await;
    let over = upload(&app, alice, &opaque(600, 8), None).await;
    let message = over.body["message"].as_str().unwrap_or_default().to_string();
    assert_eq!(over.expect_error(400), "validation_error");
    assert!(message.contains("quota"), "{message}");
    uploaded(&app, alice, &opaque(500, 9), "exactly at quota").await;
    assert_eq!(upload(&app, alice, &opaque(1, 10), None).await.expect_error(400), "validation_error");
    // The quota is per user.
    uploaded(&app, bob, &opaque(1000, 11), "bob").await;

    // Deleting returns the bytes to the uploader's quota.
    app.delete(&format!("/files/{first}"), &alice.token).await.expect(200);
    uploaded(&app, alice, &opaque(1000, 12), "again").await;

    assert_eq!(stored_blobs(&app).len(), 4, "only accepted uploads are stored");
    assert_eq!(temp_files(&app), 0, "refused uploads leave no temp files");
    app.stop().await;
}

async fn upload_rejects_bad_input(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.upload_rate_limit = 100).await;
    let (_root, u) = users(&app, &["alice"]).await;
    let alice = &u[0];

    let no_file = Form::new().text("name", "x");
    assert_eq!(upload_form(&app, &alice.token, no_file).await.expect_error(400), "validation_error");
    assert_eq!(
        app.post("/files/upload", &alice.token, json!({"file": [1, 2]})).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(upload(&app, alice, b"", None).await.expect_error(400), "validation_error");
    let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
    elf.resize(4096, 0);
    assert_eq!(upload(&app, alice, &elf, None).await.expect_error(400), "validation_error");
    let mut pe = vec![0u8; 512];
    pe[..2].copy_from_slice(b"MZ");
    pe[0x3c] = 0x80;
    pe[0x80..0x84].copy_from_slice(b"PE\0\0");
    assert_eq!(upload(&app, alice, &pe, None).await.expect_error(400), "validation_error");
    assert_eq!(
        upload(&app, alice, b"#!/bin/sh\necho hi\n", None).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        upload(&app, alice, b"@echo off\r\ndir\r\n", None).await.expect_error(400),
        "validation_error"
    );
    let long_name = "n".repeat(513);
    assert_eq!(upload(&app, alice, b"hello", Some(&long_name)).await.expect_error(400), "validation_error");
    let two_files =
        Form::new().part("file", Part::bytes(b"one".to_vec())).part("file", Part::bytes(b"two".to_vec()));
    assert_eq!(upload_form(&app, &alice.token, two_files).await.expect_error(400), "validation_error");
    let anonymous =
        app.client.post(app.url("/files/upload")).multipart(form(b"x", None, None)).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);

    // A name of exactly 512 bytes is fine.
    let name = "n".repeat(512);
    let id = uploaded(&app, alice, b"hello", &name).await;
    assert_eq!(app.get(&format!("/files/{id}/meta"), &alice.token).await.expect(200)["encrypted_name"], name);
    assert_eq!(stored_blobs(&app).len(), 1);
    assert_eq!(temp_files(&app), 0);
    app.stop().await;
}

async fn uploads_are_rate_limited(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.upload_rate_limit = 2).await;
    let (_root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    uploaded(&app, alice, b"one", "1").await;
    uploaded(&app, alice, b"two", "2").await;
    let third = upload(&app, alice, b"three", None).await;
    assert_eq!(third.expect_error(400), "validation_error");
    uploaded(&app, bob, b"bob's first", "b").await;
    app.stop().await;
}

async fn owner_or_admin_deletes(backend: Backend) {
    let app = spawn_app(backend).await;
    let (root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let id = uploaded(&app, alice, &opaque(300, 13), "mine").await;
    let other = uploaded(&app, alice, &opaque(300, 14), "other").await;

    assert_eq!(app.delete(&format!("/files/{id}"), &bob.token).await.expect_error(403), "forbidden");
    assert_eq!(app.delete("/files/nope", &alice.token).await.expect_error(400), "validation_error");
    assert_eq!(
        app.delete(&format!("/files/{}", Uuid::now_v7()), &alice.token).await.expect_error(404),
        "not_found"
    );
    assert_eq!(stored_blobs(&app).len(), 2);

    assert_eq!(app.delete(&format!("/files/{id}"), &alice.token).await.expect(200), Value::Null);
    assert_eq!(stored_blobs(&app).len(), 1, "the blob is removed from disk");
    let (status, _, _) = download(&app, &alice.token, id, None).await;
    assert_eq!(status, 404);
    assert_eq!(app.delete(&format!("/files/{id}"), &alice.token).await.expect_error(404), "not_found");

    app.delete(&format!("/files/{other}"), &root.token).await.expect(200);
    assert!(stored_blobs(&app).is_empty());

    let audit = audit_rows(&app, "file_deleted").await;
    assert_eq!(audit.len(), 2, "one entry per successful delete");
    let by_alice = audit.iter().find(|a| a.user_id == Some(alice.id)).expect("alice's delete audited");
    assert_eq!(metadata(by_alice)["file_id"], json!(id));
    assert!(audit.iter().any(|a| a.user_id == Some(root.id) && metadata(a)["file_id"] == json!(other)));
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Admin

async fn blocked_hashes_refuse_uploads(backend: Backend) {
    let app = spawn_app(backend).await;
    let (root, u) = users(&app, &["alice"]).await;
    let alice = &u[0];
    let bytes = opaque(2048, 15);
    let hash = sha256_hex(&bytes);

    assert_eq!(app.get("/admin/blocked-hashes", &root.token).await.expect(200), json!([]));
    let added = app
        .post("/admin/blocked-hashes", &root.token, json!({"hash": hash.to_uppercase(), "reason": " abuse "}))
        .await
        .expect(200);
    assert_eq!(added["hash"], hash, "stored lowercase");
    assert_eq!(added["reason"], "abuse");
    assert_eq!(added["blocked_by"], json!(root.id));
    chrono::DateTime::parse_from_rfc3339(added["created_at"].as_str().unwrap()).unwrap();
    let block_id = added["id"].as_str().unwrap().to_string();

    let refused = upload(&app, alice, &bytes, None).await;
    assert_eq!(refused.expect_error(400), "validation_error");
    assert!(stored_blobs(&app).is_empty());
    assert_eq!(temp_files(&app), 0);
    // Different bytes are fine.
    uploaded(&app, alice, &opaque(2048, 16), "ok").await;

    // Re-adding updates the reason and keeps the entry.
    let again = app
        .post("/admin/blocked-hashes", &root.token, json!({"hash": hash, "reason": null}))
        .await
        .expect(200);
    assert_eq!(again["id"], block_id.as_str());
    assert_eq!(again["reason"], Value::Null);
    let list = app.get("/admin/blocked-hashes", &root.token).await.expect(200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], block_id.as_str());

    // Bad input and non-admins.
    for bad in [json!({"hash": "abc"}), json!({"hash": "z".repeat(64)}), json!({"reason": "x"})] {
        assert_eq!(
            app.post("/admin/blocked-hashes", &root.token, bad).await.expect_error(400),
            "validation_error"
        );
    }
    let long = json!({"hash": hash, "reason": "r".repeat(501)});
    assert_eq!(
        app.post("/admin/blocked-hashes", &root.token, long).await.expect_error(400),
        "validation_error"
    );
    assert_eq!(
        app.post("/admin/blocked-hashes", &alice.token, json!({"hash": hash})).await.expect_error(403),
        "forbidden"
    );
    assert_eq!(app.get("/admin/blocked-hashes", &alice.token).await.expect_error(403), "forbidden");
    assert_eq!(
        app.delete(&format!("/admin/blocked-hashes/{block_id}"), &alice.token).await.expect_error(403),
        "forbidden"
    );

    // Unblocking lets the upload through.
    app.delete(&format!("/admin/blocked-hashes/{block_id}"), &root.token).await.expect(200);
    assert_eq!(
        app.delete(&format!("/admin/blocked-hashes/{block_id}"), &root.token).await.expect_error(404),
        "not_found"
    );
    assert_eq!(app.get("/admin/blocked-hashes", &root.token).await.expect(200), json!([]));
    uploaded(&app, alice, &bytes, "now allowed").await;

    assert_eq!(audit_rows(&app, "admin_block_hash").await.len(), 2);
    let unblock = audit_rows(&app, "admin_unblock_hash").await;
    assert_eq!(unblock.len(), 1);
    assert_eq!(unblock[0].user_id, Some(root.id));
    assert_eq!(metadata(&unblock[0])["hash"], hash);
    app.stop().await;
}

async fn quarantined_files_are_not_served(backend: Backend) {
    let app = spawn_app(backend).await;
    let (root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let channel = channel_with(&app, alice, &[bob]).await;
    let bytes = opaque(4000, 17);
    let reply = upload_form(&app, &alice.token, form(&bytes, Some("q"), Some(&channel.to_string()))).await;
    let id: Uuid = reply.expect(200)["id"].as_str().unwrap().parse().unwrap();

    assert_eq!(
        app.post(&format!("/admin/files/{id}/quarantine"), &alice.token, json!({})).await.expect_error(403),
        "forbidden"
    );
    assert_eq!(
        app.post(&format!("/admin/files/{id}/unquarantine"), &root.token, json!({})).await.expect_error(404),
        "not_found"
    );
    app.post(&format!("/admin/files/{id}/quarantine"), &root.token, json!({})).await.expect(200);
    assert_eq!(
        app.post(&format!("/admin/files/{id}/quarantine"), &root.token, json!({})).await.expect_error(404),
        "not_found"
    );
    let unknown = format!("/admin/files/{}/quarantine", Uuid::now_v7());
    assert_eq!(app.post(&unknown, &root.token, json!({})).await.expect_error(404), "not_found");

    for user in [alice, bob] {
        let (status, _, body) = download(&app, &user.token, id, None).await;
        assert_eq!((status, error_code(&body).as_str()), (403, "forbidden"));
        let (status, _, _) = download(&app, &user.token, id, Some("bytes=0-10")).await;
        assert_eq!(status, 403);
        // Metadata has no quarantine check.
        app.get(&format!("/files/{id}/meta"), &user.token).await.expect(200);
    }
    let (status, _, body) = download(&app, &root.token, id, None).await;
    assert_eq!(status, 200, "instance staff may still download");
    assert!(body == bytes);

    let listed = app.get("/admin/files", &root.token).await.expect(200);
    let entry = &listed["files"][0];
    assert_eq!(entry["quarantined_by"], json!(root.id));
    chrono::DateTime::parse_from_rfc3339(entry["quarantined_at"].as_str().unwrap()).unwrap();
    assert_eq!(entry["channel_id"], json!(channel));

    app.post(&format!("/admin/files/{id}/unquarantine"), &root.token, json!({})).await.expect(200);
    let (status, _, body) = download(&app, &bob.token, id, None).await;
    assert_eq!(status, 200);
    assert!(body == bytes);
    let listed = app.get("/admin/files", &root.token).await.expect(200);
    assert_eq!(listed["files"][0]["quarantined_at"], Value::Null);
    assert_eq!(listed["files"][0]["quarantined_by"], Value::Null);

    let q = audit_rows(&app, "admin_quarantine_file").await;
    assert_eq!(q.len(), 1);
    assert_eq!((q[0].user_id, metadata(&q[0])["file_id"].clone()), (Some(root.id), json!(id)));
    assert_eq!(audit_rows(&app, "admin_unquarantine_file").await.len(), 1);
    app.stop().await;
}

async fn admin_lists_files_and_storage(backend: Backend) {
    let app = spawn_app(backend).await;
    let (root, u) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&u[0], &u[1]);
    let a_small = uploaded(&app, alice, &opaque(100, 20), "Holiday-Photo").await;
    let a_png = uploaded(&app, alice, PNG, "picture").await;
    let a_big = uploaded(&app, alice, &opaque(5000, 21), "report_100%").await;
    let b_file = uploaded(&app, bob, &opaque(2000, 22), "bob's notes").await;

    let ids = |v: &Value| -> Vec<String> {
        v["files"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_string()).collect()
    };
    let s = |ids: &[Uuid]| ids.iter().map(|i| i.to_string()).collect::<Vec<_>>();

    let all = app.get("/admin/files", &root.token).await.expect(200);
    assert_eq!(
        (all["total"].clone(), all["page"].clone(), all["per_page"].clone()),
        (json!(4), json!(1), json!(50))
    );
    assert_eq!(ids(&all), s(&[b_file, a_big, a_png, a_small]), "newest first");
    let entry = all["files"].as_array().unwrap().iter().find(|f| f["id"] == json!(a_png)).unwrap();
    assert_eq!(entry["content_type"], "image/png");
    assert_eq!(entry["uploader_id"], json!(alice.id));
    assert_eq!(entry["checksum"], sha256_hex(PNG));
    assert_eq!(entry["has_thumbnail"], false);
    assert_eq!(entry["channel_id"], Value::Null);
    assert_eq!(entry["encrypted_name"], "picture");

    let by_size = app.get("/admin/files?sort=size", &root.token).await.expect(200);
    assert_eq!(ids(&by_size), s(&[a_big, b_file, a_small, a_png]));
    let bobs = app.get(&format!("/admin/files?user_id={}", bob.id), &root.token).await.expect(200);
    assert_eq!((ids(&bobs), bobs["total"].clone()), (s(&[b_file]), json!(1)));
    let search = app.get("/admin/files?search=holiday", &root.token).await.expect(200);
    assert_eq!(ids(&search), s(&[a_small]));
    let literal = app.get("/admin/files?search=100%25", &root.token).await.expect(200);
    assert_eq!(ids(&literal), s(&[a_big]), "% is matched literally");
    let images = app.get("/admin/files?content_type=image/", &root.token).await.expect(200);
    assert_eq!(ids(&images), s(&[a_png]));
    let paged = app.get("/admin/files?per_page=1&page=2", &root.token).await.expect(200);
    assert_eq!(
        (ids(&paged), paged["total"].clone(), paged["per_page"].clone()),
        (s(&[a_big]), json!(4), json!(1))
    );
    let clamped = app.get("/admin/files?per_page=1000&page=0", &root.token).await.expect(200);
    assert_eq!((clamped["page"].clone(), clamped["per_page"].clone()), (json!(1), json!(100)));
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let later =
        app.get(&format!("/admin/files?date_from={}", urlencode(&future)), &root.token).await.expect(200);
    assert_eq!(later["total"], 0);
    let before =
        app.get(&format!("/admin/files?date_to={}", urlencode(&future)), &root.token).await.expect(200);
    assert_eq!(before["total"], 4);
    let ignored = app.get("/admin/files?date_from=yesterday", &root.token).await.expect(200);
    assert_eq!(ignored["total"], 4, "unparsable dates are ignored");
    assert_eq!(app.get("/admin/files?user_id=nope", &root.token).await.expect_error(400), "validation_error");
    assert_eq!(app.get("/admin/files?page=x", &root.token).await.expect_error(400), "validation_error");

    let stats = app.get("/admin/storage-stats", &root.token).await.expect(200);
    let png_len = PNG.len() as i64;
    assert_eq!(
        stats,
        json!({
            "total_files": 4,
            "total_bytes": 7100 + png_len,
            "per_user": [
                {"user_id": alice.id, "file_count": 3, "total_bytes": 5100 + png_len},
                {"user_id": bob.id, "file_count": 1, "total_bytes": 2000},
            ],
        })
    );

    // Admin delete with block_hashes: record and blob gone, checksum blocked.
    let bob_bytes = opaque(2000, 22);
    app.delete(&format!("/admin/files/{b_file}?block_hashes=true"), &root.token).await.expect(200);
    assert_eq!(
        app.delete(&format!("/admin/files/{b_file}"), &root.token).await.expect_error(404),
        "not_found"
    );
    assert_eq!(app.delete("/admin/files/x", &root.token).await.expect_error(400), "validation_error");
    let blocked = app.get("/admin/blocked-hashes", &root.token).await.expect(200);
    assert_eq!(blocked[0]["hash"], sha256_hex(&bob_bytes));
    assert_eq!(upload(&app, bob, &bob_bytes, None).await.expect_error(400), "validation_error");
    app.delete(&format!("/admin/files/{a_small}"), &root.token).await.expect(200);
    assert_eq!(app.get("/admin/blocked-hashes", &root.token).await.expect(200).as_array().unwrap().len(), 1);
    assert_eq!(stored_blobs(&app).len(), 2);
    let stats = app.get("/admin/storage-stats", &root.token).await.expect(200);
    assert_eq!(stats["total_files"], 2);
    let audit = audit_rows(&app, "admin_delete_file").await;
    assert_eq!(audit.len(), 2);
    assert!(
        audit.iter().any(|a| metadata(a)["file_id"] == json!(b_file) && metadata(a)["hash_blocked"] == true)
    );

    // Non-admins are refused everywhere.
    for path in ["/admin/files", "/admin/storage-stats", "/admin/blocked-hashes"] {
        assert_eq!(app.get(path, &alice.token).await.expect_error(403), "forbidden", "{path}");
    }
    assert_eq!(
        app.delete(&format!("/admin/files/{a_big}"), &alice.token).await.expect_error(403),
        "forbidden"
    );
    assert_eq!(
        app.post(&format!("/admin/files/{a_big}/unquarantine"), &alice.token, json!({}))
            .await
            .expect_error(403),
        "forbidden"
    );
    let anonymous = app.client.get(app.url("/admin/files")).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    app.stop().await;
}

/// A declared body over the seed's 110 MiB cap is refused before a byte of it is read.
async fn front_door_caps_upload_bodies(backend: Backend) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app(backend).await;
    let (_root, u) = users(&app, &["alice"]).await;
    let alice = &u[0];
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "POST /api/files/upload HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: {}\r\n\r\n",
        alice.token,
        110 * 1024 * 1024 + 1
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 1024];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut head))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(stored_blobs(&app).is_empty());
    assert_eq!(temp_files(&app), 0);
    app.stop().await;
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

crate::both_backends!(
    upload_and_download_round_trip,
    channel_files_follow_membership,
    large_file_streams_by_hash,
    range_requests,
    size_limit_and_quota,
    upload_rejects_bad_input,
    uploads_are_rate_limited,
    owner_or_admin_deletes,
    blocked_hashes_refuse_uploads,
    quarantined_files_are_not_served,
    admin_lists_files_and_storage,
    front_door_caps_upload_bodies,
);
