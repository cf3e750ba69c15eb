//! SIGHUP: read the settings again (the config file, over the same command
//! line and environment) and apply what can change while serving — the log
//! filter, the origins, the rate limits, the keep-alive, the memory budget
//! and the API key — logging what changed and what waits for a restart. A
//! file that does not read, or settings that would not start, are refused
//! whole: nothing changes, and the old settings stay.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::KeySource;
use crate::cli::Args;
use crate::config::Config;
use crate::handler::Handler;
use crate::logging::Logger;
use crate::ratelimit::RateSettings;
use crate::transport::http::guard::Guard;

/// Settings applied on the spot; every other one needs a restart.
const LIVE: &[&str] = &[
    "log",
    "cors_origins",
    "rate_limit",
    "generations_per_client",
    "webrtc_offers_per_minute",
    "keep_alive",
    "memory_budget",
    "api_key",
    "api_key_file",
    "require_key",
];

/// What a reload reaches.
pub struct Reloader {
    args: Args,
    config: Config,
    logger: Arc<Logger>,
    handler: Arc<Handler>,
    guard: Option<Arc<Guard>>,
}

impl Reloader {
    /// A reloader for a server started from `args` with `config`.
    pub fn new(
        args: Args,
        config: Config,
        logger: Arc<Logger>,
        handler: Arc<Handler>,
        guard: Option<Arc<Guard>>,
    ) -> Reloader {
        Reloader {
            args,
            config,
            logger,
            handler,
            guard,
        }
    }

    /// Reads the settings again and applies them; returns the new key
    /// source when the key's settings changed (the native port hands it out).
    pub fn reload(&mut self) -> Option<Arc<KeySource>> {
        match self.try_reload() {
            Ok(key) => key,
            Err(e) => {
                log::error!("the settings were not reloaded: {e}; the old settings stay");
                None
            }
        }
    }

    fn try_reload(&mut self) -> Result<Option<Arc<KeySource>>, String> {
        let new = crate::run::load_config(&self.args)?;
        crate::logging::check_filter(&new.log)?;
        crate::run::check_exposure(&new)?;
        let changed = self.config.differences(&new);
        if changed.is_empty() {
            log::info!("reloaded the settings: nothing changed");
            return Ok(None);
        }
        let key_changed = ["api_key", "api_key_file", "require_key"]
            .iter()
            .any(|k| changed.contains(k));
        // Everything that can fail comes before the first change.
        let key = match key_changed {
            true => Some(Arc::new(KeySource::from_config(&new)?)),
            false => None,
        };
        self.logger.set_filter(&new.log);
        self.handler
            .limiter()
            .set(rate_settings(&new, self.handler.generation_slots()));
        self.handler
            .models()
            .set_limits(new.memory_budget, Duration::from_secs(new.keep_alive.0));
        if let Some(guard) = &self.guard {
            guard.set_cors_origins(new.cors_origins.0.clone());
            if let Some(key) = &key {
                guard.set_key(new.require_key.then(|| Arc::clone(key)));
            }
        }
        let (live, restart): (Vec<&str>, Vec<&str>) =
            changed.into_iter().partition(|name| LIVE.contains(name));
        if !live.is_empty() {
            log::info!("reloaded the settings: applied {}", live.join(", "));
        }
        if !restart.is_empty() {
            log::warn!(
                "reloaded the settings: {} changed, which takes a restart",
                restart.join(", ")
            );
        }
        // What a restart would apply stays as it was, so it is told again
        // on the next reload.
        let mut applied = new;
        for name in restart_fields(&self.config, &mut applied) {
            log::debug!("{name} keeps its value until a restart");
        }
        self.config = applied;
        Ok(key)
    }
}

/// Puts back in `new` the old values of the settings that need a restart
/// (so the config in force says what really runs); returns their names.
fn restart_fields(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut kept = old.clone();
    kept.log = new.log.clone();
    kept.cors_origins = new.cors_origins.clone();
    kept.rate_limit = new.rate_limit;
    kept.generations_per_client = new.generations_per_client;
    kept.webrtc_offers_per_minute = new.webrtc_offers_per_minute;
    kept.keep_alive = new.keep_alive;
    kept.memory_budget = new.memory_budget;
    kept.api_key = new.api_key.clone();
    kept.api_key_file = new.api_key_file.clone();
    kept.require_key = new.require_key;
    let names = new.differences(&kept);
    *new = kept;
    names
}

/// The rate limits a config asks for; `generations_per_client = 0` is
/// twice the generation slots.
pub fn rate_settings(config: &Config, slots: usize) -> RateSettings {
    let generations = match config.generations_per_client {
        0 => u32::try_from(slots.saturating_mul(2)).unwrap_or(u32::MAX),
        n => n,
    };
    RateSettings {
        requests_per_second: config.rate_limit,
        offers_per_minute: config.webrtc_offers_per_minute,
        generations_per_client: generations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Layer;

    fn config(file: &str) -> Config {
        let layer: Layer = toml::from_str(file).unwrap();
        Config::from_layers(
            Layer::default(),
            Layer::default(),
            layer,
            Some(std::path::Path::new("/h")),
            None,
        )
    }

    #[test]
    fn settings_that_need_a_restart_keep_their_old_values() {
        let old = config("log = \"info\"\nbind = \"127.0.0.1:1\"");
        let mut new = config("log = \"debug\"\nbind = \"127.0.0.1:2\"");
        assert_eq!(old.differences(&new), vec!["bind", "log"]);
        assert_eq!(restart_fields(&old, &mut new), vec!["bind"]);
        assert_eq!(new.bind.port(), 1);
        assert_eq!(new.log, "debug");
        assert!(LIVE.contains(&"log") && !LIVE.contains(&"bind"));
    }

    #[test]
    fn the_generation_cap_defaults_to_twice_the_slots() {
        let settings = rate_settings(&config(""), 3);
        assert_eq!(settings.generations_per_client, 6);
        assert_eq!(settings.offers_per_minute, 10);
        let settings = rate_settings(&config("generations_per_client = 1"), 3);
        assert_eq!(settings.generations_per_client, 1);
    }
}
