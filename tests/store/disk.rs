//! The store's data dir gone wrong, against the real binary: a dir that
//! cannot be created, a read-only one, a full disk and a database from a
//! newer tabagent are each a clear problem, never a crash or a lost write.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rusqlite::Connection;
use serde_json::json;

use super::{db_path, integrity};
use crate::util::{HttpReply, HttpServer, TempDir, skip};

/// Saves a message "x" to session "s".
fn save(server: &HttpServer) -> HttpReply {
    server.post(
        "/api/sessions/s/messages",
        &json!({"role": "user", "content": "x"}),
    )
}

/// Saves a message, which must be refused with 503; the problem's detail.
fn refused_save(server: &HttpServer) -> String {
    let reply = save(server);
    reply.assert_status(503);
    reply.json()["detail"].as_str().unwrap().to_string()
}

#[test]
fn a_data_dir_that_cannot_be_created_is_a_clear_503_not_a_crash() {
    let dir = TempDir::new("blocked");
    let data = dir.path().join("data");
    std::fs::write(&data, b"a file, not a dir").unwrap();
    let server = HttpServer::start_with(TempDir::new("blocked-home"), |c| {
        c.env("TABAGENT_DATA_DIR", &data);
    });
    assert_eq!(server.get("/health").status, 200);
    let detail = refused_save(&server);
    assert!(
        detail.contains("cannot create the data dir") && detail.contains("data"),
        "{detail}"
    );
    assert_eq!(server.get("/api/collections").status, 503);
    // Fixed while running: no restart needed.
    std::fs::remove_file(&data).unwrap();
    save(&server).assert_status(200);
}

/// Makes a directory read-only for the test: `chattr +i` when running as
/// root (permissions do not stop root), `chmod 555` otherwise.
struct ReadOnly(PathBuf, bool);

impl ReadOnly {
    fn set(dir: &Path) -> Option<ReadOnly> {
        let root = Command::new("id").arg("-u").output().ok()?.stdout == b"0\n";
        let ok = if root {
            Command::new("chattr")
                .arg("+i")
                .arg(dir)
                .status()
                .ok()?
                .success()
        } else {
            Command::new("chmod")
                .arg("555")
                .arg(dir)
                .status()
                .ok()?
                .success()
        };
        let guard = ReadOnly(dir.to_path_buf(), root);
        // Only trust it if a write really fails now.
        let probe = dir.join(".probe");
        if !ok || std::fs::write(&probe, b"x").is_ok() {
            let _ = std::fs::remove_file(probe);
            return None;
        }
        Some(guard)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = if self.1 {
            Command::new("chattr").arg("-i").arg(&self.0).status()
        } else {
            Command::new("chmod").arg("755").arg(&self.0).status()
        };
    }
}

#[test]
fn a_read_only_data_dir_is_a_clear_503_until_it_is_writable() {
    let home = TempDir::new("readonly");
    let data = home.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let Some(read_only) = ReadOnly::set(&data) else {
        skip(
            "a_read_only_data_dir_is_a_clear_503_until_it_is_writable",
            "a directory made read-only (chattr +i as root, chmod otherwise)",
        );
        return;
    };
    let server = HttpServer::start_with(TempDir::new("readonly-home"), |c| {
        c.env("TABAGENT_DATA_DIR", &data);
    });
    let detail = refused_save(&server);
    assert!(
        detail.contains("tabagent.db") && detail.contains("write"),
        "{detail}"
    );
    assert_eq!(server.get("/health").status, 200);
    drop(read_only);
    save(&server).assert_status(200);
}

/// A small tmpfs mounted on a dir (root only), unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .ok()?
            .success();
        ok.then(|| SmallDisk(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_a_clear_507_and_acknowledged_messages_stay() {
    let home = TempDir::new("fulldisk");
    let data = home.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let Some(disk) = SmallDisk::mount(&data, "1m") else {
        skip(
            "a_full_disk_is_a_clear_507_and_acknowledged_messages_stay",
            "a small tmpfs mounted (root)",
        );
        return;
    };
    let server = HttpServer::start_with(TempDir::new("fulldisk-home"), |c| {
        c.env("TABAGENT_DATA_DIR", &data);
    });
    let content = "z".repeat(48 << 10);
    let mut saved = Vec::new();
    let error = loop {
        let reply = server.post(
            "/api/sessions/s/messages",
            &json!({"role": "user", "content": content}),
        );
        if reply.status != 200 {
            break reply;
        }
        saved.push(reply.json()["message"]["id"].as_i64().unwrap());
        assert!(saved.len() < 100, "the disk never filled");
    };
    error.assert_status(507);
    assert!(error.json()["detail"].as_str().unwrap().contains("full"));
    assert_eq!(server.get("/health").status, 200, "still serving");
    let page = server.get("/api/sessions/s/messages?limit=1000").json();
    assert_eq!(page["messages"].as_array().unwrap().len(), saved.len());
    drop(server);
    assert_eq!(integrity(&db_path(&data)), "ok");
    drop(disk);
}

#[test]
fn a_database_from_a_newer_tabagent_is_refused_and_untouched() {
    let data = TempDir::new("newer");
    let path = db_path(data.path());
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE later (x); PRAGMA user_version = 42;")
        .unwrap();
    let before = std::fs::read(&path).unwrap();
    let dir = data.path().to_path_buf();
    let server = HttpServer::start_with(data, |_| {});
    let detail = refused_save(&server);
    assert!(
        detail.contains("42") && detail.contains("newer"),
        "{detail}"
    );
    assert_eq!(server.get("/health").status, 200);
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!dir.join("tabagent.db-wal").exists());
}
