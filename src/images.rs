//! The image pipeline behind every upload that ends up in an `<img>` tag: avatars, banners,
//! voice backgrounds, community and group icons/banners and custom emojis
//! (wire README "Rate limits and size limits"; rest-auth-account-users.md and
//! rest-communities-groups-channels.md for the endpoints).
//!
//! What an upload goes through, in order:
//! 1. **Size**: over the policy's byte cap → 413 before anything is parsed.
//! 2. **Content sniffing**: the format is taken from the bytes (magic numbers), never from the
//!    file name; it must be one the policy allows, and a declared part type that names another
//!    image type is refused (400).
//! 3. **Dimensions from the header**, checked against the policy *before* decoding, so a small
//!    file claiming a huge canvas (a decompression bomb) is refused without allocating it;
//!    the decoder also runs under `image::Limits`.
//! 4. **Full decode** of every frame (a broken or truncated file is refused), on the blocking
//!    pool and at most [`MAX_CONCURRENT`] at a time.
//! 5. **Metadata stripped.** Still images (PNG, JPEG, still WebP) are re-encoded from pixels,
//!    after applying the EXIF orientation: nothing but pixels survives (no EXIF/GPS, text
//!    chunks, ICC profiles, comments). Animated GIF and animated WebP keep their frames as
//!    uploaded but are rebuilt block by block keeping only what rendering needs (GIF: frames,
//!    palettes, graphic control and the loop extension; WebP: `VP8X` with the metadata flags
//!    cleared, `ANIM`, `ANMF`, `VP8 `/`VP8L`/`ALPH`) — comments, XMP, EXIF, ICC and unknown
//!    blocks are dropped; the rebuilt file is the one decoded in step 4.
//! 6. **Storage** under the data directory with a name made of the owner id, the slot and a
//!    hash of the cleaned bytes (`<owner>_<slot>_<hash>.<ext>`), written atomically.
//!
//! Serving answers with the content type of the stored format, `X-Content-Type-Options:
//! nosniff`, a restrictive CSP and the wire's cache headers.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use bytes::Bytes;
use image::codecs::gif::GifDecoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::{WebPDecoder, WebPEncoder};
use image::{AnimationDecoder, DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use uuid::Uuid;
use warp::http::{HeaderValue, header};
use warp::reply::Response;

use crate::error::{ApiError, ApiResult};

/// Images decoded at the same time; the rest wait (each decode can take ~100 MB).
pub const MAX_CONCURRENT: usize = 2;
static DECODERS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(MAX_CONCURRENT));

/// The four formats the wire allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    Gif,
    WebP,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Jpeg => "jpg",
            Format::Gif => "gif",
            Format::WebP => "webp",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Format::Png => "image/png",
            Format::Jpeg => "image/jpeg",
            Format::Gif => "image/gif",
            Format::WebP => "image/webp",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Png => "PNG",
            Format::Jpeg => "JPEG",
            Format::Gif => "GIF",
            Format::WebP => "WebP",
        }
    }

    /// From a stored file's extension (what serving trusts: we wrote the file).
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "png" => Some(Format::Png),
            "jpg" | "jpeg" => Some(Format::Jpeg),
            "gif" => Some(Format::Gif),
            "webp" => Some(Format::WebP),
            _ => None,
        }
    }

    /// From a declared MIME type (`image/png; charset=…` is fine).
    pub fn from_mime(mime: &str) -> Option<Self> {
        let essence = mime.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "image/png" | "image/apng" => Some(Format::Png),
            "image/jpeg" | "image/jpg" | "image/pjpeg" => Some(Format::Jpeg),
            "image/gif" => Some(Format::Gif),
            "image/webp" => Some(Format::WebP),
            _ => None,
        }
    }

    /// The format the bytes are in, by magic number.
    pub fn sniff(data: &[u8]) -> Option<Self> {
        if data.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Format::Png)
        } else if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Format::Jpeg)
        } else if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
            Some(Format::Gif)
        } else if data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WEBP" {
            Some(Format::WebP)
        } else {
            None
        }
    }

    fn image_format(self) -> ImageFormat {
        match self {
            Format::Png => ImageFormat::Png,
            Format::Jpeg => ImageFormat::Jpeg,
            Format::Gif => ImageFormat::Gif,
            Format::WebP => ImageFormat::WebP,
        }
    }
}

/// What one kind of upload may be.
#[derive(Debug)]
pub struct Policy {
    /// What the error messages call it.
    pub what: &'static str,
    /// Largest upload, in bytes.
    pub max_bytes: usize,
    /// Longest side, in pixels.
    pub max_side: u32,
    /// Largest canvas, in pixels.
    pub max_pixels: u64,
    /// Frames × canvas pixels an animation may decode to in total.
    pub max_animation_pixels: u64,
    /// Most frames in an animation.
    pub max_frames: usize,
    pub formats: &'static [Format],
}

/// Avatars, banners, voice backgrounds, community and group icons and banners: 10 MiB,
/// PNG/JPEG/WebP/GIF (wire). The pixel caps are ours: a 24-megapixel photo passes.
pub const PICTURE: Policy = Policy {
    what: "image",
    max_bytes: 10 * 1024 * 1024,
    max_side: 8192,
    max_pixels: 24_000_000,
    max_animation_pixels: 200_000_000,
    max_frames: 1000,
    formats: &[Format::Png, Format::Jpeg, Format::WebP, Format::Gif],
};

/// Custom emojis: 256 KiB, PNG/GIF/WebP (wire); at most 1024 pixels a side (ours).
pub const EMOJI: Policy = Policy {
    what: "emoji",
    max_bytes: 256 * 1024,
    max_side: 1024,
    max_pixels: 1024 * 1024,
    max_animation_pixels: 100_000_000,
    max_frames: 1000,
    formats: &[Format::Png, Format::Gif, Format::WebP],
};

/// An upload that passed every check, ready to store.
#[derive(Debug)]
pub struct CleanImage {
    pub bytes: Vec<u8>,
    pub format: Format,
    pub width: u32,
    pub height: u32,
}

impl CleanImage {
    /// `<owner>_<slot>_<hash>.<ext>`: unique per content, so caches never serve a stale image,
    /// and never shared between owners (replacing one never deletes another's file).
    pub fn file_name(&self, owner: Uuid, slot: &str) -> String {
        let hash = Sha256::digest(&self.bytes);
        format!("{owner}_{slot}_{}.{}", &hex::encode(hash)[..16], self.format.extension())
    }
}

/// Runs an upload through the pipeline (see the module comment). `declared` is the part's
/// own `Content-Type`.
pub async fn clean(data: Bytes, declared: Option<&str>, policy: &'static Policy) -> ApiResult<CleanImage> {
    if data.len() > policy.max_bytes {
        return Err(ApiError::PayloadTooLarge);
    }
    let format = check_format(&data, declared, policy)?;
    let _permit = DECODERS.acquire().await.map_err(ApiError::internal)?;
    tokio::task::spawn_blocking(move || clean_blocking(&data, format, policy))
        .await
        .map_err(|e| ApiError::internal(format!("image worker failed: {e}")))?
}

/// The sniffed format, if the policy allows it and the declared type agrees.
fn check_format(data: &[u8], declared: Option<&str>, policy: &Policy) -> ApiResult<Format> {
    let allowed = || policy.formats.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ");
    let format = Format::sniff(data)
        .filter(|f| policy.formats.contains(f))
        .ok_or_else(|| ApiError::validation(format!("the {} must be a {} file", policy.what, allowed())))?;
    // Absent or generic types are judged by content alone; a specific type must be right.
    match declared.map(str::trim).filter(|d| !d.is_empty()) {
        None => Ok(format),
        Some(d) if d.eq_ignore_ascii_case("application/octet-stream") => Ok(format),
        Some(d) => match Format::from_mime(d) {
            Some(claimed) if claimed == format => Ok(format),
            Some(claimed) => Err(ApiError::validation(format!(
                "the file was sent as {} but is a {} image",
                claimed.mime(),
                format.name()
            ))),
            None => Err(ApiError::validation(format!(
                "unsupported file type {d:?}: the {} must be a {} file",
                policy.what,
                allowed()
            ))),
        },
    }
}

fn unreadable(e: impl std::fmt::Display) -> ApiError {
    ApiError::validation(format!("the file is not a readable image ({e})"))
}

fn limits(policy: &Policy) -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(policy.max_side);
    limits.max_image_height = Some(policy.max_side);
    // Largest canvas at 16 bits per channel RGBA, plus working room.
    limits.max_alloc = Some(policy.max_pixels * 8 + 64 * 1024 * 1024);
    limits
}

fn check_dimensions(width: u32, height: u32, policy: &Policy) -> ApiResult<()> {
    if width == 0 || height == 0 {
        return Err(ApiError::validation("the image is empty"));
    }
    if width > policy.max_side || height > policy.max_side {
        return Err(ApiError::validation(format!(
            "the {} is {width}×{height} pixels; each side may be at most {} pixels",
            policy.what, policy.max_side
        )));
    }
    if u64::from(width) * u64::from(height) > policy.max_pixels {
        return Err(ApiError::validation(format!(
            "the {} is {width}×{height} pixels; at most {} megapixels are allowed",
            policy.what,
            policy.max_pixels / 1_000_000
        )));
    }
    Ok(())
}

fn clean_blocking(data: &[u8], format: Format, policy: &Policy) -> ApiResult<CleanImage> {
    // Header only: refuses oversized canvases before any pixel buffer exists.
    let mut reader = ImageReader::with_format(Cursor::new(data), format.image_format());
    reader.limits(limits(policy));
    let (width, height) = match reader.into_dimensions() {
        Ok(dims) => dims,
        Err(image::ImageError::Limits(_)) => {
            return Err(ApiError::validation(format!(
                "the {} is too large; each side may be at most {} pixels",
                policy.what, policy.max_side
            )));
        }
        Err(e) => return Err(unreadable(e)),
    };
    check_dimensions(width, height, policy)?;
    match format {
        Format::Gif => {
            let bytes = strip_gif(data).map_err(unreadable)?;
            check_animation(GifDecoder::new(Cursor::new(&bytes[..])).map_err(unreadable)?, policy)?;
            Ok(CleanImage { bytes, format, width, height })
        }
        Format::WebP if WebPDecoder::new(Cursor::new(data)).map_err(unreadable)?.has_animation() => {
            let bytes = strip_webp(data).map_err(unreadable)?;
            check_animation(WebPDecoder::new(Cursor::new(&bytes[..])).map_err(unreadable)?, policy)?;
            Ok(CleanImage { bytes, format, width, height })
        }
        _ => reencode(data, format, policy),
    }
}

/// Decodes every frame of an animation (refusing broken ones) within the policy's budget.
fn check_animation<'a, D>(mut decoder: D, policy: &Policy) -> ApiResult<()>
where
    D: ImageDecoder + AnimationDecoder<'a>,
{
    decoder.set_limits(limits(policy)).map_err(unreadable)?;
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, policy)?;
    let canvas = (u64::from(width) * u64::from(height)).max(1);
    let budget = usize::try_from(policy.max_animation_pixels / canvas).unwrap_or(usize::MAX);
    let max_frames = policy.max_frames.min(budget).max(1);
    let mut frames = 0usize;
    for frame in decoder.into_frames() {
        frame.map_err(unreadable)?;
        frames += 1;
        if frames > max_frames {
            return Err(ApiError::validation(format!(
                "the animation has too many frames (at most {max_frames} at this size)"
            )));
        }
    }
    if frames == 0 {
        return Err(ApiError::validation("the image has no frames"));
    }
    Ok(())
}

/// Decodes to pixels (EXIF orientation applied) and encodes a fresh file of the same format.
fn reencode(data: &[u8], format: Format, policy: &Policy) -> ApiResult<CleanImage> {
    let mut reader = ImageReader::with_format(Cursor::new(data), format.image_format());
    reader.limits(limits(policy));
    let mut decoder = reader.into_decoder().map_err(unreadable)?;
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(unreadable)?;
    img.apply_orientation(orientation);
    let mut out = Vec::new();
    let encoded = match format {
        Format::Png => img.write_with_encoder(PngEncoder::new(&mut out)),
        Format::Jpeg => {
            let img = if img.color().has_color() {
                DynamicImage::ImageRgb8(img.to_rgb8())
            } else {
                DynamicImage::ImageLuma8(img.to_luma8())
            };
            img.write_with_encoder(JpegEncoder::new_with_quality(&mut out, 90))
        }
        // The only WebP encoder available is lossless: exact pixels, larger files.
        Format::WebP => {
            let img = if img.color().has_alpha() {
                DynamicImage::ImageRgba8(img.to_rgba8())
            } else {
                DynamicImage::ImageRgb8(img.to_rgb8())
            };
            img.write_with_encoder(WebPEncoder::new_lossless(&mut out))
        }
        // GIFs are rebuilt block by block instead (`strip_gif`), keeping their animation.
        Format::Gif => return Err(ApiError::internal("GIFs are not re-encoded")),
    };
    encoded.map_err(|e| ApiError::internal(format!("re-encoding an uploaded image: {e}")))?;
    Ok(CleanImage { bytes: out, format, width: img.width(), height: img.height() })
}

/// Rebuilds a GIF keeping only the blocks rendering needs: header, logical screen, palettes,
/// image descriptors with their data, graphic control extensions and the looping application
/// extension. Comments, plain-text and other application extensions (XMP…) are dropped, and
/// anything after the trailer is cut.
pub fn strip_gif(data: &[u8]) -> Result<Vec<u8>, &'static str> {
    const MALFORMED: &str = "malformed GIF";
    let mut r = Reader { data, pos: 0 };
    let mut out = Vec::with_capacity(data.len());
    let header = r.take(13).ok_or(MALFORMED)?;
    if !(header.starts_with(b"GIF87a") || header.starts_with(b"GIF89a")) {
        return Err(MALFORMED);
    }
    out.extend_from_slice(header);
    let packed = header[10];
    if packed & 0x80 != 0 {
        out.extend_from_slice(r.take(3 << ((packed & 7) + 1)).ok_or(MALFORMED)?);
    }
    loop {
        let Some(introducer) = r.byte() else {
            // Some encoders omit the trailer; the file ended on a block boundary.
            out.push(0x3B);
            return Ok(out);
        };
        match introducer {
            0x2C => {
                let descriptor = r.take(9).ok_or(MALFORMED)?;
                out.push(0x2C);
                out.extend_from_slice(descriptor);
                let packed = descriptor[8];
                if packed & 0x80 != 0 {
                    out.extend_from_slice(r.take(3 << ((packed & 7) + 1)).ok_or(MALFORMED)?);
                }
                out.push(r.byte().ok_or(MALFORMED)?); // LZW minimum code size
                out.extend_from_slice(r.sub_blocks().ok_or(MALFORMED)?);
            }
            0x21 => {
                let label = r.byte().ok_or(MALFORMED)?;
                let blocks = r.sub_blocks().ok_or(MALFORMED)?;
                let keep = match label {
                    0xF9 => true,
                    // The application identifier is the first sub-block (11 bytes).
                    0xFF => blocks.len() >= 12 && matches!(&blocks[1..12], b"NETSCAPE2.0" | b"ANIMEXTS1.0"),
                    _ => false,
                };
                if keep {
                    out.push(0x21);
                    out.push(label);
                    out.extend_from_slice(blocks);
                }
            }
            0x3B => {
                out.push(0x3B);
                return Ok(out);
            }
            _ => return Err(MALFORMED),
        }
    }
}

/// Rebuilds an animated WebP keeping only the chunks rendering needs; the `VP8X` flags for
/// ICC, EXIF and XMP are cleared since those chunks are gone.
pub fn strip_webp(data: &[u8]) -> Result<Vec<u8>, &'static str> {
    const MALFORMED: &str = "malformed WebP";
    if data.len() < 12 || &data[..4] != b"RIFF" || &data[8..12] != b"WEBP" {
        return Err(MALFORMED);
    }
    let riff_len = u32::from_le_bytes([data[4], data[5], data[6], data[7]]) as usize;
    let end = riff_len.checked_add(8).ok_or(MALFORMED)?.min(data.len());
    let mut r = Reader { data: &data[..end], pos: 12 };
    let mut body = Vec::with_capacity(end);
    while r.pos < end {
        let fourcc = r.take(4).ok_or(MALFORMED)?;
        let size_bytes = r.take(4).ok_or(MALFORMED)?;
        let size = u32::from_le_bytes([size_bytes[0], size_bytes[1], size_bytes[2], size_bytes[3]]) as usize;
        let payload = r.take(size).ok_or(MALFORMED)?;
        if size % 2 == 1 {
            // Padding byte (may be missing at the very end of a sloppy file).
            let _ = r.byte();
        }
        if !matches!(fourcc, b"VP8X" | b"ANIM" | b"ANMF" | b"VP8 " | b"VP8L" | b"ALPH") {
            continue;
        }
        body.extend_from_slice(fourcc);
        body.extend_from_slice(size_bytes);
        let at = body.len();
        body.extend_from_slice(payload);
        if fourcc == b"VP8X" && !payload.is_empty() {
            body[at] &= !(0x20 | 0x08 | 0x04); // ICC, EXIF, XMP
        }
        if size % 2 == 1 {
            body.push(0);
        }
    }
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&u32::try_from(body.len() + 4).map_err(|_| MALFORMED)?.to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(&body);
    Ok(out)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(slice)
    }

    /// GIF data sub-blocks up to and including the zero-length terminator.
    fn sub_blocks(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        loop {
            let len = self.byte()?;
            if len == 0 {
                return Some(&self.data[start..self.pos]);
            }
            self.take(usize::from(len))?;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Storage and serving

/// Where an image lives: a directory under the data dir and the public path serving it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// `/api/avatars/…`: user avatars, banners and voice backgrounds.
    Avatars,
    /// `/api/community-assets/…`: community icons and banners.
    CommunityAssets,
    /// `/api/group-assets/…`: group icons, banners and channel voice backgrounds.
    GroupAssets,
    /// `/api/emojis/{id}`: custom emojis (files named `<id>.<ext>`).
    Emojis,
}

impl Area {
    fn dir_name(self) -> &'static str {
        match self {
            Area::Avatars => "avatars",
            Area::CommunityAssets => "community-assets",
            Area::GroupAssets => "group-assets",
            Area::Emojis => "emojis",
        }
    }

    /// The public URL of a stored file in this area (emojis are addressed by id instead).
    pub fn url(self, file_name: &str) -> String {
        format!("/api/{}/{file_name}", self.dir_name())
    }

    /// `Cache-Control` max-age (wire: one hour for avatars and assets, one day for emojis).
    fn max_age(self) -> u32 {
        match self {
            Area::Emojis => 86_400,
            _ => 3_600,
        }
    }

    pub fn dir(self, data_dir: &Path) -> PathBuf {
        data_dir.join("uploads").join(self.dir_name())
    }
}

/// File names we create: `[A-Za-z0-9_-]+` plus one extension; no `..`, `/` or `\`.
pub fn valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.contains("..")
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Writes a file atomically (temporary file, then rename).
pub async fn save(data_dir: &Path, area: Area, file_name: &str, bytes: &[u8]) -> ApiResult<()> {
    let dir = area.dir(data_dir);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::internal(format!("creating {}: {e}", dir.display())))?;
    let temp = dir.join(format!(".{}.tmp", Uuid::new_v4().simple()));
    let target = dir.join(file_name);
    if let Err(e) = tokio::fs::write(&temp, bytes).await {
        let _ = tokio::fs::remove_file(&temp).await;
        return Err(ApiError::internal(format!("writing {}: {e}", temp.display())));
    }
    if let Err(e) = tokio::fs::rename(&temp, &target).await {
        let _ = tokio::fs::remove_file(&temp).await;
        return Err(ApiError::internal(format!("storing {}: {e}", target.display())));
    }
    Ok(())
}

/// Deletes a stored file; failures are only logged (an orphan costs disk, not correctness).
pub async fn remove(data_dir: &Path, area: Area, file_name: &str) {
    if !valid_file_name(file_name) {
        return;
    }
    let path = area.dir(data_dir).join(file_name);
    match tokio::fs::remove_file(&path).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not delete a replaced image"),
    }
}

/// After a column moved from `old_url` to a new file: deletes the old file if it is one we
/// stored for the same owner and slot (external URLs and other owners' files are left alone).
pub async fn remove_replaced(
    data_dir: &Path,
    area: Area,
    old_url: Option<&str>,
    new_file: Option<&str>,
    owner: Uuid,
    slot: &str,
) {
    let Some(old_url) = old_url else { return };
    let prefix = area.url("");
    let Some(old_file) = old_url.strip_prefix(prefix.as_str()) else { return };
    let old_file = old_file.split(['?', '#']).next().unwrap_or("");
    if Some(old_file) == new_file || !old_file.starts_with(&format!("{owner}_{slot}_")) {
        return;
    }
    remove(data_dir, area, old_file).await;
}

/// `GET /api/<area>/{file}`: the stored bytes with safe headers; 400 for a name that could
/// escape the directory, 404 when missing.
pub async fn serve(data_dir: &Path, area: Area, file_name: &str) -> ApiResult<Response> {
    if file_name.contains("..") || file_name.contains('/') || file_name.contains('\\') {
        return Err(ApiError::validation("invalid file name"));
    }
    if !valid_file_name(file_name) {
        return Err(ApiError::not_found("image"));
    }
    let format = file_name
        .rsplit_once('.')
        .and_then(|(_, ext)| Format::from_extension(ext))
        .ok_or_else(|| ApiError::not_found("image"))?;
    serve_file(&area.dir(data_dir).join(file_name), format, area).await
}

/// The response for one stored image file.
pub async fn serve_file(path: &Path, format: Format, area: Area) -> ApiResult<Response> {
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ApiError::not_found("image")),
        Err(e) => return Err(ApiError::internal(format!("reading {}: {e}", path.display()))),
    };
    let mut response = Response::new(bytes.into());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(format.mime()));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; sandbox"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("public, max-age={}", area.max_age())) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_and_declared_types() {
        assert_eq!(Format::sniff(b"\x89PNG\r\n\x1a\nrest"), Some(Format::Png));
        assert_eq!(Format::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(Format::Jpeg));
        assert_eq!(Format::sniff(b"GIF89a...."), Some(Format::Gif));
        assert_eq!(Format::sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::WebP));
        assert_eq!(Format::sniff(b"<svg xmlns=..."), None);
        assert_eq!(Format::from_mime("image/JPEG; q=1"), Some(Format::Jpeg));
        assert_eq!(Format::from_mime("image/svg+xml"), None);
        let png = b"\x89PNG\r\n\x1a\n";
        assert!(check_format(png, Some("image/png"), &PICTURE).is_ok());
        assert!(check_format(png, None, &PICTURE).is_ok());
        assert!(check_format(png, Some("application/octet-stream"), &PICTURE).is_ok());
        assert!(check_format(png, Some("image/gif"), &PICTURE).is_err());
        assert!(check_format(png, Some("text/html"), &PICTURE).is_err());
        assert!(check_format(&[0xFF, 0xD8, 0xFF], Some("image/jpeg"), &EMOJI).is_err());
    }

    #[test]
    fn file_names_cannot_escape() {
        assert!(valid_file_name("0190_avatar_abcdef.png"));
        for bad in ["", "../x.png", "a/b.png", "a\\b.png", ".hidden", "a..b", "a b.png", "a%2F.png"] {
            assert!(!valid_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn gif_comments_and_foreign_extensions_are_dropped() {
        let mut gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00".to_vec();
        gif.extend_from_slice(&[0, 0, 0, 255, 255, 255]); // global palette, 2 colours
        gif.extend_from_slice(b"\x21\xFE\x06secret\x00"); // comment
        gif.extend_from_slice(b"\x21\xFF\x0BXMP DataXMP\x03abc\x00"); // XMP application block
        gif.extend_from_slice(b"\x21\xFF\x0BNETSCAPE2.0\x03\x01\x00\x00\x00"); // loop
        gif.extend_from_slice(b"\x21\xF9\x04\x00\x00\x00\x00\x00"); // graphic control
        gif.extend_from_slice(b"\x2C\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00");
        gif.extend_from_slice(b"\x3Btrailing garbage");
        let out = strip_gif(&gif).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("secret") && !text.contains("XMP") && !text.contains("garbage"));
        assert!(text.contains("NETSCAPE2.0"));
        assert!(GifDecoder::new(Cursor::new(&out[..])).is_ok());
        assert!(strip_gif(&gif[..30]).is_err());
    }
}
