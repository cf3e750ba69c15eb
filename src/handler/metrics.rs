//! `/metrics`: the handler's state in Prometheus' text format. Names follow
//! Prometheus' conventions (`tabagent_` prefix, `_total` counters, base units
//! `_seconds` and `_bytes`). Reading the process's RSS and CPU time takes a
//! read of /proc, so a scrape costs a millisecond or so; scrapes are not
//! counted as requests.

use std::sync::atomic::Ordering;

use super::Handler;
use crate::metrics::{Exposition, GENERATION, Kind, STORE};
use crate::stats::Transport;

impl Handler {
    /// Every metric, as `/metrics` answers.
    pub fn metrics(&self) -> String {
        let mut out = Exposition::default();
        self.request_metrics(&mut out);
        generation_metrics(&mut out);
        self.model_metrics(&mut out);
        self.upstream_metrics(&mut out);
        store_metrics(&mut out);
        self.process_metrics(&mut out);
        out.finish()
    }

    fn request_metrics(&self, out: &mut Exposition) {
        let stats = &self.stats;
        let name = "tabagent_requests_total";
        out.family(
            name,
            "Requests answered, by transport, route (HTTP path, else request type) and status.",
            Kind::Counter,
        );
        for ((transport, route, status), count) in stats.answered() {
            let status = status.to_string();
            let labels = [
                ("transport", transport.name()),
                ("route", route),
                ("status", status.as_str()),
            ];
            out.sample(name, &labels, count as f64);
        }
        let name = "tabagent_request_duration_seconds";
        out.family(
            name,
            "Time from a request's arrival to its final reply, by transport.",
            Kind::Histogram,
        );
        for transport in Transport::ALL {
            out.histogram(
                name,
                &[("transport", transport.name())],
                stats.duration(transport),
            );
        }
        let name = "tabagent_queue_depth";
        out.family(
            name,
            "Jobs waiting for a pool thread, by lane.",
            Kind::Gauge,
        );
        let lanes = self.jobs.lanes();
        for (lane, queued, _) in lanes {
            out.sample(name, &[("lane", lane)], queued as f64);
        }
        let name = "tabagent_jobs_running";
        out.family(name, "Jobs running on a pool thread, by lane.", Kind::Gauge);
        for (lane, _, running) in lanes {
            out.sample(name, &[("lane", lane)], running as f64);
        }
        let name = "tabagent_webrtc_sessions";
        out.family(name, "WebRTC sessions open.", Kind::Gauge)
            .sample(name, &[], stats.rtc_sessions() as f64);
    }

    fn model_metrics(&self, out: &mut Exposition) {
        let name = "tabagent_slots";
        out.family(
            name,
            "Generation slots by model and state (idle, prefill, generating; busy and loading for a model without slots).",
            Kind::Gauge,
        );
        let states = self.models.slot_states();
        for same in states.chunk_by(|a, b| a == b) {
            let (model, state) = &same[0];
            out.sample(
                name,
                &[("model", model), ("state", state)],
                same.len() as f64,
            );
        }
        let loaded = self.models.loaded();
        let name = "tabagent_models_loaded";
        out.family(name, "Models in memory.", Kind::Gauge)
            .sample(name, &[], loaded.len() as f64);
        let name = "tabagent_model_memory_bytes";
        out.family(
            name,
            "Estimated memory each loaded model holds.",
            Kind::Gauge,
        );
        for resident in &loaded {
            let kind = match resident.file.kind {
                crate::api::ModelKind::Chat => "chat",
                crate::api::ModelKind::Embedding => "embedding",
                crate::api::ModelKind::Rerank => "rerank",
            };
            out.sample(
                name,
                &[("model", &resident.file.id), ("kind", kind)],
                resident.memory_bytes as f64,
            );
        }
    }

    fn process_metrics(&self, out: &mut Exposition) {
        let name = "tabagent_uptime_seconds";
        out.family(name, "Time since the server started.", Kind::Gauge)
            .sample(
                name,
                &[],
                self.stats.uptime(std::time::Instant::now()).as_secs_f64(),
            );
        let Ok((rss, cpu_ms)) = self.system.process_usage() else {
            return;
        };
        let name = "tabagent_process_resident_memory_bytes";
        out.family(name, "Resident memory of this process.", Kind::Gauge)
            .sample(name, &[], rss as f64);
        let name = "tabagent_process_cpu_seconds_total";
        out.family(name, "CPU time this process has used.", Kind::Counter)
            .sample(name, &[], cpu_ms as f64 / 1000.0);
    }
}

fn generation_metrics(out: &mut Exposition) {
    let name = "tabagent_time_to_first_token_seconds";
    out.family(
        name,
        "From the start of prompt processing to the first generated token.",
        Kind::Histogram,
    )
    .histogram(name, &[], &GENERATION.time_to_first_token);
    let name = "tabagent_generation_tokens_per_second";
    out.family(
        name,
        "Generation speed after the first token, per generation.",
        Kind::Histogram,
    )
    .histogram(name, &[], &GENERATION.tokens_per_second);
    let name = "tabagent_prompt_tokens_total";
    out.family(name, "Prompt tokens of every generation.", Kind::Counter)
        .sample(
            name,
            &[],
            GENERATION.prompt_tokens.load(Ordering::Relaxed) as f64,
        );
    let name = "tabagent_generated_tokens_total";
    out.family(name, "Tokens generated.", Kind::Counter).sample(
        name,
        &[],
        GENERATION.generated_tokens.load(Ordering::Relaxed) as f64,
    );
}

fn store_metrics(out: &mut Exposition) {
    let name = "tabagent_store_writes_total";
    out.family(name, "Writes to the database, by outcome.", Kind::Counter);
    out.sample(
        name,
        &[("outcome", "committed")],
        STORE.writes.load(Ordering::Relaxed) as f64,
    );
    out.sample(
        name,
        &[("outcome", "failed")],
        STORE.failed_writes.load(Ordering::Relaxed) as f64,
    );
    let name = "tabagent_store_commit_seconds";
    out.family(
        name,
        "How long each group commit took (fsync included).",
        Kind::Histogram,
    )
    .histogram(name, &[], &STORE.commit_seconds);
}
