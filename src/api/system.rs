//! System and parameter requests and their replies.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// GetApiKey's reply (over native messaging only).
#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyReply {
    /// The key HTTP clients send as `Authorization: Bearer KEY`.
    pub api_key: String,
}

/// Health's reply.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `ok`, or `loading` while a model a request waits for is loading.
    pub status: String,
    /// tabagent's version.
    pub version: String,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Backends compiled into this build.
    pub features: Vec<String>,
}

/// SystemInfo's reply.
#[derive(Debug, Clone, Serialize)]
pub struct SystemInfo {
    /// Operating system name and version.
    pub os: String,
    /// Kernel version.
    pub kernel: Option<String>,
    /// CPU architecture.
    pub arch: String,
    /// CPU model name.
    pub cpu_model: String,
    /// SIMD features that matter for inference (avx2, avx512f, fma, neon...).
    pub cpu_features: Vec<String>,
    /// Logical cores.
    pub cores: usize,
    /// Physical cores, when known.
    pub physical_cores: Option<usize>,
    /// Bytes of RAM.
    pub total_memory_bytes: u64,
    /// Bytes available to new allocations.
    pub available_memory_bytes: u64,
    /// GPUs found (from /sys/class/drm on Linux); empty when none.
    pub gpus: Vec<String>,
    /// The OpenAI-compatible upstreams configured, and their health.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<crate::upstream::UpstreamState>,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest seen.
    pub max_us: u64,
}

/// GetStats' reply.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Requests received, per transport.
    pub requests: BTreeMap<String, u64>,
    /// Requests answered with an error.
    pub errors: u64,
    /// Jobs on the pool now.
    pub jobs_running: u64,
    /// Time from request to final reply, over recent requests.
    pub latency: LatencySummary,
    /// The generation slots of each loaded chat model.
    pub slots: Vec<crate::api::ModelSlots>,
}

/// GetResources' reply.
#[derive(Debug, Clone, Serialize)]
pub struct Resources {
    /// Resident memory of this process.
    pub process_rss_bytes: u64,
    /// CPU use of this process since the previous sample, percent of one core.
    pub process_cpu_percent: f32,
    /// Machine RAM.
    pub total_memory_bytes: u64,
    /// Machine RAM available.
    pub available_memory_bytes: u64,
}

/// Generation defaults (GetParams' reply; SetParams answers with the result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)] // documented in openapi.yaml (GenerationParams)
pub struct GenerationParams {
    // f64 as in Sampling; the engine takes f32 (engine/text.rs).
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: u32,
    pub min_p: f64,
    pub max_tokens: u32,
    pub repeat_penalty: f64,
    /// None: a fresh random seed per request.
    pub seed: Option<u32>,
    pub context_size: u32,
    /// 0: one per physical core.
    pub threads: u32,
}

impl Default for GenerationParams {
    fn default() -> Self {
        GenerationParams {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            min_p: 0.05,
            max_tokens: 512,
            repeat_penalty: 1.1,
            seed: None,
            context_size: 4096,
            threads: 0,
        }
    }
}

/// SetParams: only the fields given change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)] // as GenerationParams
pub struct ParamsPatch {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    pub min_p: Option<f64>,
    pub max_tokens: Option<u32>,
    pub repeat_penalty: Option<f64>,
    /// `null` is "leave as is"; a negative number clears the fixed seed.
    pub seed: Option<i64>,
    pub context_size: Option<u32>,
    pub threads: Option<u32>,
}
