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
    /// OpenAI's `GET /v1/models` list.
    OpenAiModels,
    /// OpenAI's `POST /v1/chat/completions` (see `openai.rs`).
    OpenAiChat,
    /// OpenAI's `POST /v1/completions`.
    OpenAiCompletion,
    /// llama.cpp server's `POST /tokenize`.
    LlamaTokenize,
    /// llama.cpp server's `POST /detokenize`.
    LlamaDetokenize,
    /// OpenAI's `POST /v1/embeddings` (see `openai_embeddings.rs`).
    OpenAiEmbeddings,
    /// `POST /v1/rerank`, as llama.cpp's server, Jina and Cohere shape it.
    Rerank,
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
}

const fn route(method: &'static str, path: &'static str, request_type: &'static str) -> Route {
    Route {
        method,
        path,
        request_type,
        shape: Shape::Tabagent,
    }
}

/// Every route the server answers (besides CORS preflight `OPTIONS`).
pub const ROUTES: &[Route] = &[
    route("GET", "/health", "Health"),
    Route {
        method: "GET",
        path: "/openapi.yaml",
        request_type: "",
        shape: Shape::OpenApi,
    },
    Route {
        method: "POST",
        path: "/v1/rpc",
        request_type: "",
        shape: Shape::Rpc,
    },
    // OpenAI-compatible
    Route {
        method: "GET",
        path: "/v1/models",
        request_type: "ListModels",
        shape: Shape::OpenAiModels,
    },
    Route {
        method: "POST",
        path: "/v1/chat/completions",
        request_type: "Chat",
        shape: Shape::OpenAiChat,
    },
    Route {
        method: "POST",
        path: "/v1/completions",
        request_type: "Generate",
        shape: Shape::OpenAiCompletion,
    },
    Route {
        method: "POST",
        path: "/v1/embeddings",
        request_type: "Embeddings",
        shape: Shape::OpenAiEmbeddings,
    },
    Route {
        method: "POST",
        path: "/v1/rerank",
        request_type: "Rerank",
        shape: Shape::Rerank,
    },
    // llama.cpp server-compatible
    Route {
        method: "POST",
        path: "/tokenize",
        request_type: "Tokenize",
        shape: Shape::LlamaTokenize,
    },
    Route {
        method: "POST",
        path: "/detokenize",
        request_type: "Detokenize",
        shape: Shape::LlamaDetokenize,
    },
    // chat & generation
    route("POST", "/api/chat", "Chat"),
    route("POST", "/api/generate", "Generate"),
    route("POST", "/api/responses", "Responses"),
    route("POST", "/api/generations/{job_id}/stop", "StopGeneration"),
    route("GET", "/api/generations/{job_id}", "GetHaltStatus"),
    route("POST", "/api/tokenize", "Tokenize"),
    route("POST", "/api/detokenize", "Detokenize"),
    // models
    route("GET", "/api/models", "ListModels"),
    route("GET", "/api/models/{model}", "ModelInfo"),
    route("DELETE", "/api/models/{model}", "DeleteModel"),
    route("POST", "/api/models/{model}/load", "LoadModel"),
    route("POST", "/api/models/{model}/unload", "UnloadModel"),
    route("GET", "/api/models/{model}/memory", "EstimateMemory"),
    route(
        "GET",
        "/api/models/{model}/compatibility",
        "CheckCompatibility",
    ),
    route("POST", "/api/pull", "PullModel"),
    route("GET", "/api/loaded", "ListLoadedModels"),
    route("PUT", "/api/selection", "SelectModel"),
    route("GET", "/api/recipes", "GetRecipes"),
    route("GET", "/api/registry", "GetRegisteredModels"),
    // embeddings & retrieval
    route("POST", "/api/embeddings", "Embeddings"),
    route("POST", "/api/rerank", "Rerank"),
    route("GET", "/api/collections", "ListCollections"),
    route("POST", "/api/collections/{collection}/query", "RagQuery"),
    route(
        "POST",
        "/api/collections/{collection}/documents",
        "AddDocument",
    ),
    route(
        "DELETE",
        "/api/collections/{collection}/documents/{document_id}",
        "DeleteDocument",
    ),
    route(
        "POST",
        "/api/collections/{collection}/clear",
        "ClearCollection",
    ),
    // history
    route("GET", "/api/sessions", "ListSessions"),
    route("GET", "/api/sessions/{session_id}/messages", "ChatHistory"),
    route("POST", "/api/sessions/{session_id}/messages", "SaveMessage"),
    route("DELETE", "/api/sessions/{session_id}", "DeleteSession"),
    // system
    route("GET", "/api/system", "SystemInfo"),
    route("GET", "/api/stats", "GetStats"),
    route("GET", "/api/resources", "GetResources"),
    route("GET", "/api/params", "GetParams"),
    route("PATCH", "/api/params", "SetParams"),
    // WebRTC signaling
    route("POST", "/v1/webrtc/offer", "CreateWebRtcOffer"),
    route("POST", "/v1/webrtc/answer", "SubmitWebRtcAnswer"),
    route("POST", "/v1/webrtc/ice", "AddIceCandidate"),
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
/// path fields (each later source wins), then `request_type`.
pub fn request_object(
    request_type: &str,
    body: Option<Value>,
    query: &str,
    path_params: Vec<(&'static str, String)>,
) -> Result<Value, String> {
    let mut object = match body {
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
        object.insert(key, typed(value));
    }
    for (name, value) in path_params {
        object.insert(name.to_string(), typed(value));
    }
    object.insert(
        "request_type".into(),
        Value::String(request_type.to_string()),
    );
    Ok(Value::Object(object))
}

/// A query or path value as the JSON it looks like: `10` a number, `true` a
/// boolean, anything else a string.
fn typed(text: String) -> Value {
    match serde_json::from_str::<Value>(&text) {
        Ok(value @ (Value::Number(_) | Value::Bool(_))) => value,
        _ => Value::String(text),
    }
}

/// Decodes `%XX` escapes; None when the result is not UTF-8 or an escape is broken.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_with_parameters() {
        let Match::Found(route, params) = find(&Method::Get, "/api/sessions/a%20b/messages") else {
            panic!()
        };
        assert_eq!(route.request_type, "ChatHistory");
        assert_eq!(params, [("session_id", "a b".to_string())]);
        assert!(matches!(find(&Method::Put, "/health"), Match::WrongMethod(m) if m == ["GET"]));
        assert!(matches!(find(&Method::Get, "/nope"), Match::NotFound));
        assert!(matches!(
            find(&Method::Get, "/api/models/"),
            Match::NotFound
        ));
    }

    #[test]
    fn body_query_and_path_make_one_request() {
        let body = serde_json::json!({"limit": 1, "role": "user"});
        let object = request_object(
            "ChatHistory",
            Some(body),
            "limit=10&order=oldest",
            vec![("session_id", "s".into())],
        )
        .unwrap();
        assert_eq!(object["limit"], 10);
        assert_eq!(object["order"], "oldest");
        assert_eq!(object["session_id"], "s");
        assert_eq!(object["request_type"], "ChatHistory");
        assert!(request_object("Health", Some(serde_json::json!([1])), "", vec![]).is_err());
    }

    #[test]
    fn every_request_type_has_a_route() {
        // Request types reachable only through /v1/rpc would surprise REST users.
        let source = include_str!("../../api/mod.rs");
        let enum_body = source
            .split("pub enum Request {")
            .nth(1)
            .unwrap()
            .split('}')
            .next()
            .unwrap();
        for line in enum_body
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("//") && l.contains('('))
        {
            let name = line.split('(').next().unwrap();
            assert!(
                ROUTES.iter().any(|r| r.request_type == name),
                "{name} has no HTTP route"
            );
        }
    }
}
