//! Operations against the real binary, continued: the request id on every
//! log line of a request, preloading a model, and SIGHUP reloading the
//! config file (and refusing a broken one).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{chat, data_with_tiny_model};
use crate::util::{HttpServer, TempDir, command};

/// The server's JSON log lines from `from` on.
#[cfg(feature = "llama")]
fn json_lines(server: &HttpServer, from: usize) -> Vec<Value> {
    server.log.lock().unwrap()[from..]
        .iter()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"))
        })
        .collect()
}

/// Waits (bounded) for a log line containing `text`; returns its index.
fn wait_for_line(server: &HttpServer, from: usize, text: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(i) = server.log.lock().unwrap()[from..]
            .iter()
            .position(|l| l.contains(text))
        {
            return from + i;
        }
        assert!(Instant::now() < deadline, "no log line with {text:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(feature = "llama")]
#[test]
fn every_log_line_of_a_request_carries_its_id() {
    let data = data_with_tiny_model("ops-logs");
    let server = HttpServer::start_with(data, |command| {
        command
            .env("TABAGENT_LOG", "info,tabagent=debug")
            .arg("--log-format")
            .arg("json");
    });
    // Start-up lines name no request: the request starts after them.
    let ready = wait_for_line(&server, 0, "ready in");
    let mark = ready + 1;
    let reply = chat(&server, 6);
    let usage = reply.ok_json()["usage"].clone();
    let id = reply.header("X-Request-Id").unwrap().to_string();
    assert_eq!(id.len(), 16, "{id}");
    let last = wait_for_line(&server, mark, "\"tabagent::access\"");
    let lines = json_lines(&server, mark);
    let lines = &lines[..=last - mark];
    // The request loads the model, templates and generates on the pool's
    // threads; every line it caused says which request it belongs to.
    assert!(lines.len() >= 3, "{lines:#?}");
    for line in lines {
        assert_eq!(line["request_id"], id.as_str(), "{line}");
        assert!(
            line["ts"].is_string() && line["level"].is_string(),
            "{line}"
        );
    }
    let targets: std::collections::BTreeSet<&str> = lines
        .iter()
        .map(|l| l["target"].as_str().unwrap())
        .collect();
    assert!(targets.len() >= 2, "lines from several places: {targets:?}");
    let final_line = lines.last().unwrap();
    assert_eq!(final_line["target"], "tabagent::access");
    assert_eq!(final_line["route"], "/v1/chat/completions");
    assert_eq!(final_line["status"], 200);
    assert_eq!(final_line["transport"], "http");
    assert!(
        final_line["duration_ms"].as_f64().unwrap() > 0.0,
        "{final_line}"
    );
    assert_eq!(final_line["prompt_tokens"], usage["prompt_tokens"]);
    assert_eq!(final_line["completion_tokens"], usage["completion_tokens"]);
    assert_eq!(
        final_line["job_id"].as_str().unwrap().len(),
        16,
        "{final_line}"
    );
}

#[cfg(feature = "llama")]
#[test]
fn a_preloaded_model_is_loaded_without_any_request() {
    let data = data_with_tiny_model("ops-preload");
    let server = HttpServer::start_with(data, |command| {
        command.env("TABAGENT_PRELOAD", "tiny");
    });
    wait_for_line(&server, 0, "preloaded tiny");
    let loaded = server.get("/api/loaded").ok_json();
    assert_eq!(loaded["models"][0]["model"], "tiny", "{loaded}");
    assert_eq!(server.get("/health").ok_json()["status"], "ok");
    // A preload that cannot load is logged, and the server serves on.
    let data = TempDir::new("ops-preload-missing");
    let server = HttpServer::start_with(data, |command| {
        command.env("TABAGENT_PRELOAD", "nope");
    });
    wait_for_line(&server, 0, "cannot preload nope");
    assert_eq!(server.get("/health").ok_json()["status"], "ok");
}

#[cfg(feature = "llama")]
#[test]
fn health_says_loading_while_a_preload_runs() {
    let test = "health_says_loading_while_a_preload_runs";
    let Some(real) = crate::inference::real_models(test) else {
        return;
    };
    let models = crate::inference::gemma_models(&real);
    // Gemma takes most of a second to load: the first /health comes sooner.
    let server =
        crate::inference::http_server(&models, &[("TABAGENT_PRELOAD", crate::inference::GEMMA)]);
    let first = server.get("/health");
    assert_eq!(
        first.status,
        503,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(first.json()["status"], "loading");
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.get("/health").status != 200 {
        assert!(Instant::now() < deadline, "the preload never ended");
        std::thread::sleep(Duration::from_millis(50));
    }
    let loaded = server.get("/api/loaded").ok_json();
    assert_eq!(loaded["models"][0]["model"], crate::inference::GEMMA);
}

fn hang_up(server: &HttpServer) {
    let status = Command::new("kill")
        .args(["-HUP", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sighup_applies_a_new_log_level_and_keeps_the_old_settings_on_a_broken_file() {
    let data = TempDir::new("ops-reload");
    let config = data.path().join("tabagent.toml");
    let write = |text: &str| {
        let key = format!("api_key = \"{}\"\n", crate::util::TEST_KEY);
        std::fs::write(&config, format!("{text}\n{key}")).unwrap();
    };
    // The HTTP transport's address line is at info: the spawner waits for it.
    write("log = \"warn,tabagent::transport::http=info\"\nrate_limit = 0");
    let mut command = command(data.path());
    command
        .env_remove("TABAGENT_LOG")
        .env_remove("TABAGENT_RATE_LIMIT")
        .env_remove("TABAGENT_API_KEY");
    command.arg("--config").arg(&config);
    let server = HttpServer::start_command(command, data);
    server.get("/api/params").assert_status(200);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !server.logged("tabagent::access"),
        "warn hides access lines"
    );

    write("log = \"info\"\nrate_limit = 0\nwebrtc_max_sessions = 5");
    let mark = server.log.lock().unwrap().len();
    hang_up(&server);
    let applied = wait_for_line(&server, mark, "reloaded the settings: applied log");
    wait_for_line(
        &server,
        mark,
        "webrtc_max_sessions changed, which takes a restart",
    );
    server.get("/api/params").assert_status(200);
    wait_for_line(&server, applied, "/api/params 200");

    // A broken file is refused whole: the level stays info.
    write("log = \"warn\"\nrate_limit = \"many\"");
    let mark = server.log.lock().unwrap().len();
    hang_up(&server);
    wait_for_line(&server, mark, "the settings were not reloaded");
    let mark = server.log.lock().unwrap().len();
    server.get("/api/params").assert_status(200);
    wait_for_line(&server, mark, "/api/params 200");
    // So is a level env_logger would not read.
    write("log = \"loudest=yes\"");
    let mark = server.log.lock().unwrap().len();
    hang_up(&server);
    wait_for_line(&server, mark, "is not a level");
    let mark = server.log.lock().unwrap().len();
    server.get("/api/params").assert_status(200);
    wait_for_line(&server, mark, "/api/params 200");
    // The rate limit applies live.
    write("log = \"info\"\nrate_limit = 1");
    let mark = server.log.lock().unwrap().len();
    hang_up(&server);
    wait_for_line(&server, mark, "applied rate_limit");
    let statuses: Vec<u16> = (0..3).map(|_| server.get("/api/params").status).collect();
    assert_eq!(statuses, vec![200, 200, 429]);
    // And a new key replaces the old one at once.
    std::fs::write(&config, "log = \"info\"\napi_key = \"rotated\"\n").unwrap();
    let mark = server.log.lock().unwrap().len();
    hang_up(&server);
    wait_for_line(&server, mark, "applied api_key, rate_limit");
    assert_eq!(server.get("/api/params").status, 401);
    // (The bucket the 429 above emptied refills at the new rate, 50 a second.)
    std::thread::sleep(Duration::from_millis(100));
    let rotated = [("Authorization", "Bearer rotated")];
    crate::util::http(server.addr, "GET", "/api/params", &rotated, None).assert_status(200);
}
