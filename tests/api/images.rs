//! Image uploads and serving: account avatar / banner / voice background, community and group
//! icons and banners, channel voice backgrounds and custom emojis. Real PNG, JPEG, GIF and
//! WebP files are made here; what comes back is decoded to prove it is an image of the same
//! size with its metadata gone.

use std::io::Cursor;

use image::codecs::gif::{GifDecoder, GifEncoder, Repeat};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::{AnimationDecoder, DynamicImage, Frame, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use palaver_entity::{channels, communities, community_members, custom_emojis, groups, users};
use reqwest::header::HeaderMap;
use reqwest::multipart;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::fixtures::{community, db, group, subscribe, users};
use crate::common::{Backend, Reply, TestApp, TestUser, spawn_app};

// ---------------------------------------------------------------------------------------
// Test images

/// A gradient, so re-encoding has something to keep.
fn rgb(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8]))
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    DynamicImage::ImageRgb8(rgb(width, height)).write_with_encoder(PngEncoder::new(&mut out)).unwrap();
    out
}

/// A PNG of random-looking pixels (does not compress), `side` × `side`.
fn noisy_png(side: u32) -> Vec<u8> {
    let mut state = 0x2545_f491_u32;
    let img = RgbImage::from_fn(side, side, |_, _| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        Rgb([state as u8, (state >> 8) as u8, (state >> 16) as u8])
    });
    let mut out = Vec::new();
    DynamicImage::ImageRgb8(img).write_with_encoder(PngEncoder::new(&mut out)).unwrap();
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    let mut crc_input = kind.to_vec();
    crc_input.extend_from_slice(data);
    chunk.extend_from_slice(&crc32(&crc_input).to_be_bytes());
    chunk
}

/// A PNG carrying a `tEXt` chunk right after `IHDR` (signature 8 + IHDR 25 bytes).
fn png_with_text(width: u32, height: u32, text: &str) -> Vec<u8> {
    let mut data = png(width, height);
    let chunk = png_chunk(b"tEXt", format!("Comment\0{text}").as_bytes());
    data.splice(33..33, chunk);
    data
}

/// A valid PNG signature and `IHDR` claiming `width` × `height`, with one tiny `IDAT`: a
/// decompression bomb's header.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut data = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    data.extend(png_chunk(b"IHDR", &ihdr));
    data.extend(png_chunk(b"IDAT", &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]));
    data.extend(png_chunk(b"IEND", &[]));
    data
}

/// A JPEG with an EXIF block (orientation 6: "rotate 90° clockwise to display") and a
/// comment segment, both inserted after SOI.
fn jpeg_with_exif(width: u32, height: u32, secret: &str) -> Vec<u8> {
    let mut plain = Vec::new();
    DynamicImage::ImageRgb8(rgb(width, height))
        .write_with_encoder(JpegEncoder::new_with_quality(&mut plain, 90))
        .unwrap();
    // TIFF, big endian: one IFD entry, Orientation (0x0112) SHORT = 6.
    let mut tiff = b"MM\0\x2a\0\0\0\x08\0\x01".to_vec();
    tiff.extend_from_slice(&[0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x06, 0x00, 0x00]);
    tiff.extend_from_slice(&[0, 0, 0, 0]);
    let mut exif = b"Exif\0\0".to_vec();
    exif.extend_from_slice(&tiff);
    let mut segments = vec![0xFF, 0xE1];
    segments.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
    segments.extend_from_slice(&exif);
    segments.extend_from_slice(&[0xFF, 0xFE]);
    segments.extend_from_slice(&((secret.len() + 2) as u16).to_be_bytes());
    segments.extend_from_slice(secret.as_bytes());
    plain.splice(2..2, segments);
    plain
}

/// A looping two-frame GIF with a comment extension before the first frame.
fn animated_gif(side: u32, secret: &str) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut out);
        encoder.set_repeat(Repeat::Infinite).unwrap();
        for colour in [[255, 0, 0, 255], [0, 0, 255, 255]] {
            let frame = Frame::new(RgbaImage::from_pixel(side, side, Rgba(colour)));
            encoder.encode_frame(frame).unwrap();
        }
    }
    // Header (6) + logical screen (7) + global palette, if any.
    let packed = out[10];
    let mut at = 13;
    if packed & 0x80 != 0 {
        at += 3 << ((packed & 7) + 1);
    }
    let mut comment = vec![0x21, 0xFE, secret.len() as u8];
    comment.extend_from_slice(secret.as_bytes());
    comment.push(0);
    out.splice(at..at, comment);
    out
}

fn webp(side: u32) -> Vec<u8> {
    let mut out = Vec::new();
    DynamicImage::ImageRgb8(rgb(side, side)).write_with_encoder(WebPEncoder::new_lossless(&mut out)).unwrap();
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------
// HTTP helpers

/// One multipart part: field, file name, declared type, bytes.
struct FilePart<'a> {
    field: &'a str,
    name: &'a str,
    mime: &'a str,
    bytes: Vec<u8>,
}

fn file<'a>(field: &'a str, name: &'a str, mime: &'a str, bytes: Vec<u8>) -> FilePart<'a> {
    FilePart { field, name, mime, bytes }
}

/// POSTs a multipart form (one file part plus text fields); `token` None = no credentials.
async fn upload(
    app: &TestApp,
    path: &str,
    token: Option<&str>,
    part: FilePart<'_>,
    texts: &[(&str, &str)],
) -> Reply {
    let mut form = multipart::Form::new().part(
        part.field.to_string(),
        multipart::Part::bytes(part.bytes).file_name(part.name.to_string()).mime_str(part.mime).unwrap(),
    );
    for (name, value) in texts {
        form = form.text(name.to_string(), value.to_string());
    }
    let mut req = app.client.post(app.url(path)).multipart(form);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    into_reply(req.send().await.expect("request sent")).await
}

async fn into_reply(resp: reqwest::Response) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body read");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    Reply { status, body, headers }
}

/// GETs a URL the server handed out (`/api/...`), without credentials.
async fn fetch(app: &TestApp, url: &str) -> (u16, HeaderMap, Vec<u8>) {
    let resp = app.client.get(format!("http://{}{url}", app.addr)).send().await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.bytes().await.expect("body read").to_vec())
}

/// Fetches a served image, checks the safe headers and decodes it.
async fn fetch_image(app: &TestApp, url: &str, mime: &str, max_age: u32) -> (Vec<u8>, DynamicImage) {
    let (status, headers, bytes) = fetch(app, url).await;
    assert_eq!(status, 200, "GET {url}");
    assert_eq!(headers["content-type"], mime);
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["cache-control"], format!("public, max-age={max_age}").as_str());
    let format = ImageFormat::from_mime_type(mime).unwrap();
    let img = image::load_from_memory_with_format(&bytes, format).expect("served bytes decode");
    (bytes, img)
}

fn url_of(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_else(|| panic!("no {key} in {v}")).to_string()
}

async fn user_row(app: &TestApp, id: Uuid) -> users::Model {
    users::Entity::find_by_id(id).one(db(app)).await.unwrap().unwrap()
}

async fn set_community_role(app: &TestApp, community_id: Uuid, user: Uuid, role: &str) {
    community_members::Entity::update_many()
        .col_expr(community_members::Column::Role, sea_orm::sea_query::Expr::value(role))
        .filter(community_members::Column::CommunityId.eq(community_id))
        .filter(community_members::Column::UserId.eq(user))
        .exec(db(app))
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// Account images

async fn avatar_round_trip_strips_metadata_and_replaces_old_file(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, users) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&users[0], &users[1]);
    let mut bob_ws = app.ws(&bob.token).await;

    let original = png_with_text(40, 30, "secret-gps-location");
    assert!(contains(&original, b"secret-gps-location"));
    let user = upload(
        &app,
        "/account/avatar",
        Some(&alice.token),
        file("avatar", "me.png", "image/png", original),
        &[],
    )
    .await
    .expect(200);
    assert_eq!(user["id"], alice.id.to_string());
    let avatar = url_of(&user, "avatar_url");
    assert!(avatar.starts_with("/api/avatars/"), "{avatar}");
    assert_eq!(app.get("/account/me", &alice.token).await.expect(200)["avatar_url"], avatar.as_str());

    let frame = bob_ws.expect("user_profile_updated").await;
    assert_eq!(frame["user_id"], alice.id.to_string());
    assert_eq!(frame["avatar_url"], avatar.as_str());

    let (bytes, img) = fetch_image(&app, &avatar, "image/png", 3600).await;
    assert_eq!((img.width(), img.height()), (40, 30));
    assert_eq!(img.to_rgb8().get_pixel(5, 3), rgb(40, 30).get_pixel(5, 3), "pixels survive");
    assert!(!contains(&bytes, b"tEXt") && !contains(&bytes, b"secret-gps-location"), "metadata stripped");

    // A new avatar replaces the file; the old one is gone.
    let user = upload(
        &app,
        "/account/avatar",
        Some(&alice.token),
        file("avatar", "b.png", "image/png", png(8, 8)),
        &[],
    )
    .await
    .expect(200);
    let second = url_of(&user, "avatar_url");
    assert_ne!(second, avatar);
    assert_eq!(fetch(&app, &avatar).await.0, 404);
    assert_eq!(fetch(&app, &second).await.0, 200);
    app.stop().await;
}

async fn jpeg_banner_loses_exif_and_is_turned_upright(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, users) = users(&app, &["alice"]).await;
    let alice = &users[0];
    let original = jpeg_with_exif(64, 32, "secret-camera-serial");
    assert!(contains(&original, b"Exif") && contains(&original, b"secret-camera-serial"));

    let user = upload(
        &app,
        "/account/banner",
        Some(&alice.token),
        file("banner", "b.jpg", "image/jpeg", original),
        &[],
    )
    .await
    .expect(200);
    let banner = url_of(&user, "banner_url");
    assert!(user["avatar_url"].is_null());
    let (bytes, img) = fetch_image(&app, &banner, "image/jpeg", 3600).await;
    // Orientation 6 was applied to the pixels, then dropped with the rest of the EXIF.
    assert_eq!((img.width(), img.height()), (32, 64));
    assert!(!contains(&bytes, b"Exif") && !contains(&bytes, b"secret-camera-serial"));
    assert_eq!(user_row(&app, alice.id).await.banner_url.as_deref(), Some(banner.as_str()));
    app.stop().await;
}

async fn voice_background_is_set_served_and_cleared(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, users) = users(&app, &["alice", "bob"]).await;
    let (alice, bob) = (&users[0], &users[1]);
    let mut bob_ws = app.ws(&bob.token).await;

    let reply = upload(
        &app,
        "/account/voice-background",
        Some(&alice.token),
        file("background", "bg.webp", "image/webp", webp(20)),
        &[],
    )
    .await
    .expect(200);
    let url = url_of(&reply, "url");
    assert_eq!(bob_ws.expect("user_profile_updated").await["voice_background_url"], url.as_str());
    let (_, img) = fetch_image(&app, &url, "image/webp", 3600).await;
    assert_eq!((img.width(), img.height()), (20, 20));
    assert_eq!(app.get("/account/me", &alice.token).await.expect(200)["voice_background_url"], url.as_str());

    assert_eq!(app.delete("/account/voice-background", &alice.token).await.expect(200), Value::Null);
    assert!(bob_ws.expect("user_profile_updated").await["voice_background_url"].is_null());
    let me = app.get("/account/me", &alice.token).await.expect(200);
    assert!(me.get("voice_background_url").is_none(), "omitted when null: {me}");
    assert_eq!(fetch(&app, &url).await.0, 404, "file deleted");
    assert_eq!(app.delete("/account/voice-background", "nope").await.expect_error(401), "unauthorized");
    app.stop().await;
}

async fn uploads_refuse_what_is_not_a_safe_image(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, users) = users(&app, &["alice"]).await;
    let token = users[0].token.clone();
    let mut truncated = png(30, 30);
    truncated.truncate(60);
    let cases: Vec<(FilePart, u16, &str)> = vec![
        (
            file("avatar", "x.png", "image/png", b"<html><script>alert(1)</script>".to_vec()),
            400,
            "html named .png",
        ),
        (
            file("avatar", "x.png", "image/png", b"\x89PNG\r\n\x1a\nnot really".to_vec()),
            400,
            "png magic only",
        ),
        (file("avatar", "x.png", "image/png", truncated), 400, "truncated png"),
        (file("avatar", "x.gif", "image/gif", png(4, 4)), 400, "declared type disagrees"),
        (file("avatar", "x.txt", "text/plain", png(4, 4)), 400, "declared non-image"),
        (file("picture", "x.png", "image/png", png(4, 4)), 400, "wrong field name"),
        (file("avatar", "wide.png", "image/png", png(8193, 1)), 400, "side over 8192 pixels"),
        (file("avatar", "bomb.png", "image/png", png_claiming(30_000, 30_000)), 400, "bomb header"),
        (file("avatar", "big.png", "image/png", png_claiming(6000, 5000)), 400, "30 megapixels"),
    ];
    for (part, status, what) in cases {
        let reply = upload(&app, "/account/avatar", Some(&token), part, &[]).await;
        assert_eq!(reply.status.as_u16(), status, "{what}: {}", reply.body);
        assert_eq!(reply.body["code"], "validation_error", "{what}");
    }
    // Over 10 MiB: refused before decoding.
    let mut huge = b"\x89PNG\r\n\x1a\n".to_vec();
    huge.resize(10 * 1024 * 1024 + 1, 0);
    let reply =
        upload(&app, "/account/avatar", Some(&token), file("avatar", "huge.png", "image/png", huge), &[])
            .await;
    assert_eq!(reply.expect_error(413), "payload_too_large");
    // Not multipart at all.
    assert_eq!(
        app.post("/account/avatar", &token, json!({"avatar": "x"})).await.expect_error(400),
        "validation_error"
    );
    // No credentials.
    let reply =
        upload(&app, "/account/avatar", None, file("avatar", "a.png", "image/png", png(4, 4)), &[]).await;
    assert_eq!(reply.expect_error(401), "unauthorized");
    // Nothing stuck.
    let me = app.get("/account/me", &token).await.expect(200);
    assert!(me["avatar_url"].is_null(), "{me}");
    app.stop().await;
}

async fn serving_refuses_bad_and_unknown_names(backend: Backend) {
    let app = spawn_app(backend).await;
    for (path, status) in [
        ("/api/avatars/a..png", 400),
        ("/api/community-assets/x..y.png", 400),
        ("/api/avatars/nothing.png", 404),
        ("/api/group-assets/nothing.png", 404),
        ("/api/avatars/notes.txt", 404),
        ("/api/avatars/a%5C..%5Cb.png", 400),
    ] {
        assert_eq!(fetch(&app, path).await.0, status, "{path}");
    }
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Communities and groups

async fn community_icon_and_banner_need_a_manager(backend: Backend) {
    let app = spawn_app(backend).await;
    let (root, users) = users(&app, &["owner", "member", "outsider"]).await;
    let (owner, member, outsider) = (&users[0], &users[1], &users[2]);
    let cid = community(&app, &[owner.id, member.id]).await;
    let mut member_ws = app.ws(&member.token).await;
    let icon_path = format!("/communities/{cid}/icon");

    let view =
        upload(&app, &icon_path, Some(&owner.token), file("icon", "i.png", "image/png", png(16, 16)), &[])
            .await
            .expect(200);
    assert_eq!(view["id"], cid.to_string());
    assert_eq!(view["member_count"], 2);
    let icon = url_of(&view, "icon_url");
    assert!(icon.starts_with("/api/community-assets/"), "{icon}");
    let frame = member_ws.expect("community_updated").await;
    assert_eq!(
        (frame["community_id"].as_str(), frame["icon_url"].as_str()),
        (Some(&*cid.to_string()), Some(&*icon))
    );
    let (_, img) = fetch_image(&app, &icon, "image/png", 3600).await;
    assert_eq!((img.width(), img.height()), (16, 16));

    // A plain member, an outsider: 403; the instance owner may.
    for user in [member, outsider] {
        let part = file("icon", "i.png", "image/png", png(4, 4));
        assert_eq!(
            upload(&app, &icon_path, Some(&user.token), part, &[]).await.expect_error(403),
            "forbidden"
        );
    }
    let part = file("banner", "b.png", "image/png", png(30, 10));
    let view =
        upload(&app, &format!("/communities/{cid}/banner"), Some(&root.token), part, &[]).await.expect(200);
    assert_eq!(view["icon_url"], icon.as_str());
    let banner = url_of(&view, "banner_url");
    let row = communities::Entity::find_by_id(cid).one(db(&app)).await.unwrap().unwrap();
    assert_eq!((row.icon_url.as_deref(), row.banner_url.as_deref()), (Some(&*icon), Some(&*banner)));

    // A community admin may too; missing and malformed ids.
    set_community_role(&app, cid, member.id, "admin").await;
    let part = file("icon", "i.png", "image/png", png(5, 5));
    upload(&app, &icon_path, Some(&member.token), part, &[]).await.expect(200);
    let part = file("icon", "i.png", "image/png", png(4, 4));
    let missing = format!("/communities/{}/icon", Uuid::now_v7());
    assert_eq!(upload(&app, &missing, Some(&owner.token), part, &[]).await.expect_error(404), "not_found");
    let part = file("icon", "i.png", "image/png", png(4, 4));
    let reply = upload(&app, "/communities/not-a-uuid/icon", Some(&owner.token), part, &[]).await;
    assert_eq!(reply.expect_error(400), "validation_error");
    app.stop().await;
}

/// A text channel in `group_id`, created by `owner` through `POST /channels`.
async fn group_channel(app: &TestApp, owner: &TestUser, group_id: Uuid) -> Uuid {
    let body = json!({"name": "voice", "channel_type": "voice", "group_id": group_id});
    let c = app.post("/channels", &owner.token, body).await.expect(200);
    c["id"].as_str().unwrap().parse().unwrap()
}

async fn group_images_need_a_group_manager(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, users) = users(&app, &["owner", "member", "outsider"]).await;
    let (owner, member, outsider) = (&users[0], &users[1], &users[2]);
    let cid = community(&app, &[owner.id, member.id, outsider.id]).await;
    let gid = group(&app, cid, &[owner.id, member.id]).await;
    let mut outsider_ws = app.ws(&outsider.token).await;

    let view = upload(
        &app,
        &format!("/groups/{gid}/icon"),
        Some(&owner.token),
        file("icon", "i.gif", "image/gif", animated_gif(12, "hi")),
        &[],
    )
    .await
    .expect(200);
    assert_eq!((view["id"].as_str(), view["member_count"].as_i64()), (Some(&*gid.to_string()), Some(2)));
    let icon = url_of(&view, "icon_url");
    assert!(icon.starts_with("/api/group-assets/") && icon.ends_with(".gif"), "{icon}");
    // The whole community hears it (the group's own members and the rest).
    let frame = outsider_ws.expect("group_updated").await;
    assert_eq!(frame["group_id"], gid.to_string());
    assert_eq!(frame["icon_url"], icon.as_str());
    fetch_image(&app, &icon, "image/gif", 3600).await;

    let view = upload(
        &app,
        &format!("/groups/{gid}/banner"),
        Some(&owner.token),
        file("banner", "b.png", "image/png", png(20, 8)),
        &[],
    )
    .await
    .expect(200);
    let row = groups::Entity::find_by_id(gid).one(db(&app)).await.unwrap().unwrap();
    assert_eq!(row.banner_url.as_deref(), view["banner_url"].as_str());

    for user in [member, outsider] {
        let part = file("icon", "i.png", "image/png", png(4, 4));
        let reply = upload(&app, &format!("/groups/{gid}/icon"), Some(&user.token), part, &[]).await;
        assert_eq!(reply.expect_error(403), "forbidden");
    }
    let part = file("icon", "i.png", "image/png", png(4, 4));
    let missing = format!("/groups/{}/icon", Uuid::now_v7());
    assert_eq!(upload(&app, &missing, Some(&owner.token), part, &[]).await.expect_error(404), "not_found");
    app.stop().await;
}

async fn channel_voice_background_is_set_and_announced(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, users) = users(&app, &["owner", "member"]).await;
    let (owner, member) = (&users[0], &users[1]);
    let cid = community(&app, &[owner.id, member.id]).await;
    let gid = group(&app, cid, &[owner.id, member.id]).await;
    let other_gid = group(&app, cid, &[owner.id]).await;
    let chid = group_channel(&app, owner, gid).await;
    let elsewhere = group_channel(&app, owner, other_gid).await;
    let mut ws = app.ws(&owner.token).await;
    subscribe(&mut ws, chid).await;

    let path = format!("/groups/{gid}/channels/{chid}/voice-background");
    let part = file("background", "bg.jpg", "image/jpeg", jpeg_with_exif(10, 6, "x"));
    let channel = upload(&app, &path, Some(&owner.token), part, &[]).await.expect(200);
    assert_eq!(channel["id"], chid.to_string());
    let url = url_of(&channel, "voice_background");
    assert!(url.starts_with("/api/group-assets/"), "{url}");
    let frame = ws.expect("channel_updated").await;
    assert_eq!(frame["voice_background"], url.as_str());
    let (_, img) = fetch_image(&app, &url, "image/jpeg", 3600).await;
    assert_eq!((img.width(), img.height()), (6, 10));

    // Seed path: the channel is named in the form.
    let part = file("background", "bg.png", "image/png", png(9, 9));
    let seed_path = format!("/groups/{gid}/voice-background");
    let chid_text = chid.to_string();
    let channel =
        upload(&app, &seed_path, Some(&owner.token), part, &[("channel_id", &chid_text)]).await.expect(200);
    let second = url_of(&channel, "voice_background");
    assert_ne!(second, url);
    assert_eq!(fetch(&app, &url).await.0, 404, "replaced file deleted");
    let row = channels::Entity::find_by_id(chid).one(db(&app)).await.unwrap().unwrap();
    assert_eq!(row.voice_background.as_deref(), Some(second.as_str()));

    let part = file("background", "bg.png", "image/png", png(9, 9));
    assert_eq!(
        upload(&app, &seed_path, Some(&owner.token), part, &[]).await.expect_error(400),
        "validation_error"
    );
    let part = file("background", "bg.png", "image/png", png(9, 9));
    let foreign = format!("/groups/{gid}/channels/{elsewhere}/voice-background");
    assert_eq!(upload(&app, &foreign, Some(&owner.token), part, &[]).await.expect_error(403), "forbidden");
    let part = file("background", "bg.png", "image/png", png(9, 9));
    assert_eq!(upload(&app, &path, Some(&member.token), part, &[]).await.expect_error(403), "forbidden");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------
// Custom emojis

async fn emoji(app: &TestApp, cid: Uuid, user: &TestUser, shortcode: &str, part: FilePart<'_>) -> Reply {
    upload(app, &format!("/communities/{cid}/emojis"), Some(&user.token), part, &[("shortcode", shortcode)])
        .await
}

async fn emojis_upload_list_serve_and_delete(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, users) = users(&app, &["owner", "member", "outsider"]).await;
    let (owner, member, outsider) = (&users[0], &users[1], &users[2]);
    let cid = community(&app, &[owner.id, member.id]).await;
    let other = community(&app, &[outsider.id]).await;

    let view = emoji(
        &app,
        cid,
        owner,
        "party_parrot",
        file("file", "p.gif", "image/gif", animated_gif(32, "secret-comment")),
    )
    .await
    .expect(200);
    let id = url_of(&view, "id");
    assert_eq!(view["url"], format!("/api/emojis/{id}"));
    assert_eq!(
        (view["shortcode"].as_str(), view["content_type"].as_str()),
        (Some("party_parrot"), Some("image/gif"))
    );
    assert_eq!(
        (view["community_id"].as_str(), view["uploaded_by"].as_str()),
        (Some(&*cid.to_string()), Some(&*owner.id.to_string()))
    );
    let (bytes, _) = fetch_image(&app, &url_of(&view, "url"), "image/gif", 86_400).await;
    assert!(!contains(&bytes, b"secret-comment"), "GIF comment dropped");
    assert!(contains(&bytes, b"NETSCAPE2.0"), "loop kept");
    let frames = GifDecoder::new(Cursor::new(bytes)).unwrap().into_frames().collect_frames().unwrap();
    assert_eq!(frames.len(), 2, "animation kept");

    let png_emoji =
        emoji(&app, cid, owner, "ok2", file("file", "ok.png", "image/png", png(24, 24))).await.expect(200);
    let list = app.get(&format!("/communities/{cid}/emojis"), &member.token).await.expect(200);
    let codes: Vec<_> =
        list.as_array().unwrap().iter().map(|e| e["shortcode"].as_str().unwrap().to_string()).collect();
    assert_eq!(codes, ["party_parrot", "ok2"]);
    assert_eq!(
        app.get(&format!("/communities/{cid}/emojis"), &outsider.token).await.expect_error(403),
        "forbidden"
    );

    // Refusals: duplicate, bad shortcodes, JPEG, too big, not a manager.
    let dup = emoji(&app, cid, owner, "ok2", file("file", "ok.png", "image/png", png(4, 4))).await;
    assert_eq!(dup.expect_error(409), "conflict");
    for bad in ["x", ":smile:", "has space", &"y".repeat(33)] {
        let reply = emoji(&app, cid, owner, bad, file("file", "ok.png", "image/png", png(4, 4))).await;
        assert_eq!(reply.expect_error(400), "validation_error", "{bad:?}");
    }
    let jpeg =
        emoji(&app, cid, owner, "photo", file("file", "p.jpg", "image/jpeg", jpeg_with_exif(8, 8, "x")))
            .await;
    assert_eq!(jpeg.expect_error(400), "validation_error");
    let big = noisy_png(400);
    assert!(big.len() > 256 * 1024);
    let reply = emoji(&app, cid, owner, "huge", file("file", "h.png", "image/png", big)).await;
    assert_eq!(reply.expect_error(413), "payload_too_large");
    let reply = emoji(&app, cid, owner, "wide", file("file", "w.png", "image/png", png(1025, 4))).await;
    assert_eq!(reply.expect_error(400), "validation_error");
    let reply = emoji(&app, cid, member, "mine", file("file", "m.png", "image/png", png(4, 4))).await;
    assert_eq!(reply.expect_error(403), "forbidden");
    let reply = emoji(&app, other, owner, "mine", file("file", "m.png", "image/png", png(4, 4))).await;
    assert_eq!(reply.expect_error(403), "forbidden");
    assert_eq!(custom_emojis::Entity::find().count(db(&app)).await.unwrap(), 2, "refusals stored nothing");

    // Delete: managers only, within the community.
    let png_id = url_of(&png_emoji, "id");
    assert_eq!(
        app.delete(&format!("/communities/{cid}/emojis/{png_id}"), &member.token).await.expect_error(403),
        "forbidden"
    );
    let foreign = emoji(&app, other, outsider, "theirs", file("file", "t.png", "image/png", png(4, 4)))
        .await
        .expect(200);
    let foreign_id = url_of(&foreign, "id");
    assert_eq!(
        app.delete(&format!("/communities/{cid}/emojis/{foreign_id}"), &owner.token).await.expect_error(404),
        "not_found"
    );
    assert_eq!(
        app.delete(&format!("/communities/{cid}/emojis/{png_id}"), &owner.token).await.expect(200),
        Value::Null
    );
    assert_eq!(fetch(&app, &format!("/api/emojis/{png_id}")).await.0, 404);
    assert_eq!(fetch(&app, "/api/emojis/not-a-uuid").await.0, 400);
    let list = app.get(&format!("/communities/{cid}/emojis"), &owner.token).await.expect(200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    app.stop().await;
}

async fn emoji_limit_is_fifty_per_community(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_root, users) = users(&app, &["owner"]).await;
    let owner = &users[0];
    let cid = community(&app, &[owner.id]).await;
    for i in 0..48 {
        custom_emojis::ActiveModel {
            id: Set(Uuid::now_v7()),
            community_id: Set(cid),
            shortcode: Set(format!("seeded_{i}")),
            content_type: Set("image/png".into()),
            uploaded_by: Set(Some(owner.id)),
            size_bytes: Set(10),
            created_at: Set(palaver_entity::now()),
        }
        .insert(db(&app))
        .await
        .unwrap();
    }
    emoji(&app, cid, owner, "number_49", file("file", "a.webp", "image/webp", webp(8))).await.expect(200);
    let fiftieth =
        emoji(&app, cid, owner, "number_50", file("file", "a.png", "image/png", png(8, 8))).await.expect(200);
    assert_eq!(fiftieth["content_type"], "image/png");
    let reply = emoji(&app, cid, owner, "number_51", file("file", "a.png", "image/png", png(8, 8))).await;
    assert_eq!(reply.expect_error(400), "validation_error");
    let count = custom_emojis::Entity::find()
        .filter(custom_emojis::Column::CommunityId.eq(cid))
        .count(db(&app))
        .await
        .unwrap();
    assert_eq!(count, 50);
    let list = app.get(&format!("/communities/{cid}/emojis"), &owner.token).await.expect(200);
    assert_eq!(list.as_array().unwrap().len(), 50);
    app.stop().await;
}

crate::both_backends!(
    avatar_round_trip_strips_metadata_and_replaces_old_file,
    jpeg_banner_loses_exif_and_is_turned_upright,
    voice_background_is_set_served_and_cleared,
    uploads_refuse_what_is_not_a_safe_image,
    serving_refuses_bad_and_unknown_names,
    community_icon_and_banner_need_a_manager,
    group_images_need_a_group_manager,
    channel_voice_background_is_set_and_announced,
    emojis_upload_list_serve_and_delete,
    emoji_limit_is_fifty_per_community,
);
