//! OpenAI Files API: `POST /v1/files` (multipart), `GET /v1/files`,
//! `GET`/`DELETE /v1/files/{id}`, `GET /v1/files/{id}/content`. Files are
//! kept in memory, [`MAX_TOTAL_BYTES`] at most; an upload that would go
//! past it is refused (413) rather than evicting anything.

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Value};

use crate::body::{ActiveGuard, MockBody};
use crate::multipart::Form;
use crate::openai::error_body_with;
use crate::server::{full_answer, json_response, query_param, unix_now, ApiError, Ctx, Shared};
use crate::store::{limit_param, lock, page, Store};

/// Total bytes of all stored files.
pub(crate) const MAX_TOTAL_BYTES: usize = 64 << 20;

/// Most files kept at once.
const MAX_FILES: usize = 10_000;

/// Purposes an upload may name (`batch_output` is the mock's own).
const PURPOSES: [&str; 6] = [
    "assistants",
    "batch",
    "fine-tune",
    "vision",
    "user_data",
    "evals",
];

pub(crate) struct StoredFile {
    pub id: String,
    pub filename: String,
    pub purpose: String,
    pub created_at: u64,
    pub data: Bytes,
}

impl StoredFile {
    pub fn object(&self) -> Value {
        json!({
            "id": self.id,
            "object": "file",
            "bytes": self.data.len(),
            "created_at": self.created_at,
            "expires_at": null,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": null,
        })
    }
}

pub(crate) struct FileStore {
    files: Store<StoredFile>,
    total: usize,
}

impl Default for FileStore {
    fn default() -> Self {
        FileStore {
            files: Store::new(MAX_FILES),
            total: 0,
        }
    }
}

impl FileStore {
    pub fn get(&self, id: &str) -> Option<&StoredFile> {
        self.files.get(id)
    }

    /// Store a file; refused when the store is full.
    pub fn add(&mut self, f: StoredFile) -> Result<Value, ApiError> {
        if self.files.len() >= MAX_FILES || self.total + f.data.len() > MAX_TOTAL_BYTES {
            return Err(ApiError::new(
                crate::server::Dialect::OpenAi,
                413,
                &format!(
                    "llmesh-mock file storage is full ({MAX_TOTAL_BYTES} bytes, {MAX_FILES} files): delete files first"
                ),
            ));
        }
        self.total += f.data.len();
        let obj = f.object();
        self.files.insert(f.id.clone(), f);
        Ok(obj)
    }

    pub fn remove(&mut self, id: &str) -> Option<StoredFile> {
        let f = self.files.remove(id)?;
        self.total -= f.data.len();
        Some(f)
    }
}

/// Store `data` as a new file (the upload endpoint, batch outputs, and
/// [`crate::MockServer::add_file`]).
pub(crate) fn add(
    sh: &Shared,
    filename: &str,
    purpose: &str,
    data: Bytes,
) -> Result<Value, ApiError> {
    let f = StoredFile {
        id: sh.new_id("file-"),
        filename: filename.to_owned(),
        purpose: purpose.to_owned(),
        created_at: unix_now(),
        data,
    };
    lock(&sh.files).add(f)
}

fn not_found(id: &str) -> Response<MockBody> {
    ApiError {
        status: 404,
        body: error_body_with(
            &format!("No such File object: {id}"),
            "invalid_request_error",
            Some("id"),
            None,
        ),
    }
    .response()
}

/// `POST /v1/files`.
pub(crate) fn upload(ctx: &Ctx<'_>, form: Form) -> Response<MockBody> {
    let Some(purpose) = form.field("purpose") else {
        return ApiError::openai("Missing required parameter: 'purpose'.").response();
    };
    if !PURPOSES.contains(&purpose) {
        return ApiError::openai(&format!(
            "Invalid value for 'purpose': '{purpose}'; expected one of {}.",
            PURPOSES.join(", ")
        ))
        .response();
    }
    let Some(file) = form.file.as_ref() else {
        return ApiError::openai("Missing required parameter: 'file'.").response();
    };
    let filename = file.filename.as_deref().unwrap_or("upload");
    let data = file.data.clone().unwrap_or_default();
    match add(ctx.sh, filename, purpose, data) {
        Ok(obj) => json_response(StatusCode::OK, obj.to_string()),
        Err(e) => e.response(),
    }
}

/// `GET /v1/files` (`purpose`, `order` asc|desc (default desc), `limit`,
/// `after`).
pub(crate) fn list(ctx: &Ctx<'_>) -> Response<MockBody> {
    let q = ctx.query();
    let purpose = query_param(q, "purpose");
    let asc = query_param(q, "order") == Some("asc");
    let limit = limit_param(q, 10_000, 10_000);
    let store = lock(&ctx.sh.files);
    let mut all: Vec<(&str, &StoredFile)> = store
        .files
        .newest_first()
        .filter(|(_, f)| purpose.is_none_or(|p| f.purpose == p))
        .collect();
    if asc {
        all.reverse();
    }
    let (data, has_more) = page(all.into_iter(), query_param(q, "after"), limit);
    let body = json!({
        "object": "list",
        "data": data.iter().map(|(_, f)| f.object()).collect::<Vec<_>>(),
        "first_id": data.first().map(|(k, _)| *k),
        "last_id": data.last().map(|(k, _)| *k),
        "has_more": has_more,
    });
    drop(store);
    json_response(StatusCode::OK, body.to_string())
}

/// `GET /v1/files/{id}`.
pub(crate) fn get(ctx: &Ctx<'_>, id: &str) -> Response<MockBody> {
    let obj = lock(&ctx.sh.files).get(id).map(StoredFile::object);
    match obj {
        Some(o) => json_response(StatusCode::OK, o.to_string()),
        None => not_found(id),
    }
}

/// `DELETE /v1/files/{id}`.
pub(crate) fn delete(ctx: &Ctx<'_>, id: &str) -> Response<MockBody> {
    match lock(&ctx.sh.files).remove(id) {
        Some(_) => json_response(
            StatusCode::OK,
            json!({"id": id, "object": "file", "deleted": true}).to_string(),
        ),
        None => not_found(id),
    }
}

/// `GET /v1/files/{id}/content`: the raw bytes.
pub(crate) fn content(ctx: &Ctx<'_>, id: &str, active: ActiveGuard) -> Response<MockBody> {
    let found = lock(&ctx.sh.files)
        .get(id)
        .map(|f| (f.data.clone(), f.filename.ends_with(".jsonl")));
    match found {
        Some((data, jsonl)) => {
            let ct = if jsonl {
                "application/jsonl"
            } else {
                "application/octet-stream"
            };
            full_answer(data, ct, ctx.layers, active)
        }
        None => not_found(id),
    }
}
