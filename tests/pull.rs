//! PullModel, DeleteModel, the catalog and `tabagent pull` against the real
//! binary, downloading from a small HTTP server on 127.0.0.1 ([`server`]:
//! Range and If-Range support, and a mode that drops the connection
//! halfway through the first download).
//!
//! Every test that downloads runs in a network namespace of its own with only
//! loopback up, so a bug cannot send a packet off this machine: those tests
//! are `#[ignore]`d in a plain run, and
//! [`pulls_run_in_a_network_namespace_of_their_own`] runs them again inside
//! `unshare --net`. Their servers get `allow_loopback_pulls` (pulls are
//! https-only otherwise); [`guard`] tests what a pull refuses.

mod guard;
mod server;

pub use server::{FileServer, fake_gguf};

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::util::{HttpServer, NativeHost, TempDir, command, http};

/// Set in the namespace's run (see the module's doc).
const NETNS: &str = "TABAGENT_TEST_NETNS";

/// Runs every ignored `pull::` test again in a network namespace with only
/// loopback up (root, or unprivileged user namespaces).
#[test]
fn pulls_run_in_a_network_namespace_of_their_own() {
    let exe = std::env::current_exe().unwrap();
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let mut command = Command::new("unshare");
    command.arg("--net");
    if !root {
        command.arg("--map-root-user");
    }
    let output = command
        .args(["sh", "-c", "ip link set lo up && exec \"$0\" \"$@\""])
        .arg(&exe)
        .args(["pull::", "--ignored", "--test-threads=2"])
        .env(NETNS, "1")
        .output()
        .expect("unshare (util-linux) and ip (iproute2) are needed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let passed: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("test result: ok. "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 10, "only {passed} pull tests ran:\n{stdout}");
    eprintln!("{stdout}");
}

/// Asserts that this test runs in the namespace: no interface but loopback.
pub fn isolated() {
    assert!(
        std::env::var_os(NETNS).is_some(),
        "this test runs through pull::pulls_run_in_a_network_namespace_of_their_own"
    );
    let devices = std::fs::read_to_string("/proc/net/dev").unwrap();
    let others: Vec<&str> = devices
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(str::trim))
        .filter(|name| *name != "lo")
        .collect();
    assert!(others.is_empty(), "interfaces beyond loopback: {others:?}");
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A native host that may pull from loopback.
pub fn native_host(models: &Path) -> NativeHost {
    let models = models.to_path_buf();
    NativeHost::start_with(TempDir::new("data"), move |c| {
        c.env("TABAGENT_MODELS_DIR", &models)
            .env("TABAGENT_ALLOW_LOOPBACK_PULLS", "true");
    })
}

pub fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

#[test]
#[ignore = "run inside unshare --net by pulls_run_in_a_network_namespace_of_their_own"]
fn a_pull_over_native_messaging_streams_progress_and_places_the_file() {
    isolated();
    let body = fake_gguf(3 << 20);
    let server = FileServer::start(HashMap::from([("/files/tiny.gguf", body.clone())]), None);
    let models = TempDir::new("models");
    let mut host = native_host(models.path());
    // Another view of the extension watches every pull through Subscribe.
    host.send(&json!({"id": "watch", "request_type": "Subscribe", "events": ["PullProgress"]}));
    assert_eq!(host.recv()["response_type"], "Subscribed");
    let id = json!("pull-1");
    host.send(&json!({"id": id, "request_type": "PullModel", "url": server.url("/files/tiny.gguf"), "sha256": sha256_hex(&body)}));
    let (pushed, frames): (Vec<Value>, Vec<Value>) = host
        .recv_until_done(&id)
        .into_iter()
        .partition(|f| f["id"] == "watch");
    let (last, chunks) = frames.split_last().unwrap();
    assert_eq!(last["response_type"], "PullComplete", "{last}");
    assert_eq!(last["model"], "tiny");
    assert_eq!(last["size_bytes"], body.len());
    assert_eq!(last["sha256"], sha256_hex(&body));
    let progress: Vec<u64> = chunks
        .iter()
        .filter(|f| f["response_type"] == "PullProgress")
        .map(|f| {
            assert_eq!(f["done"], false);
            assert_eq!(f["total_bytes"], body.len());
            f["downloaded_bytes"].as_u64().unwrap()
        })
        .collect();
    assert!(
        progress.len() >= 10 && progress.len() <= 110,
        "throttled to ~1%: {} chunks",
        progress.len()
    );
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(progress.first(), Some(&0));
    assert_eq!(progress.last(), Some(&(body.len() as u64)));
    let watched: Vec<u64> = pushed
        .iter()
        .map(|e| {
            assert_eq!(
                (&e["response_type"], &e["event"]),
                (&json!("Event"), &json!("PullProgress")),
                "{e}"
            );
            e["downloaded_bytes"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(watched, progress, "subscribers see the same progress");
    assert_eq!(
        std::fs::read(models.path().join("tiny.gguf")).unwrap(),
        body
    );
    assert!(
        leftovers(models.path()).is_empty(),
        "{:?}",
        leftovers(models.path())
    );
    let listed = host.request(json!({"id": 2, "request_type": "ListModels"}));
    assert_eq!(listed["models"][0]["id"], "tiny", "{listed}");

    // Pulled again with the same digest: already there, nothing fetched.
    let requests = server.ranges().len();
    let again = host.request(json!({"id": 3, "request_type": "PullModel", "url": server.url("/files/tiny.gguf"), "sha256": sha256_hex(&body)}));
    assert_eq!(again["response_type"], "PullComplete", "{again}");
    assert_eq!(server.ranges().len(), requests);
}

#[test]
#[ignore = "run inside unshare --net by pulls_run_in_a_network_namespace_of_their_own"]
fn a_pull_over_http_streams_progress_as_server_sent_events() {
    isolated();
    let body = fake_gguf(1 << 20);
    let server = FileServer::start(HashMap::from([("/m.gguf", body.clone())]), None);
    let models = TempDir::new("models");
    let dir = models.path().to_path_buf();
    let http_server = HttpServer::start_with(TempDir::new("data"), move |c| {
        c.env("TABAGENT_MODELS_DIR", &dir)
            .env("TABAGENT_ALLOW_LOOPBACK_PULLS", "true");
    });
    let reply = http_server.post(
        "/api/pull",
        &json!({"url": server.url("/m.gguf"), "model": "renamed", "allow_unverified": true}),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("Content-Type"), Some("text/event-stream"));
    let events: Vec<Value> = reply
        .events()
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let (last, chunks) = events.split_last().unwrap();
    assert_eq!(last["response_type"], "PullComplete", "{last}");
    assert_eq!(last["model"], "renamed");
    assert!(chunks.len() >= 2 && chunks.iter().all(|c| c["response_type"] == "PullProgress"));
    assert_eq!(
        std::fs::read(models.path().join("renamed.gguf")).unwrap(),
        body
    );
}

#[test]
#[ignore = "run inside unshare --net by pulls_run_in_a_network_namespace_of_their_own"]
fn a_wrong_sha256_discards_the_file() {
    isolated();
    let body = fake_gguf(256 << 10);
    let server = FileServer::start(HashMap::from([("/x.gguf", body)]), None);
    let models = TempDir::new("models");
    let mut host = native_host(models.path());
    let wrong = "0".repeat(64);
    let reply = host.request(json!({"id": 1, "request_type": "PullModel", "url": server.url("/x.gguf"), "sha256": wrong}));
    assert_eq!(reply["error"]["status"], 422, "{reply}");
    let detail = reply["error"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("sha256 mismatch") && detail.contains("discarded"),
        "{detail}"
    );
    assert_eq!(
        std::fs::read_dir(models.path()).unwrap().count(),
        0,
        "nothing left behind"
    );
}

#[test]
#[ignore = "run inside unshare --net by pulls_run_in_a_network_namespace_of_their_own"]
fn an_interrupted_pull_resumes_where_it_broke_off() {
    isolated();
    let body = fake_gguf(2 << 20);
    let cut = 900_000;
    let server = FileServer::start(HashMap::from([("/big.gguf", body.clone())]), Some(cut));
    let models = TempDir::new("models");
    let mut host = native_host(models.path());
    let url = server.url("/big.gguf");
    let first = host.request(
        json!({"id": 1, "request_type": "PullModel", "url": url, "allow_unverified": true}),
    );
    assert_eq!(first["error"]["status"], 502, "{first}");
    assert!(
        first["error"]["detail"]
            .as_str()
            .unwrap()
            .contains("pull again to resume"),
        "{first}"
    );
    let part = models.path().join(".big.gguf.part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), cut as u64);
    assert!(!models.path().join("big.gguf").exists());

    let id = json!(2);
    host.send(
        &json!({"id": id, "request_type": "PullModel", "url": url, "sha256": sha256_hex(&body)}),
    );
    let frames = host.recv_until_done(&id);
    let last = frames.last().unwrap();
    assert_eq!(last["response_type"], "PullComplete", "{last}");
    assert_eq!(
        frames[0]["downloaded_bytes"], cut,
        "progress starts at the resumed size"
    );
    assert_eq!(server.ranges(), [None, Some(format!("bytes={cut}-"))]);
    assert_eq!(std::fs::read(models.path().join("big.gguf")).unwrap(), body);
    assert!(
        leftovers(models.path()).is_empty(),
        "{:?}",
        leftovers(models.path())
    );
}

#[test]
#[ignore = "run inside unshare --net by pulls_run_in_a_network_namespace_of_their_own"]
fn bad_pulls_are_refused_with_reasons() {
    isolated();
    let server = FileServer::start(
        HashMap::from([("/page.gguf", b"<html>login</html>".to_vec())]),
        None,
    );
    let models = TempDir::new("models");
    let mut host = native_host(models.path());
    for (request, status, words) in [
        (json!({"url": server.url("/missing.gguf")}), 404, "404"),
        (
            json!({"url": "ftp://example.com/x.gguf"}),
            422,
            "not an https://",
        ),
        (
            json!({"url": server.url("/model.onnx")}),
            422,
            "does not name a .gguf",
        ),
        (
            json!({"url": server.url("/page.gguf")}),
            422,
            "not a GGUF file",
        ),
        (
            json!({"url": server.url("/page.gguf"), "model": "../escape"}),
            422,
            "not a usable",
        ),
        (
            json!({"url": server.url("/page.gguf"), "sha256": "abc"}),
            422,
            "64 hex",
        ),
        (
            json!({"url": "http://127.0.0.1:1/x.gguf"}),
            502,
            "could not fetch the model from 127.0.0.1: no usable answer",
        ),
    ] {
        let mut message = request.clone();
        message["id"] = json!("bad");
        message["request_type"] = json!("PullModel");
        message["allow_unverified"] = json!(true);
        let reply = host.request(message);
        assert_eq!(reply["error"]["status"], status, "{request}: {reply}");
        let detail = reply["error"]["detail"].as_str().unwrap();
        assert!(detail.contains(words), "{request}: {detail}");
    }
    assert_eq!(std::fs::read_dir(models.path()).unwrap().count(), 0);
}

#[test]
fn delete_model_removes_files_and_folders() {
    let models = TempDir::new("models");
    std::fs::write(models.path().join("old.gguf"), b"GGUF").unwrap();
    std::fs::create_dir_all(models.path().join("emb")).unwrap();
    std::fs::write(models.path().join("emb/model.onnx"), b"x").unwrap();
    std::fs::write(models.path().join("emb/tokenizer.json"), b"{}").unwrap();
    let mut host = native_host(models.path());
    let reply = host.request(json!({"id": 1, "request_type": "DeleteModel", "model": "old"}));
    assert_eq!(reply["response_type"], "ModelDeleted", "{reply}");
    assert!(!models.path().join("old.gguf").exists());
    let reply = host.request(json!({"id": 2, "request_type": "DeleteModel", "model": "emb"}));
    assert_eq!(reply["response_type"], "ModelDeleted", "{reply}");
    assert!(!models.path().join("emb").exists());
    let reply = host.request(json!({"id": 3, "request_type": "DeleteModel", "model": "old"}));
    assert_eq!(reply["error"]["status"], 404, "{reply}");
}

#[test]
fn a_loaded_model_is_deleted_only_with_force() {
    let Some(real) = std::env::var_os("TABAGENT_TEST_MODELS").filter(|_| cfg!(feature = "onnx"))
    else {
        crate::util::skip(
            "a_loaded_model_is_deleted_only_with_force",
            "needs onnx and TABAGENT_TEST_MODELS",
        );
        return;
    };
    let models = TempDir::new("models");
    let copy = models.path().join("mini");
    std::fs::create_dir_all(&copy).unwrap();
    for file in ["model.onnx", "tokenizer.json", "tabagent.json"] {
        std::fs::copy(
            Path::new(&real).join("all-minilm-l6-v2").join(file),
            copy.join(file),
        )
        .unwrap();
    }
    let mut host = native_host(models.path());
    let reply =
        host.request(json!({"id": 1, "request_type": "Embeddings", "model": "mini", "input": "x"}));
    assert_eq!(reply["response_type"], "EmbeddingList", "{reply}");
    let reply = host.request(json!({"id": 2, "request_type": "DeleteModel", "model": "mini"}));
    assert_eq!(reply["error"]["status"], 409, "{reply}");
    assert!(copy.exists());
    let reply = host
        .request(json!({"id": 3, "request_type": "DeleteModel", "model": "mini", "force": true}));
    assert_eq!(reply["response_type"], "ModelDeleted", "{reply}");
    assert!(!copy.exists());
    let loaded = host.request(json!({"id": 4, "request_type": "ListLoadedModels"}));
    assert_eq!(loaded["models"], json!([]), "{loaded}");
}

#[test]
fn the_catalog_and_recipes_name_the_defaults() {
    let models = TempDir::new("models");
    let mut host = native_host(models.path());
    let reply = host.request(json!({"id": 1, "request_type": "GetRegisteredModels"}));
    let catalog = reply["models"]
        .as_array()
        .unwrap_or_else(|| panic!("{reply}"));
    let ids: Vec<&str> = catalog.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "smollm2-135m-instruct-q4_1",
            "gemma-3-270m-q4_k_m",
            "all-minilm-l6-v2"
        ]
    );
    assert_eq!(catalog[0]["license"], "Apache-2.0");
    assert!(catalog[1]["license"].as_str().unwrap().contains("Gemma"));
    assert_eq!(catalog[2]["license"], "Apache-2.0");
    assert_eq!(
        catalog[0]["sha256"],
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    assert_eq!(catalog[0]["installed"], false);
    let reply = host.request(json!({"id": 2, "request_type": "GetRecipes", "task": "embedding"}));
    assert_eq!(reply["recipes"].as_array().unwrap().len(), 1, "{reply}");
    assert_eq!(reply["recipes"][0]["model"], "all-minilm-l6-v2");
    let reply = host.request(json!({"id": 3, "request_type": "GetRecipes"}));
    assert_eq!(reply["recipes"].as_array().unwrap().len(), 4, "{reply}");
    assert_eq!(reply["recipes"][0]["model"], "smollm2-135m-instruct-q4_1");
}

#[test]
#[ignore = "run inside unshare --net by pulls_run_in_a_network_namespace_of_their_own"]
fn tabagent_pull_downloads_with_a_progress_bar() {
    isolated();
    let body = fake_gguf(1 << 20);
    let server = FileServer::start(HashMap::from([("/cli.gguf", body.clone())]), None);
    let data = TempDir::new("data");
    let models = data.path().join("models");
    let output = command(data.path())
        .args([
            "pull",
            &server.url("/cli.gguf"),
            "--model",
            "from-cli",
            "--sha256",
            &sha256_hex(&body),
        ])
        .env("TABAGENT_MODELS_DIR", &models)
        .env("TABAGENT_ALLOW_LOOPBACK_PULLS", "true")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("100%"), "{stderr}");
    assert!(
        output.stdout.is_empty() || String::from_utf8_lossy(&output.stdout).contains("from-cli")
    );
    assert_eq!(std::fs::read(models.join("from-cli.gguf")).unwrap(), body);

    let output = command(data.path())
        .args([
            "pull",
            &server.url("/cli.gguf"),
            "--model",
            "bad",
            "--sha256",
            &"1".repeat(64),
        ])
        .env("TABAGENT_MODELS_DIR", &models)
        .env("TABAGENT_ALLOW_LOOPBACK_PULLS", "true")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("sha256 mismatch"));
    assert!(!models.join("bad.gguf").exists());
}

#[test]
fn pull_routes_answer_over_http() {
    let server = HttpServer::start();
    let reply = http(server.addr, "GET", "/api/registry", &[], None);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["response_type"], "RegisteredModels");
    let reply = server.post("/api/pull", &json!({"url": "gopher://x"}));
    assert_eq!(reply.status, 422);
}
