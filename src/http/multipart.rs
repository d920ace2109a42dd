//! `multipart/form-data` uploads (image endpoints; wire README "Request and response bodies":
//! field names are given per endpoint and the file part's own `Content-Type` is what the
//! server checks).
//!
//! The filter only hands the handler the unread body: the handler checks the caller and its
//! permission first and reads (at most `limit` bytes of) the form only when allowed.

use std::pin::Pin;

use bytes::{Buf, Bytes};
use futures_util::{Stream, StreamExt};
use warp::Filter;

use crate::error::{ApiError, ApiResult};

/// Room for part headers, boundaries and small text fields on top of the file's own cap.
pub const FORM_OVERHEAD: usize = 64 * 1024;
/// Most parts a form may have (the image endpoints need one or two).
pub const MAX_PARTS: usize = 8;
/// Longest text field, in bytes.
pub const MAX_TEXT: usize = 4096;

type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, warp::Error>> + Send>>;

/// A request body not read yet, with its declared content type.
pub struct Upload {
    content_type: Option<String>,
    body: BodyStream,
}

/// Extracts the unread body; never rejects.
pub fn upload() -> impl Filter<Extract = (Upload,), Error = warp::Rejection> + Clone {
    warp::header::optional::<String>("content-type").and(warp::body::stream()).map(
        |content_type: Option<String>, stream: _| {
            let body: BodyStream = Box::pin(StreamExt::map(stream, |chunk: Result<_, warp::Error>| {
                chunk.map(|mut buf| {
                    let n = Buf::remaining(&buf);
                    Buf::copy_to_bytes(&mut buf, n)
                })
            }));
            Upload { content_type, body }
        },
    )
}

/// One part of the form.
#[derive(Debug)]
pub struct Part {
    pub name: String,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub data: Bytes,
}

/// A parsed form.
#[derive(Debug, Default)]
pub struct Form {
    parts: Vec<Part>,
}

impl Upload {
    /// Reads the form; the body may hold `file_limit` bytes of file plus [`FORM_OVERHEAD`]
    /// (413 beyond). Not multipart or malformed → 400.
    pub async fn read_form(self, file_limit: usize) -> ApiResult<Form> {
        let content_type = self.content_type.unwrap_or_default();
        let boundary = multer::parse_boundary(&content_type)
            .map_err(|_| ApiError::validation("expected a multipart/form-data body"))?;
        let limit = (file_limit + FORM_OVERHEAD) as u64;
        let constraints = multer::Constraints::new()
            .size_limit(multer::SizeLimit::new().whole_stream(limit).per_field(limit));
        let mut multipart = multer::Multipart::with_constraints(self.body, boundary, constraints);
        let mut form = Form::default();
        while let Some(field) = multipart.next_field().await.map_err(form_error)? {
            if form.parts.len() == MAX_PARTS {
                return Err(ApiError::validation(format!("a form may have at most {MAX_PARTS} parts")));
            }
            let name = field.name().unwrap_or_default().to_string();
            // One part per name: a repeat would be ignored (the first one wins), so it can only
            // be a mistake or padding.
            if form.parts.iter().any(|p| p.name == name) {
                return Err(ApiError::validation(format!(
                    "`{}` may appear only once",
                    name.chars().take(64).collect::<String>()
                )));
            }
            let file_name = field.file_name().map(str::to_string);
            let content_type = field.content_type().map(|m| m.essence_str().to_string());
            let data = field.bytes().await.map_err(form_error)?;
            form.parts.push(Part { name, file_name, content_type, data });
        }
        Ok(form)
    }
}

fn form_error(err: multer::Error) -> ApiError {
    match err {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            ApiError::PayloadTooLarge
        }
        other => ApiError::validation(format!("malformed multipart body: {other}")),
    }
}

impl Form {
    /// The first part named `name`; 400 when there is none or it is empty.
    pub fn file(&self, name: &str) -> ApiResult<&Part> {
        let part = self
            .parts
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| ApiError::validation(format!("missing file field `{name}`")))?;
        if part.data.is_empty() {
            return Err(ApiError::validation(format!("the file in `{name}` is empty")));
        }
        Ok(part)
    }

    /// A text field, trimmed; `None` when absent. Not UTF-8 or too long → 400.
    pub fn text(&self, name: &str) -> ApiResult<Option<String>> {
        let Some(part) = self.parts.iter().find(|p| p.name == name) else { return Ok(None) };
        if part.data.len() > MAX_TEXT {
            return Err(ApiError::validation(format!("`{name}` is too long")));
        }
        let text = std::str::from_utf8(&part.data)
            .map_err(|_| ApiError::validation(format!("`{name}` must be UTF-8 text")))?;
        Ok(Some(text.trim().to_string()))
    }
}
