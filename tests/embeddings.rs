//! Embeddings and rerank against the real binary, the real ONNX Runtime and
//! the real all-MiniLM-L6-v2 (int8) from `$TABAGENT_TEST_MODELS`, with the
//! library from `$ORT_DYLIB_PATH` (`make test` sets both; without them the
//! real-model tests are skipped with a loud message). Also: unknown and
//! wrong-kind models, corrupt and truncated graphs, a missing runtime, and
//! the official `openai` Python client.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::util::{HttpServer, NativeHost, TempDir};

const MINILM: &str = "all-minilm-l6-v2";

/// The real MiniLM folder, or None (with a loud message) outside `make test`.
fn real_minilm(test: &str) -> Option<PathBuf> {
    if !cfg!(feature = "onnx") {
        crate::util::skip(test, "built without the onnx feature");
        return None;
    }
    let (Some(models), Some(_)) = (
        std::env::var_os("TABAGENT_TEST_MODELS"),
        std::env::var_os("ORT_DYLIB_PATH"),
    ) else {
        crate::util::skip(
            test,
            "set TABAGENT_TEST_MODELS and ORT_DYLIB_PATH (make test does)",
        );
        return None;
    };
    let folder = PathBuf::from(models).join(MINILM);
    assert!(
        folder.join("model.onnx").is_file(),
        "{} is missing (run make models)",
        folder.display()
    );
    Some(folder)
}

/// A models dir linking the real MiniLM (and anything `extra` adds).
fn models_with(minilm: &Path, extra: impl FnOnce(&Path)) -> TempDir {
    let dir = TempDir::new("models");
    std::os::unix::fs::symlink(minilm, dir.path().join(MINILM)).unwrap();
    extra(dir.path());
    dir
}

fn http_server(models: &TempDir) -> HttpServer {
    let models = models.path().to_path_buf();
    HttpServer::start_with(TempDir::new("data"), move |c| {
        c.env("TABAGENT_MODELS_DIR", &models);
    })
}

fn native_host(models: &TempDir) -> NativeHost {
    let models = models.path().to_path_buf();
    NativeHost::start_with(TempDir::new("data"), move |c| {
        c.env("TABAGENT_MODELS_DIR", &models);
    })
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a vector: {value}"))
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

const PARAPHRASE: [&str; 2] = ["A man is eating food.", "A man is eating a piece of bread."];
const UNRELATED: [&str; 3] = [
    "The stock market fell sharply today.",
    "A girl is playing the violin on stage.",
    "Heavy rain is expected over the weekend.",
];

#[test]
fn embeddings_over_native_messaging_rank_a_paraphrase_first() {
    let Some(minilm) = real_minilm("embeddings_over_native_messaging_rank_a_paraphrase_first")
    else {
        return;
    };
    let models = models_with(&minilm, |_| {});
    let mut host = native_host(&models);
    let input: Vec<&str> = PARAPHRASE.iter().chain(UNRELATED.iter()).copied().collect();
    let reply = host
        .request(json!({"id": 1, "request_type": "Embeddings", "model": MINILM, "input": input}));
    assert_eq!(reply["response_type"], "EmbeddingList", "{reply}");
    assert_eq!(reply["model"], MINILM);
    assert_eq!(reply["dimensions"], 384);
    assert!(reply["prompt_tokens"].as_u64().unwrap() >= 5 * 3, "{reply}");
    let vectors: Vec<Vec<f32>> = reply["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    assert_eq!(vectors.len(), 5);
    for v in &vectors {
        assert_eq!(v.len(), 384);
        assert!((dot(v, v) - 1.0).abs() < 1e-4, "normalised");
    }
    let paraphrase = dot(&vectors[0], &vectors[1]);
    for (i, other) in vectors[2..].iter().enumerate() {
        let unrelated = dot(&vectors[0], other);
        assert!(
            paraphrase > unrelated + 0.3,
            "paraphrase {paraphrase} vs unrelated #{i} {unrelated}"
        );
    }
    assert!(paraphrase > 0.6, "{paraphrase}");

    // No model named: the only embedding model is used.
    let reply = host.request(json!({"id": 2, "request_type": "Embeddings", "input": "a tab"}));
    assert_eq!(reply["model"], MINILM, "{reply}");
    // Now it counts as loaded.
    let loaded = host.request(json!({"id": 3, "request_type": "ListLoadedModels"}));
    assert_eq!(loaded["models"][0]["model"], MINILM, "{loaded}");
}

#[test]
fn batching_and_truncation_keep_vectors_exact() {
    let Some(minilm) = real_minilm("batching_and_truncation_keep_vectors_exact") else {
        return;
    };
    let models = models_with(&minilm, |_| {});
    let mut host = native_host(&models);
    // Lengths from 1 to ~400 words: several batches, a text past max_length.
    let texts: Vec<String> = (0..40)
        .map(|i| {
            let words = 1 + (i * 37) % 60 + if i == 7 { 400 } else { 0 };
            (0..words)
                .map(|w| format!("word{}", (w * 7 + i) % 50))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let batch = host.request(json!({"id": "b", "request_type": "Embeddings", "input": texts}));
    assert_eq!(batch["response_type"], "EmbeddingList", "{batch}");
    let batched: Vec<Vec<f32>> = batch["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    for i in [0usize, 7, 13, 39] {
        let one = host.request(json!({"id": i, "request_type": "Embeddings", "input": texts[i]}));
        let single = floats(&one["embeddings"][0]);
        assert!(
            dot(&single, &batched[i]) > 0.9999,
            "text {i}: batch and single differ"
        );
        if i == 7 {
            assert!(
                one["prompt_tokens"].as_u64().unwrap() <= 256,
                "truncated at max_length: {}",
                one["prompt_tokens"]
            );
        }
    }
}

#[test]
fn openai_embeddings_and_rerank_over_http() {
    let Some(minilm) = real_minilm("openai_embeddings_and_rerank_over_http") else {
        return;
    };
    let models = models_with(&minilm, |_| {});
    let server = http_server(&models);
    let input = [PARAPHRASE[0], UNRELATED[0]];
    let float = server.post("/v1/embeddings", &json!({"model": MINILM, "input": input}));
    let float = float.ok_json();
    assert_eq!(float["object"], "list");
    assert_eq!(float["data"][1]["index"], 1);
    assert_eq!(float["data"][0]["object"], "embedding");
    assert!(float["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let b64 = server
        .post(
            "/v1/embeddings",
            &json!({"model": MINILM, "input": input, "encoding_format": "base64"}),
        )
        .json();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(decoded, floats(&float["data"][0]["embedding"]));

    // tabagent's own route gives the same vectors.
    let own = server
        .post("/api/embeddings", &json!({"model": MINILM, "input": input}))
        .json();
    assert_eq!(own["response_type"], "EmbeddingList");
    assert_eq!(
        floats(&own["embeddings"][1]),
        floats(&float["data"][1]["embedding"])
    );

    let documents = json!([
        "Stocks fell sharply on Monday.",
        {"text": "Cats eat fish, meat and dry cat food."},
        "The violin concert starts at eight.",
    ]);
    let ranked = server.post(
        "/v1/rerank",
        &json!({"query": "what do cats eat?", "documents": documents, "top_n": 2}),
    );
    let ranked = ranked.ok_json();
    assert_eq!(ranked["method"], "embedding_similarity");
    assert_eq!(ranked["model"], MINILM);
    let results = ranked["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["index"], 1, "{ranked}");
    assert!(results[0]["relevance_score"].as_f64() > results[1]["relevance_score"].as_f64());

    let native = server
        .post(
            "/api/rerank",
            &json!({"query": "what do cats eat?", "documents": ["a", "cats eat fish"]}),
        )
        .json();
    assert_eq!(native["response_type"], "RerankResults");
    assert_eq!(native["method"], "embedding_similarity");
    assert_eq!(native["results"].as_array().unwrap().len(), 2);

    for (body, status) in [
        (json!({"model": "nope", "input": "x"}), 404),
        (json!({"model": MINILM, "input": []}), 422),
        (json!({"model": MINILM, "input": [[1, 2, 3]]}), 400),
        (
            json!({"model": MINILM, "input": "x", "encoding_format": "int8"}),
            422,
        ),
    ] {
        let reply = server.post("/v1/embeddings", &body);
        assert_eq!(
            reply.status,
            status,
            "{body}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        assert!(reply.json()["error"]["message"].is_string());
    }
}

#[test]
fn a_corrupt_or_truncated_graph_is_a_clear_error_and_the_host_keeps_serving() {
    let Some(minilm) =
        real_minilm("a_corrupt_or_truncated_graph_is_a_clear_error_and_the_host_keeps_serving")
    else {
        return;
    };
    let models = models_with(&minilm, |dir| {
        let graph = std::fs::read(minilm.join("model.onnx")).unwrap();
        for (name, bytes) in [
            ("truncated", graph[..graph.len() / 3].to_vec()),
            ("garbage", b"this is not an onnx graph at all".repeat(100)),
        ] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
            std::fs::write(dir.join(name).join("model.onnx"), bytes).unwrap();
            std::fs::copy(
                minilm.join("tokenizer.json"),
                dir.join(name).join("tokenizer.json"),
            )
            .unwrap();
        }
        std::fs::create_dir_all(dir.join("badtok")).unwrap();
        std::fs::copy(minilm.join("model.onnx"), dir.join("badtok/model.onnx")).unwrap();
        std::fs::write(
            dir.join("badtok/tokenizer.json"),
            b"{\"not\": \"a tokenizer\"}",
        )
        .unwrap();
    });
    let mut host = native_host(&models);
    for (i, (model, words)) in [
        ("truncated", "cannot be loaded by ONNX Runtime"),
        ("garbage", "cannot be loaded by ONNX Runtime"),
        ("badtok", "cannot be read as a tokenizer"),
    ]
    .into_iter()
    .enumerate()
    {
        let reply = host
            .request(json!({"id": i, "request_type": "Embeddings", "model": model, "input": "x"}));
        assert_eq!(reply["response_type"], "Error", "{reply}");
        assert_eq!(reply["error"]["status"], 422, "{reply}");
        let detail = reply["error"]["detail"].as_str().unwrap();
        assert!(detail.contains(words), "{model}: {detail}");
    }
    // Still serving, and the good model still works.
    let reply = host
        .request(json!({"id": "ok", "request_type": "Embeddings", "model": MINILM, "input": "x"}));
    assert_eq!(reply["response_type"], "EmbeddingList", "{reply}");
    let health = host.request(json!({"id": "h", "request_type": "Health"}));
    assert_eq!(health["response_type"], "Health");
}

#[test]
fn the_runtime_is_found_in_the_data_dir_and_a_missing_one_is_explained() {
    let Some(minilm) =
        real_minilm("the_runtime_is_found_in_the_data_dir_and_a_missing_one_is_explained")
    else {
        return;
    };
    let library = PathBuf::from(std::env::var_os("ORT_DYLIB_PATH").unwrap());
    let models = models_with(&minilm, |_| {});
    let models_dir = models.path().to_path_buf();

    // Nothing set, the library in <data-dir>/lib: found.
    let data = TempDir::new("data");
    std::fs::create_dir_all(data.path().join("lib")).unwrap();
    std::os::unix::fs::symlink(&library, data.path().join("lib/libonnxruntime.so")).unwrap();
    let dir = models_dir.clone();
    let mut host = NativeHost::start_with(data, move |c| {
        c.env_remove("ORT_DYLIB_PATH")
            .env("TABAGENT_MODELS_DIR", &dir);
    });
    let reply = host.request(json!({"id": 1, "request_type": "Embeddings", "input": "x"}));
    assert_eq!(reply["response_type"], "EmbeddingList", "{reply}");

    // Nowhere: a 503 that says where to put it.
    let mut host = NativeHost::start_with(TempDir::new("data"), move |c| {
        c.env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
            .env("TABAGENT_MODELS_DIR", &models_dir);
    });
    let reply = host.request(json!({"id": 2, "request_type": "Embeddings", "input": "x"}));
    assert_eq!(reply["error"]["status"], 503, "{reply}");
    let detail = reply["error"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("ORT_DYLIB_PATH") && detail.contains("/nonexistent/libonnxruntime.so"),
        "{detail}"
    );
}

#[test]
fn unknown_and_wrong_kind_models_are_refused() {
    let models = TempDir::new("models");
    std::fs::write(models.path().join("chat.gguf"), b"GGUF").unwrap();
    let mut host = native_host(&models);
    let reply =
        host.request(json!({"id": 1, "request_type": "Embeddings", "model": "nope", "input": "x"}));
    let expect_404 = if cfg!(feature = "onnx") { 404 } else { 501 };
    assert_eq!(reply["error"]["status"], expect_404, "{reply}");
    if cfg!(feature = "onnx") {
        let reply = host
            .request(json!({"id": 2, "request_type": "Embeddings", "model": "chat", "input": "x"}));
        assert_eq!(reply["error"]["status"], 422, "{reply}");
        assert!(
            reply["error"]["detail"]
                .as_str()
                .unwrap()
                .contains("GGUF chat model"),
            "{reply}"
        );
        let reply = host
            .request(json!({"id": 3, "request_type": "Rerank", "query": "q", "documents": ["d"]}));
        assert_eq!(reply["error"]["status"], 404, "no embedding model: {reply}");
    }
}

#[test]
fn the_official_openai_python_client_embeds() {
    let Some(minilm) = real_minilm("the_official_openai_python_client_embeds") else {
        return;
    };
    let have_client = Command::new("python3")
        .args(["-c", "import openai"])
        .status()
        .unwrap()
        .success();
    assert!(
        have_client,
        "the openai Python package is missing: python3 -m pip install openai"
    );
    let models = models_with(&minilm, |_| {});
    let server = http_server(&models);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let output = Command::new("python3")
        .arg(script)
        .env("OPENAI_API_KEY", crate::util::TEST_KEY)
        .arg(server.url("/v1"))
        .arg("-")
        .arg(MINILM)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openai_client.py failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
