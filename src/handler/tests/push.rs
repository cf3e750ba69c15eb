//! Server push from the handler: load progress, loaded and unloaded models,
//! `loading` health and low memory reach subscribers.

use super::*;

#[test]
fn load_progress_loaded_and_unloaded_reach_subscribers() {
    let fixture = Fixture::new(Setup {
        keep_alive: Duration::from_secs(600),
        ..Setup::default()
    });
    let subscriber = fixture.subscribe();
    fixture.call(json!({"id": 1, "request_type": "LoadModel", "model": "alpha"}));
    let progress: Vec<f64> = lock(&subscriber.replies)
        .iter()
        .filter(|r| r["event"] == "ModelLoadProgress")
        .map(|r| r["progress"].as_f64().unwrap())
        .collect();
    assert_eq!(progress, [0.0, 0.5, 1.0]);

    let unloaded = fixture.call(json!({"id": 2, "request_type": "UnloadModel", "model": "alpha"}));
    assert_eq!(unloaded["response_type"], "ModelUnloaded", "{unloaded}");
    fixture.call(chat("c", "beta", false));
    // Polling is not use; unused past the keep-alive, beta is unloaded.
    let models = fixture.handler.models();
    let soon = Instant::now() + Duration::from_secs(300);
    fixture.handler.serve(
        CONNECTION,
        RequestId::text("h"),
        Request::Health(Empty::default()),
        || unreachable_sink(),
        soon,
    );
    assert!(
        models.unload_idle(soon).is_empty(),
        "not idle for long enough"
    );
    let later = Instant::now() + Duration::from_secs(601);
    assert_eq!(models.unload_idle(later), ["beta"]);
    let told = events(&subscriber);
    let told: Vec<(&str, &str)> = told.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(
        told,
        [
            ("ModelLoaded", "alpha"),
            ("ModelUnloaded", "alpha requested"),
            ("ModelLoaded", "beta"),
            ("ModelUnloaded", "beta idle"),
        ]
    );
}

#[test]
fn a_model_kept_loaded_outlives_the_keep_alive_until_unpinned() {
    let fixture = Fixture::new(Setup {
        keep_alive: Duration::from_secs(60),
        ..Setup::default()
    });
    let loaded = fixture
        .call(json!({"id": 1, "request_type": "LoadModel", "model": "alpha", "keep_loaded": true}));
    assert_eq!(loaded["keep_loaded"], true, "{loaded}");
    fixture.call(json!({"id": 2, "request_type": "LoadModel", "model": "beta"}));
    let models = fixture.handler.models();
    let later = Instant::now() + Duration::from_secs(3600);
    assert_eq!(models.unload_idle(later), ["beta"], "alpha is kept");
    let listed = fixture.call(json!({"id": 3, "request_type": "ListLoadedModels"}));
    assert_eq!(listed["models"][0]["keep_loaded"], true, "{listed}");
    // A load without the field leaves it; with false, the keep-alive applies again.
    fixture.call(json!({"id": 4, "request_type": "LoadModel", "model": "alpha"}));
    assert!(models.unload_idle(later).is_empty());
    let unpinned = fixture.call(
        json!({"id": 5, "request_type": "LoadModel", "model": "alpha", "keep_loaded": false}),
    );
    assert_eq!(unpinned["keep_loaded"], false);
    let later = Instant::now() + Duration::from_secs(3600);
    assert_eq!(models.unload_idle(later), ["alpha"]);
}

#[test]
fn health_says_loading_while_a_request_waits_for_its_model() {
    let mut fixture = Fixture::new(Setup {
        hold_loads: true,
        ..Setup::default()
    });
    let waiting = fixture.send(chat("w", "alpha", false));
    let deadline = Instant::now() + WAIT;
    while fixture.loads.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the load never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    let health = fixture.call(json!({"id": "h", "request_type": "Health"}));
    assert_eq!(health["status"], "loading", "{health}");
    fixture.release.take().unwrap().send(()).unwrap();
    assert_eq!(waiting.finished().last().unwrap()["finish_reason"], "stop");
    let health = fixture.call(json!({"id": "h", "request_type": "Health"}));
    assert_eq!(health["status"], "ok", "{health}");
}

#[test]
fn low_memory_is_told_when_it_falls_and_to_whoever_arrives_during_it() {
    // A threshold no machine reaches: memory is always "low".
    let fixture = Fixture::new(Setup {
        low_memory_bytes: u64::MAX,
        ..Setup::default()
    });
    let early = fixture.subscribe();
    assert!(fixture.handler.models().check_memory());
    assert!(fixture.handler.models().check_memory());
    let told = early.wait(|r| r.len() >= 2);
    assert_eq!(told[1]["event"], "LowMemory", "{told:?}");
    assert!(told[1]["total_bytes"].as_u64().unwrap() > 0);
    assert_eq!(told.len(), 2, "told once, not at every check: {told:?}");

    let late =
        fixture.send(json!({"id": "late", "request_type": "Subscribe", "events": ["LowMemory"]}));
    let told = late.wait(|r| r.len() >= 2);
    assert_eq!(
        (told[0]["response_type"].clone(), told[1]["event"].clone()),
        (json!("Subscribed"), json!("LowMemory"))
    );
}
