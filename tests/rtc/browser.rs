//! Headless Chromium (Debian's `chromium`) through tests/browser/run.sh: the
//! page, its HTTP server and tabagent run in a network namespace with
//! loopback only. Shared by the real-browser test and `make bench`.

#![allow(dead_code)] // the test and the bench use different parts

use std::path::Path;
use std::process::Command;

/// What one run of the page printed.
pub struct PageRun {
    /// run.sh exited 0 and the page's checks passed.
    pub passed: bool,
    pub stdout: String,
    pub stderr: String,
}

impl PageRun {
    /// A number from the page's result (run.js prints it as indented JSON,
    /// one `"key": value` per line).
    pub fn figure(&self, key: &str) -> Option<f64> {
        let prefix = format!("\"{key}\":");
        self.stdout.lines().find_map(|line| {
            let value = line.trim().strip_prefix(&prefix)?;
            value.trim().trim_end_matches(',').parse().ok()
        })
    }

    /// The browser's name and version, as the page's result gives it.
    pub fn browser(&self) -> Option<&str> {
        self.stdout.lines().find_map(|line| {
            let value = line.trim().strip_prefix("\"browser\":")?;
            Some(value.trim().trim_end_matches(',').trim_matches('"'))
        })
    }
}

/// Runs tests/browser/run.sh against `binary`; `Err` says why it cannot run
/// here (no browser, node or network namespaces).
pub fn run_page(binary: &Path) -> Result<PageRun, String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/run.sh");
    let missing = [
        ("/usr/bin/chromium", "Debian's chromium"),
        ("/usr/bin/node", "node"),
        ("/usr/bin/unshare", "unshare"),
    ]
    .into_iter()
    .find(|(path, _)| !Path::new(path).exists());
    if let Some((_, what)) = missing {
        return Err(format!("the browser page needs {what}"));
    }
    let output = Command::new(script)
        .arg(binary)
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if stderr.contains("unshare: ") && stderr.contains("Operation not permitted") {
        return Err(format!("no network namespace here (run as root): {stderr}"));
    }
    Ok(PageRun {
        passed: output.status.success() && stdout.contains("browser test passed"),
        stdout,
        stderr,
    })
}
