//! Preload: the models the `preload` setting names load at start, one after
//! another on the model lane, so the first chat after boot does not wait for
//! a load. Health says `loading` until every one has loaded or failed; a
//! model that cannot load is logged and skipped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::Handler;
use super::chat::load_options;
use crate::api::{Reply, RequestId, Response};
use crate::jobs::{ConnectionId, Job, Lane, ReplySink};
use crate::logging::RequestTag;

impl Handler {
    /// Loads `ids` in the background (returns at once).
    pub fn preload(&self, ids: &[String]) {
        for id in ids {
            self.preloading.fetch_add(1, Ordering::AcqRel);
            let models = Arc::clone(&self.models);
            let defaults = load_options(&self.params.get());
            let model = id.clone();
            let job = Job::new(Lane::Model, move |_| {
                let file = models.find(&model)?;
                let resident = models.acquire(&file, defaults, false, Instant::now())?;
                Ok(Response::ModelLoaded(resident.describe(Instant::now())))
            });
            let sink = Arc::new(Preloaded {
                model: id.clone(),
                pending: Arc::clone(&self.preloading),
            });
            let submitted = RequestTag::scope(Some(RequestTag::next()), || {
                log::info!("preloading {id}");
                self.jobs
                    .submit(ConnectionId::next(), RequestId::text("preload"), job, sink)
            });
            if let Err(error) = submitted {
                log::warn!("cannot preload {id}: {}", error.detail);
                self.preloading.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Whether a preload is still under way.
    pub(super) fn is_preloading(&self) -> bool {
        self.preloading.load(Ordering::Acquire) > 0
    }
}

/// Where a preload's outcome goes: the log.
struct Preloaded {
    model: String,
    pending: Arc<AtomicUsize>,
}

impl ReplySink for Preloaded {
    fn deliver(&self, reply: Reply) -> bool {
        if reply.response.is_final() {
            match &reply.response {
                Response::Error { error } => {
                    log::warn!("cannot preload {}: {}", self.model, error.detail)
                }
                _ => log::info!("preloaded {}", self.model),
            }
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
        true
    }
}
