//! The model lifecycle for both formats: which models are in memory, loading
//! on first use, the memory budget, least-recently-used eviction, idle
//! unload, and the default model per task.
//!
//! Each model id has a [`Slot`]: `Loading` while one request loads it (others
//! wanting the same model wait for that load instead of starting their own),
//! then `Ready` with the [`Resident`] model. A request holds an
//! `Arc<Resident>` while it runs, so a model in use is never evicted or
//! unloaded under it: eviction and idle unload only take models nobody
//! holds. Time comes in as `now` arguments; the housekeeping thread is the
//! only place that reads the clock.
//!
//! Every change is told on the [`EventBus`]: load progress, loaded, unloaded
//! (with why), and memory running low.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

pub use super::limits::LoadOptions;
use super::limits::LoadSettings;
use crate::api::{Selection, ServerEvent, SlotState};
use crate::error::ApiError;
use crate::events::EventBus;
use crate::jobs::lock;
use crate::models::ModelFile;
use crate::system::SystemProbe;

mod memory;
mod resident;
mod selection;
pub use memory::gguf_facts;
pub use resident::{Engine, Loader, Progress, Resident, UnloadReason};
use selection::SelectionFile;

/// A model id's state.
enum Slot {
    /// A request is loading it; others wait.
    Loading,
    /// In memory.
    Ready(Arc<Resident>),
}

/// Settings of the manager.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Where models are.
    pub models_dir: PathBuf,
    /// Where the selection is kept (`selection.json`).
    pub data_dir: PathBuf,
    /// Bytes models may take; 0: what the machine has available.
    pub memory_budget: u64,
    /// Idle time after which a model is unloaded; zero: never.
    pub keep_alive: Duration,
    /// Available bytes below which `LowMemory` is published; 0: never.
    pub low_memory_bytes: u64,
    /// Generation slots of a chat model when a load does not say (0: the
    /// default from cores and memory).
    pub parallel: u32,
    /// A generation reaching the context's end shifts instead of stopping.
    pub context_shift: bool,
}

/// The models in memory and the rules for them.
pub struct ModelManager {
    config: ManagerConfig,
    loader: Box<dyn Loader>,
    system: Arc<SystemProbe>,
    slots: Mutex<HashMap<String, Slot>>,
    changed: Condvar,
    loading: AtomicUsize,
    selection: Mutex<Selection>,
    events: Arc<EventBus>,
    /// Whether available memory is below `low_memory_bytes` (last check).
    low_memory: AtomicBool,
    /// The memory budget and keep-alive in force (SIGHUP changes them).
    live: Mutex<(u64, Duration)>,
}

impl ModelManager {
    /// A manager with nothing loaded; the selection is read from the data dir.
    pub fn new(
        config: ManagerConfig,
        loader: Box<dyn Loader>,
        system: Arc<SystemProbe>,
        events: Arc<EventBus>,
    ) -> Self {
        let selection = std::fs::read(config.data_dir.join("selection.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<SelectionFile>(&bytes).ok())
            .map(|f| Selection {
                chat: f.chat,
                embedding: f.embedding,
                rerank: f.rerank,
            })
            .unwrap_or_default();
        ModelManager {
            live: Mutex::new((config.memory_budget, config.keep_alive)),
            config,
            loader,
            system,
            slots: Mutex::default(),
            changed: Condvar::new(),
            loading: AtomicUsize::new(0),
            selection: Mutex::new(selection),
            events,
            low_memory: AtomicBool::new(false),
        }
    }

    /// The memory budget (0: what is available) and keep-alive in force.
    pub fn memory_budget(&self) -> u64 {
        lock(&self.live).0
    }

    /// The keep-alive in force (zero: never unload for idleness).
    pub fn keep_alive(&self) -> Duration {
        lock(&self.live).1
    }

    /// Changes the memory budget and keep-alive (SIGHUP); a smaller budget
    /// applies to the next load.
    pub fn set_limits(&self, memory_budget: u64, keep_alive: Duration) {
        *lock(&self.live) = (memory_budget, keep_alive);
    }

    /// Starts the thread that unloads idle models and watches memory (it
    /// ends with the manager). It runs even while neither is configured, as
    /// a reload may turn the keep-alive on.
    pub fn start_housekeeping(self: &Arc<Self>) {
        let manager: Weak<ModelManager> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("model-housekeeping".into())
            .spawn(move || {
                loop {
                    let Some(tick) = manager.upgrade().map(|m| m.housekeeping_tick()) else {
                        return;
                    };
                    std::thread::sleep(tick);
                    let Some(manager) = manager.upgrade() else {
                        return;
                    };
                    manager.unload_idle(Instant::now());
                    manager.check_memory();
                }
            });
        if let Err(e) = spawned {
            log::warn!("cannot start the housekeeping thread: {e}; models stay loaded");
        }
    }

    /// Often enough to unload within a quarter of the keep-alive of its
    /// due time; /proc/meminfo is cheap to read every few seconds.
    fn housekeeping_tick(&self) -> Duration {
        let keep_alive = self.keep_alive();
        if keep_alive.is_zero() {
            HOUSEKEEPING_TICK
        } else {
            (keep_alive / 4).clamp(Duration::from_millis(100), HOUSEKEEPING_TICK)
        }
    }

    /// Reads available memory and publishes `LowMemory` when it has fallen
    /// below the threshold (once until it recovers). Returns whether it is low.
    pub fn check_memory(&self) -> bool {
        let threshold = self.config.low_memory_bytes;
        let Some(available) = (threshold > 0)
            .then(|| self.system.available_memory().ok())
            .flatten()
        else {
            return false;
        };
        let low = available < threshold;
        let was_low = self.low_memory.swap(low, Ordering::AcqRel);
        if low && !was_low {
            log::warn!(
                "low memory: {} MiB available (threshold {} MiB)",
                available >> 20,
                threshold >> 20
            );
            if let Some(event) = self.low_memory_event() {
                self.events.publish(&event);
            }
        }
        low
    }

    /// The `LowMemory` event while memory is low (as of the last check), so
    /// that a new subscriber learns the state it arrives in.
    pub fn low_memory_event(&self) -> Option<ServerEvent> {
        if !self.low_memory.load(Ordering::Acquire) {
            return None;
        }
        let resources = self.system.resources().ok()?;
        Some(ServerEvent::LowMemory {
            available_bytes: resources.available_memory_bytes,
            total_bytes: resources.total_memory_bytes,
        })
    }

    fn tell_unloaded(&self, ids: &[String], reason: UnloadReason) {
        for id in ids {
            self.events.publish(&ServerEvent::ModelUnloaded {
                model: id.clone(),
                reason: reason.name().to_string(),
            });
        }
    }

    /// The models dir.
    pub fn models_dir(&self) -> &Path {
        &self.config.models_dir
    }

    /// Whether a model is being loaded (Health says `loading`).
    pub fn is_loading(&self) -> bool {
        self.loading.load(Ordering::Acquire) > 0
    }

    /// The loaded model `file`, loading it first if needed. With `reload`,
    /// a model loaded with other options is loaded again with these.
    pub fn acquire(
        &self,
        file: &ModelFile,
        options: LoadOptions,
        reload: bool,
        now: Instant,
    ) -> Result<Arc<Resident>, ApiError> {
        // Fitting reads the GGUF header (milliseconds: a model's vocabulary
        // is in it), so a request for a loaded model does not fit.
        let reload_options = match reload {
            true => Some(self.fit(file, options, &LoadSettings::default())?),
            false => None,
        };
        let mut slots = lock(&self.slots);
        loop {
            match slots.get(&file.id) {
                Some(Slot::Ready(resident))
                    if reload_options.is_none_or(|wanted| resident.options == wanted) =>
                {
                    resident.touch(now);
                    return Ok(Arc::clone(resident));
                }
                Some(Slot::Ready(_)) => {
                    slots.remove(&file.id);
                }
                Some(Slot::Loading) => {
                    slots = self.changed.wait(slots).unwrap_or_else(|p| p.into_inner());
                }
                None => break,
            }
        }
        let options = match reload_options {
            Some(options) => options,
            None => self.fit(file, options, &LoadSettings::default())?,
        };
        let estimate = self.estimate(file, options.context_size)?;
        let evicted = self.make_room(&mut slots, file, estimate.total_bytes)?;
        slots.insert(file.id.clone(), Slot::Loading);
        self.loading.fetch_add(1, Ordering::AcqRel);
        drop(slots);
        let evicted_ids: Vec<String> = evicted.iter().map(|r| r.file.id.clone()).collect();
        drop(evicted); // freeing evicted models happens outside the lock
        self.tell_unloaded(&evicted_ids, UnloadReason::Memory);
        let progress = load_progress(&self.events, &file.id);
        progress(0.0);
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.loader.load(file, &options, Arc::clone(&progress))
        }))
        .unwrap_or_else(|panic| {
            Err(ApiError::internal(format!(
                "loading {} failed: {}",
                file.id,
                crate::jobs::panic_message(&panic)
            )))
        });
        let mut slots = lock(&self.slots);
        self.loading.fetch_sub(1, Ordering::AcqRel);
        let result = loaded.map(|engine| {
            let memory_bytes = match &engine {
                #[cfg(feature = "onnx")]
                Engine::Onnx(model) => model.memory_bytes().max(1),
                _ => estimate.total_bytes,
            };
            let resident = Arc::new(Resident {
                file: file.clone(),
                engine,
                options,
                memory_bytes,
                last_used: Mutex::new(now),
                keep_loaded: AtomicBool::new(false),
            });
            slots.insert(file.id.clone(), Slot::Ready(Arc::clone(&resident)));
            resident
        });
        if result.is_err() {
            slots.remove(&file.id);
        }
        self.changed.notify_all();
        drop(slots);
        if result.is_ok() {
            progress(1.0);
            self.events.publish(&ServerEvent::ModelLoaded {
                model: file.id.clone(),
            });
        }
        result
    }

    /// Unloads a model; false when it was not loaded. A request still using it
    /// keeps it alive until it ends.
    pub fn unload(&self, id: &str, reason: UnloadReason) -> bool {
        let mut slots = lock(&self.slots);
        if !matches!(slots.get(id), Some(Slot::Ready(_))) {
            return false;
        }
        let removed = slots.remove(id);
        drop(slots);
        drop(removed);
        log::info!("unloaded {id} ({})", reason.name());
        self.tell_unloaded(&[id.to_string()], reason);
        true
    }

    /// Whether the model is in memory.
    pub fn is_loaded(&self, id: &str) -> bool {
        matches!(lock(&self.slots).get(id), Some(Slot::Ready(_)))
    }

    /// The loaded model, if it is.
    pub fn resident(&self, id: &str) -> Option<Arc<Resident>> {
        match lock(&self.slots).get(id) {
            Some(Slot::Ready(resident)) => Some(Arc::clone(resident)),
            _ => None,
        }
    }

    /// Models in memory, by id.
    pub fn loaded(&self) -> Vec<Arc<Resident>> {
        let mut models: Vec<_> = lock(&self.slots)
            .values()
            .filter_map(|slot| match slot {
                Slot::Ready(resident) => Some(Arc::clone(resident)),
                Slot::Loading => None,
            })
            .collect();
        models.sort_by(|a, b| a.file.id.cmp(&b.file.id));
        models
    }

    /// Each generation slot's state, by model: a chat model's slots as its
    /// engine reports them (`idle`, `prefill`, `generating`); a model
    /// without slots to show (embeddings) counts as one, `busy` while a
    /// request holds it; a model being loaded has one `loading` slot.
    pub fn slot_states(&self) -> Vec<(String, &'static str)> {
        let mut states = Vec::new();
        for (id, slot) in lock(&self.slots).iter() {
            let resident = match slot {
                Slot::Loading => {
                    states.push((id.clone(), "loading"));
                    continue;
                }
                Slot::Ready(resident) => resident,
            };
            let slots = resident.text().map(|t| t.slots()).unwrap_or_default();
            if slots.is_empty() {
                // The map holds one reference; a request holds another.
                let busy = Arc::strong_count(resident) > 1;
                states.push((id.clone(), if busy { "busy" } else { "idle" }));
            }
            for slot in slots {
                let state = match slot.state {
                    SlotState::Idle => "idle",
                    SlotState::Prefill => "prefill",
                    SlotState::Generating => "generating",
                };
                states.push((id.clone(), state));
            }
        }
        states.sort();
        states
    }

    /// The generation slots a chat model gets when its load does not say.
    pub fn default_parallel(&self) -> u32 {
        match self.config.parallel {
            0 => super::limits::default_parallel(),
            parallel => parallel,
        }
    }

    /// Unloads models nobody uses that have been idle for the keep-alive.
    pub fn unload_idle(&self, now: Instant) -> Vec<String> {
        let keep_alive = self.keep_alive();
        if keep_alive.is_zero() {
            return Vec::new();
        }
        let mut slots = lock(&self.slots);
        let idle: Vec<String> = slots
            .iter()
            .filter_map(|(id, slot)| match slot {
                Slot::Ready(r)
                    if Arc::strong_count(r) == 1
                        && !r.keeps_loaded()
                        && r.idle(now) >= keep_alive =>
                {
                    Some(id.clone())
                }
                _ => None,
            })
            .collect();
        let dropped: Vec<Slot> = idle.iter().filter_map(|id| slots.remove(id)).collect();
        drop(slots);
        drop(dropped);
        for id in &idle {
            log::info!("unloaded {id}: idle for {keep_alive:?}");
        }
        self.tell_unloaded(&idle, UnloadReason::Idle);
        idle
    }
}

/// The longest pause between housekeeping rounds.
const HOUSEKEEPING_TICK: Duration = Duration::from_secs(5);

/// A [`Progress`] that publishes `ModelLoadProgress` for `model`: the start,
/// every 5% and the end, so a load tells at most ~20 events however often the
/// backend reports.
fn load_progress(events: &Arc<EventBus>, model: &str) -> Progress {
    let events = Arc::clone(events);
    let model = model.to_string();
    let last = Mutex::new(f32::NEG_INFINITY);
    Arc::new(move |fraction: f32| {
        let fraction = fraction.clamp(0.0, 1.0);
        let mut last = lock(&last);
        let due = fraction - *last >= 0.05 || (fraction >= 1.0 && *last < 1.0);
        if due {
            *last = fraction;
            events.publish(&ServerEvent::ModelLoadProgress {
                model: model.clone(),
                progress: fraction,
            });
        }
    })
}
