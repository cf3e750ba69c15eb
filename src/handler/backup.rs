//! Backup, ExportSession and Restore.
//!
//! Backup and ExportSession make a file (the whole history, the collections
//! with their documents and vectors, and the generation defaults as one JSON
//! document; one chat as Markdown or JSON) and send it as `FilePart` chunks
//! of at most 512 KiB
//! (683 KiB in base64: a native messaging reply stays under 1 MiB), then a
//! `FileComplete` with the size and sha256 of the whole. Restore takes a
//! finished `restore` upload, checks the file whole (format, version, every
//! session, role, collection name and the settings) and only then writes it
//! in one transaction; the settings are saved after that commit, and were
//! checked before it, so a bad file changes nothing.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{Handler, Outcome};
use crate::api::{
    ExportSessionRequest, FileComplete, FilePart, GenerationParams, Response, Restored, UploadRef,
};
use crate::error::ApiError;
use crate::jobs::{Job, JobContext, Lane};
use crate::store::{BackupFile, SessionDump};
use crate::uploads::{Purpose, hex};

/// Bytes of file in one `FilePart`.
pub const PART_BYTES: usize = 512 << 10;

impl Handler {
    pub(super) fn backup(&self) -> Outcome {
        let (slot, params) = (Arc::clone(&self.store), Arc::clone(&self.params));
        Outcome::Job(Job::new(Lane::Io, move |ctx| {
            let store = slot.get()?;
            let settings = serde_json::to_value(params.get()).ok();
            let now = now_ms();
            let file = store.backup(settings, now)?;
            let counts = (
                file.sessions.len() as u64,
                file.message_count(),
                file.collections.len() as u64,
            );
            // Our own types serialize without fail (string keys only).
            let bytes = serde_json::to_vec_pretty(&file).expect("a backup serializes");
            let name = format!(
                "tabagent-backup-{}.json",
                date(now).replace([':', ' '], "-")
            );
            send_file(ctx, &bytes, name, "application/json", counts)
        }))
    }

    pub(super) fn export_session(&self, request: ExportSessionRequest) -> Outcome {
        let markdown = match request.format.as_deref() {
            None | Some("markdown") => true,
            Some("json") => false,
            Some(other) => {
                return Outcome::Reply(Response::error(ApiError::invalid(format!(
                    "format {other:?} is not `markdown` or `json`"
                ))));
            }
        };
        let slot = Arc::clone(&self.store);
        Outcome::Job(Job::new(Lane::Io, move |ctx| {
            let session = slot.get()?.session_dump(&request.session_id)?;
            let counts = (1, session.messages.len() as u64, 0);
            let stem: String = session
                .session_id
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .take(64)
                .collect();
            if markdown {
                let text = to_markdown(&session);
                send_file(
                    ctx,
                    text.as_bytes(),
                    format!("{stem}.md"),
                    "text/markdown",
                    counts,
                )
            } else {
                let bytes = serde_json::to_vec_pretty(&session).expect("a session serializes");
                send_file(
                    ctx,
                    &bytes,
                    format!("{stem}.json"),
                    "application/json",
                    counts,
                )
            }
        }))
    }

    pub(super) fn restore(&self, request: UploadRef) -> Outcome {
        match self.uploads.check_complete(&request.upload_id) {
            Ok(announced) if announced.purpose == Purpose::Restore => {}
            Ok(_) => {
                return Outcome::Reply(Response::error(ApiError::invalid(
                    "this upload is a document: send UploadFinish to index it",
                )));
            }
            Err(error) => return Outcome::Reply(Response::error(error)),
        }
        let (slot, params, uploads) = (
            Arc::clone(&self.store),
            Arc::clone(&self.params),
            Arc::clone(&self.uploads),
        );
        Outcome::Job(Job::new(Lane::Io, move |_| {
            let bytes = uploads.finish(&request.upload_id)?.read()?;
            let mut file = BackupFile::check(&bytes)?;
            let settings = match file.settings.take() {
                Some(value) => {
                    let settings: GenerationParams =
                        serde_json::from_value(value).map_err(|e| {
                            ApiError::invalid(format!("the backup's settings are not valid: {e}"))
                        })?;
                    crate::params::validate(&settings)?;
                    Some(settings)
                }
                None => None,
            };
            let counts = slot.get()?.restore(file)?;
            if let Some(settings) = &settings {
                params.replace(settings.clone())?;
            }
            Ok(Response::Restored(Restored {
                sessions: counts.sessions,
                messages: counts.messages,
                collections_created: counts.collections_created,
                documents: counts.documents,
                settings: settings.is_some(),
            }))
        }))
    }
}

/// Streams `bytes` as `FilePart`s, then answers with the `FileComplete`.
fn send_file(
    ctx: &JobContext,
    bytes: &[u8],
    filename: String,
    content_type: &str,
    (sessions, messages, collections): (u64, u64, u64),
) -> Result<Response, ApiError> {
    let mut parts = 0u64;
    for (index, part) in bytes.chunks(PART_BYTES).enumerate() {
        let data = base64::engine::general_purpose::STANDARD.encode(part);
        if !ctx.emit(Response::FilePart(FilePart {
            index: index as u64,
            data,
        })) {
            return Err(ApiError::new(
                499,
                "cancelled",
                "Cancelled",
                "the client went away before the file was sent",
            ));
        }
        parts += 1;
    }
    Ok(Response::FileComplete(FileComplete {
        filename,
        content_type: content_type.to_string(),
        parts,
        bytes: bytes.len() as u64,
        sha256: hex(&Sha256::digest(bytes)),
        sessions,
        messages,
        collections,
    }))
}

/// One chat as Markdown: a heading per turn with its role and time.
pub fn to_markdown(session: &SessionDump) -> String {
    let title = session.title.as_deref().unwrap_or(&session.session_id);
    let mut out = format!(
        "# {title}\n\nSession `{}`, {} messages, {} to {}.\n",
        session.session_id,
        session.messages.len(),
        date(session.created_at),
        date(session.updated_at)
    );
    for message in &session.messages {
        let mut role = message.role.clone();
        if let Some(first) = role.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        out.push_str(&format!(
            "\n## {role} · {}\n\n{}\n",
            date(message.created_at),
            message.content.trim_end()
        ));
    }
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM UTC`.
fn date(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        of_day / 3600,
        of_day % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MessageDump;

    #[test]
    fn dates_and_markdown() {
        assert_eq!(date(0), "1970-01-01 00:00 UTC");
        assert_eq!(date(1_780_000_000_000), "2026-05-28 20:26 UTC");
        let session = SessionDump {
            session_id: "s1".into(),
            title: Some("Hello".into()),
            created_at: 0,
            updated_at: 60_000,
            settings: None,
            messages: vec![MessageDump {
                role: "user".into(),
                content: "hi there\n".into(),
                metadata: None,
                created_at: 60_000,
            }],
        };
        let text = to_markdown(&session);
        assert!(text.starts_with("# Hello\n"), "{text}");
        assert!(
            text.contains("## User · 1970-01-01 00:01 UTC\n\nhi there\n"),
            "{text}"
        );
    }
}
