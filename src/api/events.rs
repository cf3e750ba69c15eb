//! Server push: the `Subscribe` request and the events it delivers.
//!
//! A subscription is a request that never ends: its first reply is
//! `Subscribed` and every later reply is an `Event`, all with the Subscribe
//! request's id and `done: false`. It ends when the client goes away.

use serde::{Deserialize, Serialize};

use super::{IndexProgress, PullProgress};

/// `{"request_type": "Subscribe", "events": [...]}`: the event names wanted;
/// empty or left out means all of them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SubscribeRequest {
    /// Names from [`EventKind::ALL`].
    #[serde(default)]
    pub events: Vec<String>,
}

/// The kinds of event a client may subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[allow(missing_docs)] // each is the event of the same name
pub enum EventKind {
    ModelLoadProgress,
    PullProgress,
    ModelLoaded,
    ModelUnloaded,
    LowMemory,
    IndexProgress,
}

impl EventKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [EventKind; 6] = [
        EventKind::ModelLoadProgress,
        EventKind::PullProgress,
        EventKind::ModelLoaded,
        EventKind::ModelUnloaded,
        EventKind::LowMemory,
        EventKind::IndexProgress,
    ];

    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::ModelLoadProgress => "ModelLoadProgress",
            EventKind::PullProgress => "PullProgress",
            EventKind::ModelLoaded => "ModelLoaded",
            EventKind::ModelUnloaded => "ModelUnloaded",
            EventKind::LowMemory => "LowMemory",
            EventKind::IndexProgress => "IndexProgress",
        }
    }

    /// Reads the names of a Subscribe request; empty means all.
    pub fn parse_list(names: &[String]) -> Result<Vec<EventKind>, String> {
        if names.is_empty() {
            return Ok(EventKind::ALL.to_vec());
        }
        names
            .iter()
            .map(|name| {
                EventKind::ALL
                    .into_iter()
                    .find(|kind| kind.name() == name)
                    .ok_or_else(|| {
                        let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
                        format!("unknown event {name:?}; known events: {}", known.join(", "))
                    })
            })
            .collect()
    }
}

/// `Subscribed`: the subscription is in place.
#[derive(Debug, Clone, Serialize)]
pub struct Subscription {
    /// The kinds it will deliver.
    pub events: Vec<EventKind>,
}

/// Something the server tells every subscribed client, tagged by `event`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event")]
pub enum ServerEvent {
    /// A model is loading.
    ModelLoadProgress {
        /// The model id.
        model: String,
        /// From 0.0 to 1.0.
        progress: f32,
    },
    /// A download advanced.
    PullProgress(PullProgress),
    /// A model is ready.
    ModelLoaded {
        /// The model id.
        model: String,
    },
    /// A model was unloaded (asked for, idle, or to make room).
    ModelUnloaded {
        /// The model id.
        model: String,
        /// `requested`, `idle`, `memory` or `replaced` (by a pull).
        reason: String,
    },
    /// Available memory fell below the `low_memory_bytes` setting.
    LowMemory {
        /// Bytes available to new allocations.
        available_bytes: u64,
        /// Bytes of RAM.
        total_bytes: u64,
    },
    /// An uploaded document is being indexed: "chunk N of M", then done or failed.
    IndexProgress(IndexProgress),
}

impl ServerEvent {
    /// Its kind, for matching subscriptions.
    pub fn kind(&self) -> EventKind {
        match self {
            ServerEvent::ModelLoadProgress { .. } => EventKind::ModelLoadProgress,
            ServerEvent::PullProgress(_) => EventKind::PullProgress,
            ServerEvent::ModelLoaded { .. } => EventKind::ModelLoaded,
            ServerEvent::ModelUnloaded { .. } => EventKind::ModelUnloaded,
            ServerEvent::LowMemory { .. } => EventKind::LowMemory,
            ServerEvent::IndexProgress(_) => EventKind::IndexProgress,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_checked() {
        assert_eq!(EventKind::parse_list(&[]).unwrap().len(), 6);
        let one = EventKind::parse_list(&["LowMemory".into()]).unwrap();
        assert_eq!(one, [EventKind::LowMemory]);
        let error = EventKind::parse_list(&["Nope".into()]).unwrap_err();
        assert!(
            error.contains("Nope") && error.contains("ModelLoaded"),
            "{error}"
        );
    }
}
