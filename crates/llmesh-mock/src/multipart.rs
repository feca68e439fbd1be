//! `multipart/form-data` request bodies (audio and file uploads), parsed as
//! they arrive with `multer`: a file part is counted (audio) or collected
//! chunk by chunk (file uploads), never read into one string first.

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_TYPE;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::server::{ApiError, Dialect, MAX_BODY};

/// Largest text (non-file) field accepted.
const MAX_TEXT_FIELD: usize = 1 << 20;

/// The part named `file`.
pub(crate) struct Upload {
    pub filename: Option<String>,
    /// Its size in bytes.
    pub len: u64,
    /// Its bytes, when the caller asked to keep them.
    pub data: Option<Bytes>,
}

/// A parsed form: the text fields in order, and the file part.
pub(crate) struct Form {
    pub fields: Vec<(String, String)>,
    pub file: Option<Upload>,
}

impl Form {
    /// The first text field called `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn bad(status: u16, message: &str) -> ApiError {
    ApiError::new(Dialect::OpenAi, status, message)
}

fn multer_error(e: multer::Error) -> ApiError {
    match e {
        multer::Error::StreamSizeExceeded { limit } => bad(
            413,
            &format!("multipart body exceeds the mock's limit of {limit} bytes"),
        ),
        e => bad(400, &format!("malformed multipart/form-data body: {e}")),
    }
}

/// Read the form in `body`. With `keep_file` the file part's bytes are
/// collected; otherwise only counted.
pub(crate) async fn read(
    headers: &HeaderMap,
    body: Incoming,
    keep_file: bool,
) -> Result<Form, ApiError> {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = multer::parse_boundary(ct).map_err(|_| {
        bad(
            400,
            "expected a multipart/form-data body (Content-Type with a boundary)",
        )
    })?;
    let constraints = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().whole_stream(MAX_BODY as u64));
    let mut mp =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let mut form = Form {
        fields: Vec::new(),
        file: None,
    };
    while let Some(mut field) = mp.next_field().await.map_err(multer_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            if form.file.is_some() {
                return Err(bad(400, "more than one 'file' part"));
            }
            let filename = field.file_name().map(str::to_owned);
            let mut len = 0u64;
            let mut data = BytesMut::new();
            while let Some(chunk) = field.chunk().await.map_err(multer_error)? {
                len += chunk.len() as u64;
                if keep_file {
                    data.extend_from_slice(&chunk);
                }
            }
            form.file = Some(Upload {
                filename,
                len,
                data: keep_file.then(|| data.freeze()),
            });
            continue;
        }
        if field.file_name().is_some() {
            // Another file part: not ours, skip it.
            while field.chunk().await.map_err(multer_error)?.is_some() {}
            continue;
        }
        let mut text = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(multer_error)? {
            if text.len() + chunk.len() > MAX_TEXT_FIELD {
                return Err(bad(413, &format!("form field '{name}' is too large")));
            }
            text.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(text)
            .map_err(|_| bad(400, &format!("form field '{name}' is not UTF-8 text")))?;
        form.fields.push((name, text));
    }
    Ok(form)
}
