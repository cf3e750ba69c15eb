//! What the machine and this process are: SystemInfo and GetResources.
//!
//! sysinfo reads /proc; the `System` is created lazily on the first request so
//! that start-up pays nothing for it.

use std::sync::{Mutex, OnceLock};

use sysinfo::{
    CpuRefreshKind, MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate, RefreshKind,
    System,
};

use crate::api::{Resources, SystemInfo};
use crate::error::ApiError;
use crate::jobs::lock;

/// A lazily created sysinfo handle.
#[derive(Default)]
pub struct SystemProbe {
    system: OnceLock<Mutex<System>>,
}

impl SystemProbe {
    fn system(&self) -> Result<std::sync::MutexGuard<'_, System>, ApiError> {
        if self.system.get().is_none() {
            let refresh = RefreshKind::nothing()
                .with_memory(MemoryRefreshKind::nothing().with_ram())
                .with_cpu(CpuRefreshKind::nothing());
            let system = System::new_with_specifics(refresh)
                .map_err(|e| ApiError::internal(format!("cannot read system information: {e}")))?;
            let _ = self.system.set(Mutex::new(system));
        }
        // Set just above (by us or by a racing caller).
        Ok(lock(self.system.get().expect("system is set")))
    }

    /// The machine: OS, CPU, memory, GPUs.
    pub fn info(&self) -> Result<SystemInfo, ApiError> {
        let mut system = self.system()?;
        system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        let cpu_model = system
            .cpus()
            .first()
            .map(|c| c.brand().trim().to_string())
            .unwrap_or_default();
        Ok(SystemInfo {
            os: System::long_os_version()
                .or_else(|_| System::name())
                .unwrap_or_else(|_| std::env::consts::OS.into()),
            kernel: System::kernel_version().ok(),
            arch: std::env::consts::ARCH.to_string(),
            cpu_model,
            cpu_features: cpu_features(),
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            physical_cores: System::physical_core_count().ok(),
            total_memory_bytes: system.total_memory(),
            available_memory_bytes: system.available_memory(),
            gpus: gpus(),
            upstreams: Vec::new(),
        })
    }

    /// This process's memory and CPU, and the machine's memory.
    pub fn resources(&self) -> Result<Resources, ApiError> {
        let mut system = self.system()?;
        system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        let pid = Pid::from_u32(std::process::id());
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            false,
            ProcessRefreshKind::nothing().with_memory().with_cpu(),
        );
        let (rss, cpu) = system
            .process(pid)
            .map(|p| (p.memory(), p.cpu_usage()))
            .unwrap_or((0, 0.0));
        Ok(Resources {
            process_rss_bytes: rss,
            process_cpu_percent: cpu,
            total_memory_bytes: system.total_memory(),
            available_memory_bytes: system.available_memory(),
        })
    }

    /// This process's resident bytes and CPU time in milliseconds.
    pub fn process_usage(&self) -> Result<(u64, u64), ApiError> {
        let mut system = self.system()?;
        let pid = Pid::from_u32(std::process::id());
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            false,
            ProcessRefreshKind::nothing().with_memory().with_cpu(),
        );
        system
            .process(pid)
            .map(|p| (p.memory(), p.accumulated_cpu_time()))
            .ok_or_else(|| ApiError::internal("cannot read this process's usage"))
    }

    /// Bytes of RAM available to new allocations now.
    pub fn available_memory(&self) -> Result<u64, ApiError> {
        let mut system = self.system()?;
        system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        Ok(system.available_memory())
    }
}

/// SIMD features that decide how fast inference runs here.
pub fn cpu_features() -> Vec<String> {
    #[allow(unused_mut)] // empty on architectures we do not probe
    let mut features: Vec<&str> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($name:tt),*) => { $( if std::arch::is_x86_feature_detected!($name) { features.push($name); } )* };
        }
        probe!(
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vnni",
            "avxvnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! probe {
            ($($name:tt),*) => { $( if std::arch::is_aarch64_feature_detected!($name) { features.push($name); } )* };
        }
        probe!("neon", "dotprod", "fp16", "i8mm", "sve");
    }
    features.into_iter().map(String::from).collect()
}

/// Display adapters the kernel knows (Linux); other systems report none.
fn gpus() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/class/drm") else {
        return Vec::new();
    };
    let mut gpus: Vec<String> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_card = name.starts_with("card") && !name.contains('-');
            let vendor = std::fs::read_to_string(entry.path().join("device/vendor")).ok()?;
            is_card.then(|| format!("{name} (vendor {})", vendor.trim()))
        })
        .collect();
    gpus.sort();
    gpus
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_this_machine() {
        let probe = SystemProbe::default();
        let info = probe.info().unwrap();
        assert!(info.cores >= 1);
        assert!(info.total_memory_bytes > info.available_memory_bytes / 2);
        assert_eq!(info.arch, std::env::consts::ARCH);
        let resources = probe.resources().unwrap();
        assert!(resources.process_rss_bytes > 1 << 20, "{resources:?}");
    }
}
