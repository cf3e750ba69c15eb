//! What a model load may ask of llama.cpp: the one validator that LoadModel
//! and SetParams share, so that no numeric setting reaches a native library
//! unchecked.
//!
//! llama.cpp takes thread counts, context and batch sizes and GPU layer
//! counts as plain integers and trusts them: a context of four billion
//! tokens or two billion threads is an allocation failure or a thread spawn
//! that kills the process, not an error it returns. So every such value is
//! checked here first, and a value out of range is a 422 naming the field,
//! the value and the range allowed.
//!
//! The bounds come in two steps. [`LoadBounds::machine`] holds what this
//! process can use whatever the model (checked before a job starts, and by
//! SetParams); [`LoadBounds::model`] narrows it by the GGUF header (checked
//! where the header is read, on the load path, still before any call into
//! llama.cpp).

use std::sync::OnceLock;

use super::gguf::GgufFacts;
use crate::error::ApiError;

/// The smallest context a load may ask for (the model's trained context
/// when that is smaller): below it no real prompt fits.
pub const MIN_CONTEXT: u32 = 128;

/// The largest context any load may ask for, whatever the model says: 1 Mi
/// tokens is beyond every published model, and the KV cache of even a small
/// model at that size is tens of GiB.
pub const MAX_CONTEXT: u32 = 1 << 20;

/// The largest thread count, whatever the machine: the bound below is the
/// CPUs this process may run on; this caps it on very large hosts too.
pub const MAX_THREADS: u32 = 1024;

/// The largest GPU layer count before the header is read: no published
/// model has a thousand layers; the header then bounds it to its own.
pub const MAX_GPU_LAYERS: u32 = 1024;

/// The largest batch llama.cpp is given when the client does not choose one:
/// a step of the batching loop reads at most this much of a prompt, so it
/// bounds how long a long prompt holds the other slots' next tokens (and
/// llama.cpp's own micro-batch is 512, so a larger one reads no faster).
const DEFAULT_MAX_BATCH: u32 = 512;

/// The most generation slots a model may have.
pub const MAX_PARALLEL: u32 = 64;

/// How a model is loaded (GGUF settings; ONNX ignores them). Before
/// [`fit`] these are the defaults; after it, the values
/// llama.cpp gets, each within [`LoadBounds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Context size in tokens, before clamping to the model's training length.
    pub context_size: u32,
    /// Threads for inference.
    pub threads: u32,
    /// Tokens per batch; `None`: [`default_batch`] of the context.
    pub batch_size: Option<u32>,
    /// Layers to offload to a GPU.
    pub gpu_layers: u32,
    /// Generations that run at once; 0: [`default_parallel`].
    pub parallel: u32,
    /// A generation at the context's end shifts instead of stopping.
    pub context_shift: bool,
}

/// Load settings as a client gives them (LoadModel, or the load defaults of
/// SetParams); `None` leaves a setting to its default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadSettings {
    /// Context size in tokens.
    pub context_size: Option<u32>,
    /// Threads; 0 is one per core.
    pub threads: Option<u32>,
    /// Tokens per llama.cpp batch (prompt processing).
    pub batch_size: Option<u32>,
    /// Layers offloaded to a GPU.
    pub gpu_layers: Option<u32>,
    /// Generation slots; 0 is the default.
    pub parallel: Option<u32>,
}

/// The range each setting may take, and why, for the 422 detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBounds {
    /// Most threads: the CPUs this process may run on.
    pub max_threads: u32,
    /// Largest context and what sets it.
    pub max_context: (u32, String),
    /// Most GPU layers and what sets it.
    pub max_gpu_layers: (u32, String),
}

impl LoadBounds {
    /// What this machine allows whatever the model.
    ///
    /// Threads go up to the CPUs this process may run on (affinity and cgroup
    /// quota included), not a multiple of them: llama.cpp's worker threads
    /// spin at a barrier after every operation, so a thread without a CPU of
    /// its own makes every token slower, never faster.
    pub fn machine() -> LoadBounds {
        LoadBounds {
            max_threads: usable_cpus(),
            max_context: (MAX_CONTEXT, "the largest context tabagent loads".into()),
            max_gpu_layers: (MAX_GPU_LAYERS, "more than any model has".into()),
        }
    }

    /// The machine's bounds narrowed by a GGUF header: the context it was
    /// trained for, and its layers plus the output layer.
    pub fn model(facts: &GgufFacts) -> LoadBounds {
        let mut bounds = LoadBounds::machine();
        if let Some(trained) = facts.context_length
            && (1..u64::from(MAX_CONTEXT)).contains(&trained)
        {
            // `trained` is below MAX_CONTEXT, a u32.
            bounds.max_context = (trained as u32, "the model's trained context".into());
        }
        if let Some(layers) = facts.block_count
            && layers < u64::from(MAX_GPU_LAYERS)
        {
            bounds.max_gpu_layers = (
                layers as u32 + 1,
                format!("the model's {layers} layers and its output layer"),
            );
        }
        bounds
    }
}

impl LoadSettings {
    /// Checks every setting given against `bounds`: Ok, or a 422 naming the
    /// first field out of range, its value and the range allowed. A batch is
    /// bounded by the context given, else by the largest context.
    pub fn check(&self, bounds: &LoadBounds) -> Result<(), ApiError> {
        if let Some(threads) = self.threads
            && threads > bounds.max_threads
        {
            return Err(ApiError::out_of_range(
                "threads",
                threads,
                format!(
                    "0..={} (0: one per core; {} is the CPUs this process may run on)",
                    bounds.max_threads, bounds.max_threads
                ),
            ));
        }
        let (max_context, why) = &bounds.max_context;
        let min_context = MIN_CONTEXT.min(*max_context);
        if let Some(context) = self.context_size
            && !(min_context..=*max_context).contains(&context)
        {
            return Err(ApiError::out_of_range(
                "context_size",
                context,
                format!("{min_context}..={max_context} ({max_context} is {why})"),
            ));
        }
        let batch_limit = self.context_size.unwrap_or(*max_context);
        if let Some(batch) = self.batch_size
            && !(1..=batch_limit).contains(&batch)
        {
            return Err(ApiError::out_of_range(
                "batch_size",
                batch,
                format!("1..={batch_limit} (at most the context size)"),
            ));
        }
        if let Some(parallel) = self.parallel
            && parallel > MAX_PARALLEL
        {
            return Err(ApiError::out_of_range(
                "parallel",
                parallel,
                format!("0..={MAX_PARALLEL} (0: the default)"),
            ));
        }
        let (max_layers, why) = &bounds.max_gpu_layers;
        if let Some(layers) = self.gpu_layers
            && layers > *max_layers
        {
            return Err(ApiError::out_of_range(
                "gpu_layers",
                layers,
                format!("0..={max_layers} ({why})"),
            ));
        }
        Ok(())
    }
}

/// The options a load of a GGUF with header `facts` uses: the settings the
/// client gave (`asked`), `defaults` for the rest, fitted to the model (a
/// default context longer than the model's is cut to it), then all of them
/// checked against the machine and the model: a 422 naming the field and
/// its range.
pub fn fit(
    defaults: LoadOptions,
    asked: &LoadSettings,
    facts: &GgufFacts,
) -> Result<LoadOptions, ApiError> {
    let context_size = asked
        .context_size
        .unwrap_or_else(|| clamp_context(defaults.context_size, facts));
    let fitted = LoadOptions {
        context_size,
        threads: asked.threads.filter(|t| *t > 0).unwrap_or(defaults.threads),
        batch_size: Some(
            asked
                .batch_size
                .or(defaults.batch_size)
                .unwrap_or_else(|| default_batch(context_size)),
        ),
        gpu_layers: asked.gpu_layers.unwrap_or(defaults.gpu_layers),
        parallel: asked
            .parallel
            .filter(|p| *p > 0)
            .or(Some(defaults.parallel).filter(|p| *p > 0))
            .unwrap_or_else(default_parallel),
        context_shift: defaults.context_shift,
    };
    // What was asked and the defaults alike: every value llama.cpp gets.
    LoadSettings {
        context_size: Some(fitted.context_size),
        threads: Some(fitted.threads),
        batch_size: fitted.batch_size,
        gpu_layers: Some(fitted.gpu_layers),
        parallel: Some(fitted.parallel),
    }
    .check(&LoadBounds::model(facts))?;
    Ok(fitted)
}

/// A default context cut to what the model allows (and at least the
/// smallest context a load may ask for, or the model's own when smaller).
pub fn clamp_context(context: u32, facts: &GgufFacts) -> u32 {
    let (max, _) = LoadBounds::model(facts).max_context;
    context.clamp(MIN_CONTEXT.min(max), max)
}

/// The batch llama.cpp gets when the client leaves it out: the whole context
/// up to 2048 tokens, so that a prompt is decoded in few steps.
pub fn default_batch(context_size: u32) -> u32 {
    context_size.min(DEFAULT_MAX_BATCH)
}

/// Generation slots when neither the request nor the settings say: 4, as
/// llama-server, Ollama and LM Studio default to about as many, fewer on a
/// small machine. The slots share one KV cache, so they cost no memory of
/// their own; each generating slot adds a row to every step's batch, which
/// a single core gains little from, and a machine with under 4 GiB needs
/// its memory for the model.
pub fn default_parallel() -> u32 {
    static PARALLEL: OnceLock<u32> = OnceLock::new();
    *PARALLEL.get_or_init(|| {
        let cpus = usable_cpus();
        // 0 (unknown) when /proc cannot be read: the default for a big machine.
        let memory = sysinfo::System::new_with_specifics(
            sysinfo::RefreshKind::nothing()
                .with_memory(sysinfo::MemoryRefreshKind::nothing().with_ram()),
        )
        .map_or(0, |system| system.total_memory());
        match (cpus, memory) {
            (1, _) => 1,
            (_, m) if m > 0 && m < 4 << 30 => 2,
            _ => 4,
        }
    })
}

/// CPUs this process may run on (at least 1, at most [`MAX_THREADS`]); read
/// once, as it scans cgroup files.
pub fn usable_cpus() -> u32 {
    static CPUS: OnceLock<u32> = OnceLock::new();
    *CPUS.get_or_init(|| {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        u32::try_from(cpus).unwrap_or(MAX_THREADS).min(MAX_THREADS)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_model() -> GgufFacts {
        GgufFacts {
            context_length: Some(512),
            block_count: Some(2),
            ..GgufFacts::default()
        }
    }

    #[test]
    fn values_out_of_range_are_422s_naming_field_value_and_range() {
        let machine = LoadBounds::machine();
        let huge_threads = LoadSettings {
            threads: Some(2_000_000_000),
            ..LoadSettings::default()
        };
        let error = huge_threads.check(&machine).unwrap_err();
        assert_eq!(error.status, 422);
        let cpus = usable_cpus();
        assert!(
            error.detail.contains("threads 2000000000")
                && error.detail.contains(&format!("0..={cpus}")),
            "{}",
            error.detail
        );
        let model = LoadBounds::model(&tiny_model());
        let too_long = LoadSettings {
            context_size: Some(4096),
            ..LoadSettings::default()
        };
        assert!(too_long.check(&machine).is_ok(), "the machine allows it");
        let detail = too_long.check(&model).unwrap_err().detail;
        assert!(
            detail.contains("context_size 4096") && detail.contains("128..=512"),
            "{detail}"
        );
        let layers = LoadSettings {
            gpu_layers: Some(4),
            ..LoadSettings::default()
        };
        assert!(layers.check(&model).unwrap_err().detail.contains("0..=3"));
        let batch = LoadSettings {
            context_size: Some(256),
            batch_size: Some(257),
            ..LoadSettings::default()
        };
        assert!(batch.check(&model).unwrap_err().detail.contains("1..=256"));
        let zero_batch = LoadSettings {
            batch_size: Some(0),
            ..LoadSettings::default()
        };
        assert!(zero_batch.check(&machine).is_err());
    }

    #[test]
    fn defaults_are_fitted_to_the_model_and_what_is_asked_is_checked() {
        let defaults = LoadOptions {
            context_size: 4096,
            threads: 1,
            batch_size: None,
            gpu_layers: 0,
            parallel: 3,
            context_shift: false,
        };
        let fitted = fit(defaults, &LoadSettings::default(), &tiny_model()).unwrap();
        assert_eq!(
            fitted,
            LoadOptions {
                context_size: 512,
                batch_size: Some(512),
                ..defaults
            }
        );
        let asked = LoadSettings {
            context_size: Some(256),
            threads: Some(0),
            ..LoadSettings::default()
        };
        let fitted = fit(defaults, &asked, &tiny_model()).unwrap();
        assert_eq!((fitted.context_size, fitted.threads), (256, 1));
        assert_eq!(fitted.batch_size, Some(256));
        let too_long = LoadSettings {
            context_size: Some(513),
            ..LoadSettings::default()
        };
        let error = fit(defaults, &too_long, &tiny_model()).unwrap_err();
        assert!(
            error.detail.contains("context_size 513"),
            "{}",
            error.detail
        );
    }

    #[test]
    fn values_in_range_pass() {
        let fine = LoadSettings {
            context_size: Some(512),
            threads: Some(usable_cpus()),
            batch_size: Some(512),
            gpu_layers: Some(3),
            parallel: Some(MAX_PARALLEL),
        };
        assert_eq!(fine.check(&LoadBounds::model(&tiny_model())), Ok(()));
        let auto = LoadSettings {
            threads: Some(0),
            ..LoadSettings::default()
        };
        assert_eq!(auto.check(&LoadBounds::machine()), Ok(()));
        // A model trained for less than MIN_CONTEXT still loads at its own size.
        let small = GgufFacts {
            context_length: Some(64),
            ..GgufFacts::default()
        };
        let own = LoadSettings {
            context_size: Some(64),
            ..LoadSettings::default()
        };
        assert_eq!(own.check(&LoadBounds::model(&small)), Ok(()));
        // A header claiming more than the hard cap does not lift it.
        let boastful = GgufFacts {
            context_length: Some(u64::MAX),
            block_count: Some(u64::MAX),
            ..GgufFacts::default()
        };
        assert_eq!(LoadBounds::model(&boastful), LoadBounds::machine());
    }
}
