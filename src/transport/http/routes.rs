//! The HTTP route table and how a route's path, query and body become one
//! protocol request. `openapi.yaml` documents exactly these routes (a test
//! holds the two together).

use serde_json::{Map, Value};
use tiny_http::Method;

/// How a route's request and replies are shaped on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// tabagent's own JSON: the reply envelope without change.
    Tabagent,
    /// `POST /v1/rpc`: the body is a whole native messaging envelope.
    Rpc,
    /// `GET /openapi.yaml`.
    OpenApi,
    /// `GET /metrics`: Prometheus' text format.
    Metrics,
    /// `GET /docs` and its files: Swagger UI (see `docs.rs`).
    Docs,
    /// OpenAI's `GET /v1/models` list.
    OpenAiModels,
    /// OpenAI's `POST /v1/chat/completions` (see `openai.rs`).
    OpenAiChat,
    /// OpenAI's `POST /v1/completions`.
    OpenAiCompletion,
    /// OpenAI's Responses API (see `openai_responses.rs`).
    OpenAiResponses,
    /// llama.cpp server's `POST /tokenize`.
    LlamaTokenize,
    /// llama.cpp server's `POST /detokenize`.
    LlamaDetokenize,
    /// OpenAI's `POST /v1/embeddings` (see `openai_embeddings.rs`).
    OpenAiEmbeddings,
    /// `POST /v1/rerank`, as llama.cpp's server, Jina and Cohere shape it.
    Rerank,
}

/// The JSON type of a query or path value that is not a string. Values are
/// typed by what the route documents for their name, never by their look: a
/// session named `123` stays the string `"123"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An integer (`limit=10`); text that is not one stays a string, which the
    /// request's own parsing then refuses with a 400 naming the field.
    Integer,
    /// `true` or `false`.
    Boolean,
}

/// One route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// GET, POST, PATCH, PUT or DELETE.
    pub method: &'static str,
    /// The path, with `{name}` segments that become request fields.
    pub path: &'static str,
    /// The request type it makes (empty for routes that are not one).
    pub request_type: &'static str,
    /// Its wire shape.
    pub shape: Shape,
    /// Query and path values that are not strings, as openapi.yaml types them.
    pub typed: &'static [(&'static str, Kind)],
    /// Whether a request without a body is refused (openapi.yaml's
    /// `requestBody.required`): a PATCH with nothing in it is a client's
    /// mistake, not an empty change.
    pub body_required: bool,
}

const fn route(method: &'static str, path: &'static str, request_type: &'static str) -> Route {
    Route {
        method,
        path,
        request_type,
        shape: Shape::Tabagent,
        typed: &[],
        body_required: false,
    }
}

impl Route {
    const fn shape(self, shape: Shape) -> Route {
        Route { shape, ..self }
    }

    const fn typed(self, typed: &'static [(&'static str, Kind)]) -> Route {
        Route { typed, ..self }
    }

    const fn body(self) -> Route {
        Route {
            body_required: true,
            ..self
        }
    }

    /// The documented type of the query or path value `name`.
    fn kind(&self, name: &str) -> Option<Kind> {
        self.typed.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
    }
}

const FORCE: &[(&str, Kind)] = &[("force", Kind::Boolean)];
const SIZING: &[(&str, Kind)] = &[("context_size", Kind::Integer)];
const DOCUMENT: &[(&str, Kind)] = &[("document_id", Kind::Integer)];
const PAGE: &[(&str, Kind)] = &[("limit", Kind::Integer)];
const CHUNK: &[(&str, Kind)] = &[("index", Kind::Integer)];
const TRUNCATE: &[(&str, Kind)] = &[("from_id", Kind::Integer)];
const HISTORY_PAGE: &[(&str, Kind)] = &[("limit", Kind::Integer), ("before", Kind::Integer)];

/// Whether a path needs the API key: all do but `/health` and the API page
/// (`/docs` and its files: the public description, nothing else).
pub fn needs_key(path: &str) -> bool {
    !(path == "/health" || path == "/docs" || path.starts_with("/docs/"))
}

/// Every route the server answers (besides CORS preflight `OPTIONS`).
pub const ROUTES: &[Route] = &[
    route("GET", "/health", "Health"),
    route("GET", "/openapi.yaml", "").shape(Shape::OpenApi),
    route("GET", "/metrics", "").shape(Shape::Metrics),
    route("GET", "/docs", "").shape(Shape::Docs),
    route("GET", "/docs/{file}", "").shape(Shape::Docs),
    route("POST", "/v1/rpc", "").shape(Shape::Rpc).body(),
    // OpenAI-compatible
    route("GET", "/v1/models", "ListModels").shape(Shape::OpenAiModels),
    route("POST", "/v1/chat/completions", "Chat")
        .shape(Shape::OpenAiChat)
        .body(),
    route("POST", "/v1/completions", "Generate")
        .shape(Shape::OpenAiCompletion)
        .body(),
    route("POST", "/v1/responses", "CreateResponse")
        .shape(Shape::OpenAiResponses)
        .body(),
    route("GET", "/v1/responses/{response_id}", "GetResponse").shape(Shape::OpenAiResponses),
    route("DELETE", "/v1/responses/{response_id}", "DeleteResponse").shape(Shape::OpenAiResponses),
    route("POST", "/v1/embeddings", "Embeddings")
        .shape(Shape::OpenAiEmbeddings)
        .body(),
    route("POST", "/v1/rerank", "Rerank")
        .shape(Shape::Rerank)
        .body(),
    // llama.cpp server-compatible
    route("POST", "/tokenize", "Tokenize")
        .shape(Shape::LlamaTokenize)
        .body(),
    route("POST", "/detokenize", "Detokenize")
        .shape(Shape::LlamaDetokenize)
        .body(),
    // chat & generation
    route("POST", "/api/chat", "Chat").body(),
    route("POST", "/api/generate", "Generate").body(),
    route("POST", "/api/responses", "Responses").body(),
    route("POST", "/api/generations/{job_id}/stop", "StopGeneration"),
    route("GET", "/api/generations/{job_id}", "GetHaltStatus"),
    route("POST", "/api/tokenize", "Tokenize").body(),
    route("POST", "/api/detokenize", "Detokenize").body(),
    // models
    route("GET", "/api/models", "ListModels"),
    route("GET", "/api/models/{model}", "ModelInfo"),
    route("DELETE", "/api/models/{model}", "DeleteModel").typed(FORCE),
    route("POST", "/api/models/{model}/load", "LoadModel"),
    route("POST", "/api/models/{model}/unload", "UnloadModel"),
    route("GET", "/api/models/{model}/memory", "EstimateMemory").typed(SIZING),
    route(
        "GET",
        "/api/models/{model}/compatibility",
        "CheckCompatibility",
    )
    .typed(SIZING),
    route("POST", "/api/pull", "PullModel").body(),
    route("GET", "/api/loaded", "ListLoadedModels"),
    route("PUT", "/api/selection", "SelectModel").body(),
    route("GET", "/api/recipes", "GetRecipes"),
    route("GET", "/api/registry", "GetRegisteredModels"),
    // embeddings & retrieval
    route("POST", "/api/embeddings", "Embeddings").body(),
    route("POST", "/api/rerank", "Rerank").body(),
    route("GET", "/api/collections", "ListCollections"),
    route("POST", "/api/collections/{collection}/query", "RagQuery").body(),
    route(
        "POST",
        "/api/collections/{collection}/documents",
        "AddDocument",
    )
    .body(),
    route(
        "DELETE",
        "/api/collections/{collection}/documents/{document_id}",
        "DeleteDocument",
    )
    .typed(DOCUMENT),
    route(
        "POST",
        "/api/collections/{collection}/clear",
        "ClearCollection",
    ),
    route(
        "GET",
        "/api/collections/{collection}/documents",
        "ListDocuments",
    ),
    // the knowledge base: uploads in parts
    route("POST", "/api/uploads", "UploadStart").body(),
    route(
        "PUT",
        "/api/uploads/{upload_id}/chunks/{index}",
        "UploadChunk",
    )
    .typed(CHUNK)
    .body(),
    route("POST", "/api/uploads/{upload_id}/finish", "UploadFinish"),
    route("DELETE", "/api/uploads/{upload_id}", "UploadCancel"),
    // export, backup and restore
    route("GET", "/api/sessions/{session_id}/export", "ExportSession"),
    route("GET", "/api/backup", "Backup"),
    route("POST", "/api/restore", "Restore").body(),
    // history
    route("GET", "/api/sessions", "ListSessions").typed(PAGE),
    route("GET", "/api/sessions/{session_id}/messages", "ChatHistory").typed(HISTORY_PAGE),
    route("POST", "/api/sessions/{session_id}/messages", "SaveMessage").body(),
    route("DELETE", "/api/sessions/{session_id}", "DeleteSession"),
    route(
        "DELETE",
        "/api/sessions/{session_id}/messages",
        "TruncateSession",
    )
    .typed(TRUNCATE),
    route(
        "PUT",
        "/api/sessions/{session_id}/settings",
        "SetSessionSettings",
    )
    .body(),
    route("GET", "/api/history/search", "SearchHistory").typed(PAGE),
    // system
    route("GET", "/api/system", "SystemInfo"),
    route("GET", "/api/stats", "GetStats"),
    route("GET", "/api/resources", "GetResources"),
    route("GET", "/api/params", "GetParams"),
    route("PATCH", "/api/params", "SetParams").body(),
    // WebRTC signaling
    route("POST", "/v1/webrtc/offer", "CreateWebRtcOffer"),
    route("POST", "/v1/webrtc/answer", "SubmitWebRtcAnswer").body(),
    route("POST", "/v1/webrtc/ice", "AddIceCandidate").body(),
    route("GET", "/v1/webrtc/session/{session_id}", "GetWebRtcSession"),
    route("GET", "/v1/webrtc/sessions", "ListWebRtcSessions"),
    route(
        "DELETE",
        "/v1/webrtc/session/{session_id}",
        "CloseWebRtcSession",
    ),
    // server push (an event stream over HTTP)
    route("POST", "/api/events", "Subscribe"),
];

/// What matching a path found.
pub enum Match {
    /// The route and its path parameters.
    Found(&'static Route, Vec<(&'static str, String)>),
    /// The path exists, but not for this method; the allowed methods.
    WrongMethod(Vec<&'static str>),
    /// No such path.
    NotFound,
}

/// Finds the route for `method` and `path` (no query string).
pub fn find(method: &Method, path: &str) -> Match {
    let method = method.as_str();
    let mut allowed = Vec::new();
    for route in ROUTES {
        if let Some(params) = match_path(route.path, path) {
            if route.method == method {
                return Match::Found(route, params);
            }
            allowed.push(route.method);
        }
    }
    if allowed.is_empty() {
        Match::NotFound
    } else {
        Match::WrongMethod(allowed)
    }
}

fn match_path(pattern: &'static str, path: &str) -> Option<Vec<(&'static str, String)>> {
    let mut params = Vec::new();
    let mut pattern_parts = pattern.split('/');
    let mut path_parts = path.split('/');
    loop {
        match (pattern_parts.next(), path_parts.next()) {
            (None, None) => return Some(params),
            (Some(want), Some(got)) => {
                if let Some(name) = want.strip_prefix('{').and_then(|w| w.strip_suffix('}')) {
                    if got.is_empty() {
                        return None;
                    }
                    params.push((name, percent_decode(got)?));
                } else if want != got {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

/// Builds the JSON object of a request: body fields, then query fields, then
/// path fields (each later source wins), then `request_type`. Query and path
/// values are strings unless the route types their name ([`Kind`]).
pub fn request_object(
    route: &Route,
    body: Option<Value>,
    query: &str,
    path_params: Vec<(&'static str, String)>,
) -> Result<Value, String> {
    let mut object = match body {
        None if route.body_required => {
            return Err(format!(
                "{} {} needs a JSON object body",
                route.method, route.path
            ));
        }
        None => Map::new(),
        Some(Value::Object(object)) => object,
        Some(_) => return Err("the request body must be a JSON object".into()),
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key =
            percent_decode(&key.replace('+', " ")).ok_or("the query string is not valid UTF-8")?;
        let value = percent_decode(&value.replace('+', " "))
            .ok_or("the query string is not valid UTF-8")?;
        let value = typed(route.kind(&key), value);
        object.insert(key, value);
    }
    for (name, value) in path_params {
        object.insert(name.to_string(), typed(route.kind(name), value));
    }
    object.insert(
        "request_type".into(),
        Value::String(route.request_type.to_string()),
    );
    Ok(Value::Object(object))
}

/// A query or path value as the JSON its documented kind says; text that is
/// not of that kind stays a string, for the request's parsing to refuse.
fn typed(kind: Option<Kind>, text: String) -> Value {
    let value = match kind {
        Some(Kind::Integer) => text
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<u64>().map(Value::from))
            .ok(),
        Some(Kind::Boolean) => text.parse::<bool>().ok().map(Value::Bool),
        None => None,
    };
    value.unwrap_or(Value::String(text))
}

/// Decodes `%XX` escapes; None when the result is not UTF-8 or an escape is broken.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            // from_str_radix alone would also take a sign: `%+1`.
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            // Two ASCII hex digits always parse.
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests;
