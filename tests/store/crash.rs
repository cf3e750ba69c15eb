//! The crash test: acknowledged messages survive SIGKILL at random moments.

use std::collections::HashMap;
use std::io::Write;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use serde_json::json;

use super::{ORIGIN, db_path, integrity, read_frames};
use crate::util::{TempDir, command, frame};

/// xorshift64*: enough randomness for kill times, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn from_time() -> Rng {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let seed = std::env::var("TABAGENT_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(now)
            | 1;
        eprintln!("crash test seed: {seed} (set TABAGENT_CRASH_SEED to repeat)");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// The crash test: the real binary in native mode saves messages as fast as
/// it is fed; it is SIGKILLed at a random moment, 24 times on one database.
/// After each kill every acknowledged message must be there, byte for byte,
/// and the file must pass `PRAGMA integrity_check`.
#[test]
fn acknowledged_messages_survive_sigkill() {
    let dir = TempDir::new("crash");
    let mut rng = Rng::from_time();
    let mut acknowledged: HashMap<i64, String> = HashMap::new();
    let rounds = 24;
    let mut kills_mid_write = 0;
    for round in 0..rounds {
        let mut child = command(dir.path())
            .arg(ORIGIN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let frames = read_frames(child.stdout.take().unwrap());
        let in_flight = Arc::new(AtomicUsize::new(0));
        let acks: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
        let collector = {
            let (in_flight, acks) = (Arc::clone(&in_flight), Arc::clone(&acks));
            std::thread::spawn(move || {
                for reply in frames {
                    assert_eq!(reply["response_type"], "MessageSaved", "{reply}");
                    let message = &reply["message"];
                    acks.lock().unwrap().push((
                        message["id"].as_i64().unwrap(),
                        message["content"].as_str().unwrap().to_string(),
                    ));
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                }
            })
        };
        let killed = Arc::new(AtomicBool::new(false));
        let writer = {
            let (in_flight, killed) = (Arc::clone(&in_flight), Arc::clone(&killed));
            std::thread::spawn(move || {
                for n in 0.. {
                    while in_flight.load(Ordering::Acquire) >= 32 {
                        if killed.load(Ordering::Acquire) {
                            return;
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    let message = json!({"id": n, "request_type": "SaveMessage",
                        "session_id": format!("s{}", n % 3), "role": "user",
                        "content": format!("round {round} message {n} {}", "·".repeat(n % 50))});
                    in_flight.fetch_add(1, Ordering::AcqRel);
                    if stdin
                        .write_all(&frame(message.to_string().as_bytes()))
                        .is_err()
                    {
                        return;
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(20 + rng.below(300)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        killed.store(true, Ordering::Release);
        writer.join().unwrap();
        collector.join().unwrap();
        let acks = std::mem::take(&mut *acks.lock().unwrap());
        if !acks.is_empty() {
            kills_mid_write += 1;
        }
        acknowledged.extend(acks);

        assert_eq!(integrity(&db_path(dir.path())), "ok", "round {round}");
        if acknowledged.is_empty() {
            // Killed before the store opened (it opens at first use): its
            // tables may not exist yet, and there is nothing to find.
            continue;
        }
        let db = Connection::open(db_path(dir.path())).unwrap();
        let mut read = db
            .prepare("SELECT content FROM messages WHERE id = ?1")
            .unwrap();
        for (id, content) in &acknowledged {
            let stored: String = read.query_row([id], |r| r.get(0)).unwrap_or_else(|e| {
                panic!("round {round}: acknowledged message {id} is missing: {e}")
            });
            assert_eq!(&stored, content, "round {round}");
        }
    }
    assert!(
        kills_mid_write >= 20,
        "only {kills_mid_write} of {rounds} kills came while messages were being saved"
    );
    assert!(
        acknowledged.len() > 1000,
        "only {} messages were acknowledged",
        acknowledged.len()
    );
    eprintln!(
        "crash test: {rounds} kills, {} acknowledged messages, all present",
        acknowledged.len()
    );
}
