//! OpenAI's `POST /v1/embeddings` and the rerank shape llama.cpp's server,
//! Jina and Cohere share (`POST /v1/rerank`).
//!
//! Like `openai.rs` for chat: bodies are rewritten into tabagent's own request
//! fields before parsing ([`translate`]), final replies are rewritten back
//! ([`render`]); the handler never sees these shapes.

use serde_json::{Map, Value, json};

use super::reply::Answer;
use super::routes::Shape;
use crate::api::{Reply, Response};

/// Rewrites an embeddings or rerank body into tabagent's fields; other shapes
/// pass through. Errs with a message for a 400.
pub fn translate(shape: Shape, body: Option<Value>) -> Result<Option<Value>, String> {
    if !matches!(shape, Shape::OpenAiEmbeddings | Shape::Rerank) {
        return Ok(body);
    }
    let Some(Value::Object(body)) = body else {
        return Ok(body);
    };
    let mut out = Map::new();
    for key in ["id", "model"] {
        if let Some(value) = body.get(key).filter(|v| !v.is_null()) {
            out.insert(key.to_string(), value.clone());
        }
    }
    if shape == Shape::OpenAiEmbeddings {
        out.insert("input".into(), input(body.get("input"))?);
        for (key, value) in &body {
            match key.as_str() {
                "id" | "model" | "input" => {}
                _ if value.is_null() => {}
                "user" if value.is_string() => {}
                "user" => return Err("user must be a string".into()),
                "encoding_format" => {
                    out.insert("encoding_format".into(), value.clone());
                }
                // Shortened vectors need a model trained for them
                // (Matryoshka); none of tabagent's declares that.
                "dimensions" => {
                    return Err("dimensions is not supported: the model does not declare \
                                that its vectors may be shortened"
                        .into());
                }
                other => return Err(super::openai_request::unsupported(other)),
            }
        }
    } else {
        let query = body
            .get("query")
            .and_then(Value::as_str)
            .ok_or("query must be a string")?;
        out.insert("query".into(), query.into());
        out.insert("documents".into(), documents(body.get("documents"))?);
        if let Some(top_n) = body.get("top_n").filter(|v| !v.is_null()) {
            out.insert("top_n".into(), top_n.clone());
        }
    }
    Ok(Some(Value::Object(out)))
}

/// A text or a list of texts; token-id arrays are refused with a reason.
fn input(value: Option<&Value>) -> Result<Value, String> {
    match value {
        Some(text @ Value::String(_)) => Ok(text.clone()),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Ok(Value::Array(items.clone()))
        }
        Some(Value::Array(_)) => {
            Err("input must be a string or a list of strings (token ids are not supported)".into())
        }
        _ => Err("input must be a string or a list of strings".into()),
    }
}

/// Strings, or objects with a `text` member (Jina's and Cohere's form).
fn documents(value: Option<&Value>) -> Result<Value, String> {
    let Some(Value::Array(items)) = value else {
        return Err("documents must be a list of strings".into());
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(text) => Ok(Value::String(text.clone())),
            Value::Object(object) => object
                .get("text")
                .and_then(Value::as_str)
                .map(|t| Value::String(t.to_string()))
                .ok_or_else(|| "a document object needs a text member".to_string()),
            _ => Err("documents must be strings or {text} objects".to_string()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// A final reply in the route's shape, when the shape is one of these.
pub fn render(shape: Shape, reply: &Reply) -> Option<Answer> {
    body(shape, reply).map(|body| Answer::json(body.to_string().into_bytes()))
}

fn body(shape: Shape, reply: &Reply) -> Option<Value> {
    Some(match (&reply.response, shape) {
        (Response::EmbeddingList(list), Shape::OpenAiEmbeddings) => {
            let data: Vec<Value> = list
                .embeddings
                .iter()
                .enumerate()
                .map(|(index, embedding)| {
                    json!({"object": "embedding", "index": index, "embedding": embedding})
                })
                .collect();
            json!({
                "object": "list",
                "data": data,
                "model": list.model,
                "usage": {"prompt_tokens": list.prompt_tokens, "total_tokens": list.prompt_tokens},
            })
        }
        (Response::RerankResults(ranked), Shape::Rerank) => json!({
            "object": "list",
            "model": ranked.model,
            "method": ranked.method,
            "results": ranked.results,
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{EmbeddingList, RequestId, RerankHit, RerankResults};

    #[test]
    fn openai_bodies_become_tabagent_requests() {
        let body =
            json!({"model": "m", "input": ["a", "b"], "encoding_format": "base64", "user": "u"});
        let out = translate(Shape::OpenAiEmbeddings, Some(body))
            .unwrap()
            .unwrap();
        assert_eq!(
            out,
            json!({"model": "m", "input": ["a", "b"], "encoding_format": "base64"})
        );
        let tokens = json!({"model": "m", "input": [[1, 2]]});
        assert!(
            translate(Shape::OpenAiEmbeddings, Some(tokens))
                .unwrap_err()
                .contains("token ids")
        );
        let rerank =
            json!({"model": "m", "query": "q", "documents": ["x", {"text": "y"}], "top_n": 1});
        let out = translate(Shape::Rerank, Some(rerank)).unwrap().unwrap();
        assert_eq!(
            out,
            json!({"model": "m", "query": "q", "documents": ["x", "y"], "top_n": 1})
        );
        assert!(translate(Shape::Rerank, Some(json!({"documents": []}))).is_err());
    }

    #[test]
    fn replies_take_the_openai_and_rerank_shapes() {
        let reply = Reply::new(
            RequestId::text("1"),
            Response::EmbeddingList(EmbeddingList {
                model: "m".into(),
                embeddings: vec![json!([0.5, 0.5])],
                dimensions: 2,
                prompt_tokens: 3,
            }),
        );
        let out = body(Shape::OpenAiEmbeddings, &reply).unwrap();
        assert_eq!(
            out["data"][0],
            json!({"object": "embedding", "index": 0, "embedding": [0.5, 0.5]})
        );
        assert_eq!(out["usage"]["prompt_tokens"], 3);
        let reply = Reply::new(
            RequestId::text("2"),
            Response::RerankResults(RerankResults {
                model: "m".into(),
                method: "embedding_similarity".into(),
                results: vec![RerankHit {
                    index: 1,
                    relevance_score: 0.5,
                }],
            }),
        );
        let out = body(Shape::Rerank, &reply).unwrap();
        assert_eq!(
            out["results"],
            json!([{"index": 1, "relevance_score": 0.5}])
        );
        assert!(render(Shape::Tabagent, &reply).is_none());
    }
}
