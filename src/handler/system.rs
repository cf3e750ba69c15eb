//! System, statistics and model-listing requests: cheap, answered inline
//! except where they read /proc or the disk.

use std::time::Instant;

use super::{Handler, Outcome};
use crate::api::{Health, ModelList, Response, Stats};
use crate::jobs::{Job, Lane};
use crate::models::scan_models;

impl Handler {
    pub(super) fn health(&self, now: Instant) -> Response {
        Response::Health(Health {
            status: if self.models.is_loading() || self.is_preloading() {
                "loading"
            } else {
                "ok"
            }
            .into(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_seconds: self.stats.uptime(now).as_secs(),
            features: crate::FEATURES.iter().map(|f| f.to_string()).collect(),
        })
    }

    pub(super) fn stats_reply(&self, now: Instant) -> Response {
        Response::Stats(Stats {
            uptime_seconds: self.stats.uptime(now).as_secs(),
            requests: self.stats.requests(),
            errors: self.stats.errors(),
            jobs_running: self.jobs.in_flight() as u64,
            latency: self.stats.latency(),
            slots: self
                .models
                .loaded()
                .iter()
                .filter_map(|r| {
                    let slots = r.text().ok()?.slots();
                    (!slots.is_empty()).then(|| crate::api::ModelSlots {
                        model: r.file.id.clone(),
                        slots,
                    })
                })
                .collect(),
        })
    }

    // Reading /proc takes a few milliseconds: off the loop.
    pub(super) fn system_info(&self) -> Outcome {
        let upstreams = self.upstream_states();
        self.with_probe(|probe| {
            probe.info().map(|mut info| {
                info.upstreams = upstreams;
                Response::SystemInfo(Box::new(info))
            })
        })
    }

    pub(super) fn resources(&self) -> Outcome {
        self.with_probe(|probe| probe.resources().map(Response::Resources))
    }

    fn with_probe(
        &self,
        read: impl FnOnce(&crate::system::SystemProbe) -> Result<Response, crate::error::ApiError>
        + Send
        + 'static,
    ) -> Outcome {
        let probe = std::sync::Arc::clone(&self.system);
        Outcome::Job(Job::new(Lane::Io, move |_| read(&probe)))
    }

    pub(super) fn list_models(&self) -> Outcome {
        let dir = self.models_dir.clone();
        let manager = std::sync::Arc::clone(&self.models);
        let upstreams = self.upstreams();
        Outcome::Job(Job::new(Lane::Io, move |_| {
            let local = scan_models(&dir);
            let mut models: Vec<_> = local
                .iter()
                .map(|m| m.entry(manager.is_loaded(&m.id)))
                .collect();
            models.extend(upstreams.entries(|id| local.iter().any(|m| m.id == id)));
            Ok(Response::ModelList(ModelList { models }))
        }))
    }
}
