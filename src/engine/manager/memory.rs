//! The memory side of the model lifecycle: what a model would take, the
//! budget, and which idle models to evict to make room for a load.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::{ModelManager, Resident, Slot};
use crate::api::{MemoryEstimate, ModelFormat};
use crate::engine::gguf::{GgufFacts, read_facts};
use crate::engine::limits::{LoadBounds, LoadOptions, LoadSettings, clamp_context, fit};
use crate::error::ApiError;
use crate::jobs::lock;
use crate::models::ModelFile;

impl ModelManager {
    /// Weights + KV cache + overhead of `file` with a context of `context` tokens.
    pub fn estimate(&self, file: &ModelFile, context: u32) -> Result<MemoryEstimate, ApiError> {
        let (weights, kv, overhead, context) = match file.format {
            ModelFormat::Gguf => {
                let facts = gguf_facts(file)?;
                let context = clamp_context(context, &facts);
                let kv = facts
                    .kv_bytes_per_token()
                    .saturating_mul(u64::from(context));
                (
                    facts.tensor_bytes.max(1),
                    kv,
                    facts.overhead_bytes(context),
                    context,
                )
            }
            ModelFormat::Onnx => (file.size_bytes, 0, file.size_bytes / 2 + (16 << 20), 0),
            ModelFormat::Upstream => return Err(crate::upstream::not_local(&file.id)),
        };
        Ok(MemoryEstimate {
            model: file.id.clone(),
            context_size: context,
            weights_bytes: weights,
            kv_cache_bytes: kv,
            overhead_bytes: overhead,
            // Header values can be anything: saturate, and a 507 follows.
            total_bytes: weights.saturating_add(kv).saturating_add(overhead),
        })
    }

    /// The bytes models may use in all: the configured budget, else what is
    /// available now plus what loaded models already hold.
    pub fn budget(&self) -> Result<u64, ApiError> {
        let budget = self.memory_budget();
        if budget > 0 {
            return Ok(budget);
        }
        let held: u64 = self.loaded().iter().map(|r| r.memory_bytes).sum();
        Ok(self.system.available_memory()? + held)
    }

    /// Bytes loaded models hold, leaving `except` out.
    pub fn held_bytes(&self, except: &str) -> u64 {
        self.loaded()
            .iter()
            .filter(|r| r.file.id != except)
            .map(|r| r.memory_bytes)
            .sum()
    }

    /// The options a load of `file` uses ([`fit`] on its header): what the
    /// client asked for, checked, and the defaults for the rest, fitted.
    /// Nothing reaches llama.cpp that has not passed here.
    pub fn fit(
        &self,
        file: &ModelFile,
        defaults: LoadOptions,
        asked: &LoadSettings,
    ) -> Result<LoadOptions, ApiError> {
        match file.format {
            ModelFormat::Gguf => {
                let defaults = LoadOptions {
                    parallel: match defaults.parallel {
                        0 => self.config.parallel,
                        asked => asked,
                    },
                    context_shift: self.config.context_shift,
                    ..defaults
                };
                fit(defaults, asked, &gguf_facts(file)?)
            }
            ModelFormat::Onnx => {
                // ONNX Runtime takes none of these; its threads are its own.
                asked.check(&LoadBounds::machine())?;
                Ok(defaults)
            }
            ModelFormat::Upstream => Err(crate::upstream::not_local(&file.id)),
        }
    }

    /// Frees room for `needed` bytes by evicting idle models, least recently
    /// used first; 507 when it cannot fit. Returns the evicted models, to be
    /// dropped outside the lock.
    pub(super) fn make_room(
        &self,
        slots: &mut HashMap<String, Slot>,
        file: &ModelFile,
        needed: u64,
    ) -> Result<Vec<Arc<Resident>>, ApiError> {
        let residents = || {
            slots.values().filter_map(|s| match s {
                Slot::Ready(r) => Some(r),
                Slot::Loading => None,
            })
        };
        let held: u64 = residents().map(|r| r.memory_bytes).sum();
        let budget = if self.memory_budget() > 0 {
            self.memory_budget()
        } else {
            self.system.available_memory()? + held
        };
        let mib = |b: u64| b.div_ceil(1 << 20);
        if needed > budget {
            return Err(ApiError::insufficient_memory(format!(
                "{} needs about {} MiB; the memory budget is {} MiB",
                file.id,
                mib(needed),
                mib(budget)
            )));
        }
        let mut idle: Vec<(Instant, String, u64)> = residents()
            .filter(|r| Arc::strong_count(r) == 1)
            .map(|r| (*lock(&r.last_used), r.file.id.clone(), r.memory_bytes))
            .collect();
        idle.sort();
        let mut free = budget - held.min(budget);
        let mut evict = Vec::new();
        for (_, id, bytes) in idle {
            if free >= needed {
                break;
            }
            free += bytes;
            evict.push(id);
        }
        if free < needed {
            return Err(ApiError::insufficient_memory(format!(
                "{} needs about {} MiB; {} MiB are free and the models holding the rest are in use",
                file.id,
                mib(needed),
                mib(free)
            )));
        }
        let mut evicted = Vec::new();
        for id in evict {
            log::info!("unloading {id} to make room for {}", file.id);
            if let Some(Slot::Ready(resident)) = slots.remove(&id) {
                evicted.push(resident);
            }
        }
        Ok(evicted)
    }
}

/// A GGUF's header facts, or a 422 saying why the file is unusable.
pub fn gguf_facts(file: &ModelFile) -> Result<GgufFacts, ApiError> {
    read_facts(&file.path)
        .map_err(|e| ApiError::invalid(format!("{} cannot be used: {e}", file.path.display())))
}
