//! Parallel slots on the real binary: several chats generate at once in one
//! loaded model, each with its own token count, finish reason and grammar;
//! requests beyond the slots wait and complete; stopping one by job id frees
//! its slot while the others go on; slot states in `/api/loaded` and
//! `/api/stats`; a conversation keeps its cached prefix while another runs;
//! embeddings answer while four generations run. Fast cases on the tiny
//! random GGUF, real ones on Gemma 3 270M (`$TABAGENT_TEST_MODELS`).

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::inference::{GEMMA, gemma_models, http_server, real_models, tiny_models};
use crate::util::{EventStream, HttpServer, TempDir, http, skip};

/// The Gemma models dir, or None outside `make test` (an error under CI=true).
fn gemma(test: &str) -> Option<TempDir> {
    real_models(test).map(|real| gemma_models(&real))
}

fn chat(model: &str, content: &str, max_tokens: u32) -> Value {
    json!({"model": model, "stream": true, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": content}]})
}

/// A chat that runs to exactly `max_tokens` (end-of-sequence ignored).
fn counted(model: &str, content: &str, max_tokens: u32) -> Value {
    let mut body = chat(model, content, max_tokens);
    body["ignore_eos"] = json!(true);
    body["temperature"] = json!(0);
    body
}

/// The deltas joined, and the final reply.
fn joined(events: &[Value]) -> (String, Value) {
    let (last, chunks) = events.split_last().expect("a stream has a final reply");
    let text = chunks
        .iter()
        .filter(|e| e["response_type"] == "ChatChunk")
        .map(|e| e["delta"].as_str().unwrap_or(""))
        .collect();
    (text, last.clone())
}

/// The final reply of a stream, checked against its deltas.
fn finished(events: &[Value]) -> Value {
    let (text, last) = joined(events);
    assert_eq!(last["response_type"], "ChatComplete", "{last}");
    assert_eq!(last["text"], text.as_str(), "the deltas make the text");
    last
}

/// The final reply of a stopped stream: a stop drops the chunks still
/// queued, so the deltas are the start of the text, and it says cancelled.
fn stopped(events: &[Value]) -> Value {
    let (text, last) = joined(events);
    assert_eq!(last["response_type"], "ChatComplete", "{last}");
    let full = last["text"].as_str().expect("a final text");
    assert!(
        full.starts_with(&text),
        "the deltas {text:?} start the text {full:?}"
    );
    assert_eq!(last["finish_reason"], "cancelled", "{last}");
    last
}

/// Reads every stream to its end, each on its own thread.
fn read_all(streams: Vec<EventStream>) -> Vec<Vec<Value>> {
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut s| thread::spawn(move || s.until_done()))
        .collect();
    readers.into_iter().map(|r| r.join().unwrap()).collect()
}

/// One llama.cpp thread per loaded model: `make test` runs two tests at once
/// on 2 cores, and llama.cpp's threads spin at their barriers, so two
/// servers with two threads each slow down tenfold or more.
pub const LLAMA_THREADS: u32 = 1;

/// The slots `/api/loaded` shows for `model`.
pub fn loaded_slots(server: &HttpServer, model: &str) -> Vec<Value> {
    let loaded = server.get("/api/loaded").ok_json();
    let entry = loaded["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == model)
        .unwrap_or_else(|| panic!("{model} is not loaded: {loaded}"))
        .clone();
    entry["slots"].as_array().cloned().unwrap_or_default()
}

/// Job ids of the slots that are not idle.
pub fn busy_jobs(slots: &[Value]) -> Vec<String> {
    slots
        .iter()
        .filter(|s| s["state"] != "idle")
        .map(|s| {
            s["job_id"]
                .as_str()
                .expect("a busy slot names its job")
                .to_string()
        })
        .collect()
}

fn stop(server: &HttpServer, job: &str) -> Value {
    http(
        server.addr,
        "POST",
        &format!("/api/generations/{job}/stop"),
        &[],
        None,
    )
    .ok_json()
}

#[test]
fn tiny_streams_at_once_each_get_their_own_count_reason_and_grammar() {
    let models = tiny_models(&["tiny"]);
    let server = http_server(&models, &[("TABAGENT_PARALLEL", "4")]);
    // Eight at once on four slots: four wait and then run.
    let counts = [7u32, 19, 33, 48];
    let literals = [
        "alpha one",
        "bravo two two",
        "charlie three three three",
        "delta four",
    ];
    let mut streams = Vec::new();
    for (i, n) in counts.iter().enumerate() {
        let mut body = counted("tiny", &format!("count {i}"), *n);
        body["seed"] = json!(i);
        streams.push(EventStream::send(server.addr, "/api/chat", &body));
    }
    for (i, literal) in literals.iter().enumerate() {
        let mut body = chat("tiny", &format!("say {i}"), 64);
        body["grammar"] = json!(format!("root ::= \"{literal}\""));
        streams.push(EventStream::send(server.addr, "/api/chat", &body));
    }
    let results = read_all(streams);
    for (events, n) in results.iter().zip(counts) {
        let last = finished(events);
        assert_eq!(last["usage"]["completion_tokens"], n, "{last}");
        assert_eq!(last["finish_reason"], "length", "{last}");
    }
    for (events, literal) in results[4..].iter().zip(literals) {
        let last = finished(events);
        assert_eq!(last["text"], literal, "{last}");
        assert_eq!(last["finish_reason"], "stop", "{last}");
    }
    let slots = loaded_slots(&server, "tiny");
    assert_eq!(slots.len(), 4, "{slots:?}");
    assert!(busy_jobs(&slots).is_empty(), "all idle again: {slots:?}");
}

#[test]
fn tiny_load_model_sets_the_slots_and_model_info_reports_them() {
    let models = tiny_models(&["tiny"]);
    let server = http_server(&models, &[]);
    let loaded = server
        .post("/api/models/tiny/load", &json!({"parallel": 3}))
        .ok_json();
    assert_eq!(loaded["parallel"], 3, "{loaded}");
    assert_eq!(loaded["slots"].as_array().unwrap().len(), 3, "{loaded}");
    assert_eq!(loaded["slots"][0]["state"], "idle");
    let info = server.get("/api/models/tiny").ok_json();
    assert_eq!(info["parallel"], 3, "{info}");
    let refused = server.post("/api/models/tiny/load", &json!({"parallel": 65}));
    assert_eq!(refused.status, 422);
    assert!(
        String::from_utf8_lossy(&refused.body).contains("parallel 65"),
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    // Without a setting: the default from cores and memory, at least one.
    let default = server.post("/api/models/tiny/load", &json!({})).ok_json();
    assert!(default["parallel"].as_u64().unwrap() >= 1, "{default}");
    let stats = server.get("/api/stats").ok_json();
    assert_eq!(stats["slots"][0]["model"], "tiny", "{stats}");
}

/// Two conversations, each asked a second time after the other ran: every
/// second turn reuses its first turn's cache, whether it stayed in its
/// slot or was parked in RAM while the other ran (one slot), and answers as
/// a server that never saw the first turns does.
fn two_conversations_each_reuse_their_cache(parallel: &str) {
    let models = tiny_models(&["tiny"]);
    let server = http_server(&models, &[("TABAGENT_PARALLEL", parallel)]);
    let fresh = http_server(&models, &[("TABAGENT_PARALLEL", parallel)]);
    let ask_at = |server: &HttpServer, messages: &Value| {
        server
            .post(
                "/api/chat",
                &json!({"model": "tiny", "messages": messages, "max_tokens": 6,
                    "seed": 1, "stream": false}),
            )
            .ok_json()
    };
    let ask = |messages: &Value| ask_at(&server, messages);
    let openings = [
        "hello there, this is the first conversation",
        "something else entirely: a second one",
    ];
    let mut turns = Vec::new();
    for opening in openings {
        let messages = json!([{"role": "user", "content": opening}]);
        let reply = ask(&messages);
        assert_eq!(reply["response_type"], "ChatComplete", "{reply}");
        turns.push((messages, reply));
    }
    for (messages, first) in turns {
        let prompt = first["usage"]["prompt_tokens"].as_u64().unwrap();
        let mut second_turn = messages.as_array().unwrap().clone();
        second_turn.push(json!({"role": "assistant", "content": first["text"]}));
        second_turn.push(json!({"role": "user", "content": "and then?"}));
        let second_turn = Value::Array(second_turn);
        let follow = ask(&second_turn);
        let cached = follow["usage"]["cached_tokens"].as_u64().unwrap();
        assert!(
            cached >= prompt - 1,
            "{parallel} slot(s): reused {cached} of the first turn's {prompt} prompt tokens"
        );
        assert_eq!(follow["text"], ask_at(&fresh, &second_turn)["text"]);
    }
    let slots = loaded_slots(&server, "tiny");
    assert_eq!(slots.len().to_string(), parallel, "{slots:?}");
}

#[test]
fn tiny_a_second_turn_reuses_its_cache_after_another_conversation() {
    two_conversations_each_reuse_their_cache("2");
}

#[test]
fn tiny_one_slot_switches_conversations_without_reading_them_again() {
    two_conversations_each_reuse_their_cache("1");
}

#[test]
fn gemma_four_generate_at_once_a_fifth_waits_and_a_stop_frees_a_slot() {
    let Some(models) = gemma("gemma_four_generate_at_once_a_fifth_waits_and_a_stop_frees_a_slot")
    else {
        return;
    };
    let server = http_server(&models, &[("TABAGENT_PARALLEL", "4")]);
    server
        .post(
            &format!("/api/models/{GEMMA}/load"),
            &json!({"threads": LLAMA_THREADS}),
        )
        .assert_status(200);
    // The fourth is stopped early; the others run to their own counts.
    let counts = [96u32, 112, 128, 400];
    let mut streams: Vec<EventStream> = counts
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let body = counted(GEMMA, &format!("Story number {i}: once upon a time"), *n);
            EventStream::send(server.addr, "/api/chat", &body)
        })
        .collect();
    let jobs: Vec<String> = streams.iter_mut().map(|s| s.head()).collect();

    // All four hold a slot at once.
    let slots = loaded_slots(&server, GEMMA);
    assert_eq!(slots.len(), 4, "{slots:?}");
    let mut busy = busy_jobs(&slots);
    busy.sort();
    let mut mine = jobs.clone();
    mine.sort();
    assert_eq!(busy, mine, "each stream has a slot: {slots:?}");
    let stats = server.get("/api/stats").ok_json();
    let in_stats = stats["slots"][0]["slots"].as_array().unwrap();
    assert_eq!(busy_jobs(in_stats).len(), 4, "{stats}");

    // A fifth waits for a slot...
    let fifth_body = counted(GEMMA, "A short one", 8);
    let addr = server.addr;
    let fifth = thread::spawn(move || {
        let mut stream = EventStream::send(addr, "/api/chat", &fifth_body);
        let job = stream.head();
        (Instant::now(), job, stream.until_done())
    });
    thread::sleep(Duration::from_millis(500));
    let stats = server.get("/api/stats").ok_json();
    assert!(stats["jobs_running"].as_u64().unwrap() >= 5, "{stats}");
    let slots = loaded_slots(&server, GEMMA);
    for job in busy_jobs(&slots) {
        assert!(
            jobs.contains(&job),
            "only the first four have slots: {slots:?}"
        );
    }

    // ...until one of the four is stopped by its job id.
    let stopped_at = Instant::now();
    assert_eq!(stop(&server, &jobs[3])["state"], "stopping");
    let mut streams = streams.into_iter();
    let runners: Vec<EventStream> = streams.by_ref().take(3).collect();
    let mut halted = streams.next().unwrap();
    stopped(&halted.until_done());
    let (started_at, fifth_job, events) = fifth.join().unwrap();
    assert!(
        started_at > stopped_at,
        "the fifth started only once a slot was free"
    );
    assert!(!jobs.contains(&fifth_job));
    let last = finished(&events);
    assert_eq!(last["usage"]["completion_tokens"], 8, "{last}");
    assert_eq!(last["finish_reason"], "length", "{last}");

    // The other three went on to their own counts.
    let results = read_all(runners);
    for (events, n) in results.iter().zip(counts) {
        let last = finished(events);
        assert_eq!(last["usage"]["completion_tokens"], n, "{last}");
        assert_eq!(last["finish_reason"], "length", "{last}");
    }
}

#[test]
fn gemma_grammars_stay_in_their_own_streams_and_greedy_tokens_mostly_match() {
    let Some(models) =
        gemma("gemma_grammars_stay_in_their_own_streams_and_greedy_tokens_mostly_match")
    else {
        return;
    };
    let server = http_server(&models, &[("TABAGENT_PARALLEL", "4")]);
    server
        .post(
            &format!("/api/models/{GEMMA}/load"),
            &json!({"threads": LLAMA_THREADS}),
        )
        .assert_status(200);
    let literals = [
        "the first stream says one, one, one and nothing else at all",
        "a second stream, which counts two, two, two, two and then stops",
        "stream three: three blind mice, see how they run, see how they run",
        "and the fourth one writes four words four times: four four four four",
    ];
    let streams = literals
        .iter()
        .enumerate()
        .map(|(i, literal)| {
            let mut body = chat(GEMMA, &format!("Write line {i}."), 100);
            body["grammar"] = json!(format!("root ::= \"{literal}\""));
            EventStream::send(server.addr, "/api/chat", &body)
        })
        .collect();
    for (events, literal) in read_all(streams).iter().zip(literals) {
        let last = finished(events);
        assert_eq!(last["text"], literal, "{last}");
        assert_eq!(last["finish_reason"], "stop", "{last}");
    }

    // Greedy tokens of four batched requests against each run alone:
    // batched decoding is not bit-identical (llama.cpp #6583), so this reports.
    let prompts: Vec<String> = (0..4)
        .map(|i| format!("Tell me about the number {i}."))
        .collect();
    let tokens_of = |reply: &Value| -> Vec<String> {
        reply["logprobs"]
            .as_array()
            .unwrap_or_else(|| panic!("logprobs: {reply}"))
            .iter()
            .map(|t| t["token"].as_str().unwrap().to_string())
            .collect()
    };
    let body = |prompt: &str| {
        let mut body = counted(GEMMA, prompt, 32);
        body["stream"] = json!(false);
        body["logprobs"] = json!(true);
        body
    };
    let batched: Vec<Vec<String>> = prompts
        .iter()
        .map(|p| {
            let (addr, body) = (server.addr, body(p));
            thread::spawn(move || {
                http(
                    addr,
                    "POST",
                    "/api/chat",
                    &[],
                    Some(body.to_string().as_bytes()),
                )
                .ok_json()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| tokens_of(&t.join().unwrap()))
        .collect();
    for (prompt, together) in prompts.iter().zip(&batched) {
        let alone = tokens_of(&server.post("/api/chat", &body(prompt)).ok_json());
        assert_eq!((alone.len(), together.len()), (32, 32));
        let same = alone
            .iter()
            .zip(together)
            .take_while(|(a, b)| a == b)
            .count();
        eprintln!(
            "greedy, batched against alone: the first {same} of 32 tokens match ({prompt:?})"
        );
    }
}

#[cfg(feature = "onnx")]
#[test]
fn gemma_embeddings_answer_while_four_generate() {
    let test = "gemma_embeddings_answer_while_four_generate";
    let Some(models) = gemma(test) else {
        return;
    };
    let (Some(dir), Some(_)) = (
        std::env::var_os("TABAGENT_TEST_MODELS"),
        std::env::var_os("ORT_DYLIB_PATH"),
    ) else {
        skip(test, "set ORT_DYLIB_PATH (make test does)");
        return;
    };
    let minilm = std::path::PathBuf::from(dir).join("all-minilm-l6-v2");
    std::os::unix::fs::symlink(&minilm, models.path().join("all-minilm-l6-v2")).unwrap();
    let server = http_server(&models, &[("TABAGENT_PARALLEL", "4")]);
    server
        .post(
            &format!("/api/models/{GEMMA}/load"),
            &json!({"threads": LLAMA_THREADS}),
        )
        .assert_status(200);
    let mut streams: Vec<EventStream> = (0..4)
        .map(|i| {
            let body = counted(GEMMA, &format!("Story {i}: it was a dark night"), 400);
            EventStream::send(server.addr, "/api/chat", &body)
        })
        .collect();
    let jobs: Vec<String> = streams.iter_mut().map(|s| s.head()).collect();
    let started = Instant::now();
    let embedded = server
        .post(
            "/api/embeddings",
            &json!({"model": "all-minilm-l6-v2", "input": ["a page about cats", "dogs"]}),
        )
        .ok_json();
    let took = started.elapsed();
    assert_eq!(
        embedded["embeddings"].as_array().unwrap().len(),
        2,
        "{embedded}"
    );
    // The four were still generating when the embeddings came back.
    let slots = loaded_slots(&server, GEMMA);
    assert_eq!(
        busy_jobs(&slots).len(),
        4,
        "answered while four generate: {slots:?}"
    );
    eprintln!("embeddings (with the MiniLM load) answered in {took:?} while four generate");
    for job in &jobs {
        stop(&server, job);
    }
    for events in read_all(streams) {
        stopped(&events);
    }
}
