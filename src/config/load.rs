//! Where the settings come from: `parley.toml` < `PARLEY_*` environment < flags, with a
//! name that is not a setting refused in the file and warned about in the environment.

use std::collections::BTreeMap;
use std::path::Path;

use figment::providers::{Format, Serialized, Toml};
use figment::{Figment, Provider};

use super::Config;
use super::env::EnvSettings;
use super::keys::Known;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file does not parse, or a value has the wrong type (figment's message).
    #[error(transparent)]
    Invalid(#[from] Box<figment::Error>),
    /// The file names settings that do not exist; one message per name.
    #[error("{}", .0.join("\n"))]
    UnknownSettings(Vec<String>),
}

impl Config {
    /// Loads `file` (if it exists), then the `PARLEY_*` environment, then `overrides`
    /// (flags). Returns the configuration and a warning for each `PARLEY_*` variable that
    /// names no setting; an unknown name in the file is an error.
    pub fn load(
        file: &Path,
        overrides: &BTreeMap<String, String>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let vars = std::env::vars_os().map(|(name, value)| {
            (name.to_string_lossy().into_owned(), value.to_string_lossy().into_owned())
        });
        Self::load_from(file, vars, overrides)
    }

    /// [`Config::load`] with the environment passed in.
    fn load_from(
        file: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
        overrides: &BTreeMap<String, String>,
    ) -> Result<(Self, Vec<String>), ConfigError> {
        let known = Known::new();
        let source = format!("in {}", file.display());
        let unknown: Vec<String> = Toml::file(file)
            .data()
            .map_err(Box::new)?
            .values()
            .flat_map(|dict| known.unknown_in(dict))
            .map(|path| known.describe(&path, &source))
            .collect();
        if !unknown.is_empty() {
            return Err(ConfigError::UnknownSettings(unknown));
        }
        let (env, warnings) = EnvSettings::from_vars(vars, &known);
        let mut figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::file(file))
            .merge(env);
        for (key, value) in overrides {
            figment = figment.merge(Serialized::default(key, value));
        }
        let config = figment.extract().map_err(Box::new)?;
        Ok((config, warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LimitsConfig;

    /// Loads `toml` as the file, with `vars` as the whole environment and no flags.
    fn load_with(toml: &str, vars: &[(&str, &str)]) -> Result<(Config, Vec<String>), ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("parley.toml");
        std::fs::write(&file, toml).unwrap();
        let vars = vars.iter().map(|(name, value)| (name.to_string(), value.to_string()));
        Config::load_from(&file, vars, &BTreeMap::new())
    }

    #[test]
    fn an_unknown_key_in_the_file_is_refused_naming_the_nearest_one() {
        let err = load_with("[limits]\nturns_per_minit = 5\n", &[]).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownSettings(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("unknown setting `limits.turns_per_minit`"), "{text}");
        assert!(text.contains("parley.toml"), "{text}");
        assert!(text.contains("did you mean `limits.turns_per_minute`?"), "{text}");
    }

    #[test]
    fn an_unknown_section_is_refused_once() {
        let text = load_with("[limitz]\nturns_per_minute = 5\nmax_body_bytes = 1\n", &[])
            .unwrap_err()
            .to_string();
        assert_eq!(text.matches("unknown setting").count(), 1, "{text}");
        assert!(text.contains("`limitz`") && text.contains("did you mean `limits`?"), "{text}");

        let text =
            load_with("listen = \"127.0.0.1:1\"\n[qqqzzz]\nx = 1\n", &[]).unwrap_err().to_string();
        assert!(text.contains("unknown setting `qqqzzz`"), "{text}");
        assert!(!text.contains("did you mean"), "nothing is close: {text}");
    }

    #[test]
    fn keys_of_map_settings_are_accepted() {
        let toml = "[agent.page_hints]\n\"/settings\" = \"the settings page\"\n\n\
                    [tools.approval]\nlist_dir = \"ask\"\n";
        let (config, warnings) = load_with(toml, &[]).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.agent.page_hints["/settings"], "the settings page");
        assert_eq!(config.tools.approval["list_dir"], "ask");
    }

    #[test]
    fn an_unknown_environment_variable_is_a_warning_not_an_error() {
        let vars = [("PARLEY_LIMITS__TURNS_PER_MINIT", "5"), ("PARLEY_FUZZ_SECS", "0")];
        let (config, warnings) = load_with("", &vars).unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        let typo = warnings.iter().find(|w| w.contains("turns_per_minit")).unwrap();
        assert!(typo.contains("unknown setting `limits.turns_per_minit`"), "{typo}");
        assert!(typo.contains("PARLEY_LIMITS__TURNS_PER_MINIT"), "{typo}");
        assert!(typo.contains("did you mean `limits.turns_per_minute`?"), "{typo}");
        assert_eq!(config.limits.turns_per_minute, LimitsConfig::default().turns_per_minute);
    }

    #[test]
    fn contract_and_section_names_are_known_and_applied() {
        let vars = [
            ("PARLEY_PROVIDER_URL", "http://127.0.0.1:9/v1"),
            ("PARLEY_AUTH_MODE", "none"),
            ("PARLEY_AGENT__MAX_ITERATIONS", "9"),
            ("PARLEY_AUTH__TLS_TERMINATED", "true"),
            ("PARLEY_AGENT__PAGE_HINTS__CHAT", "hint"),
            ("PARLEY_LOG", "debug"),
            ("PARLEY_CONFIG", "other.toml"),
            ("PARLEY_TEST_POSTGRES_URL", "postgres://x"),
            ("HOME", "/root"),
        ];
        let (config, warnings) =
            load_with("[agent]\nmax_iterations = 7\nsystem_prompt = \"hi\"\n", &vars).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(config.provider.url.as_deref(), Some("http://127.0.0.1:9/v1"));
        assert_eq!(config.auth.mode, "none");
        assert_eq!(config.agent.max_iterations, 9, "the environment beats the file");
        assert_eq!(config.agent.system_prompt, "hi", "the rest of the file still applies");
        assert!(config.auth.tls_terminated);
        assert_eq!(config.agent.page_hints["chat"], "hint");
    }

    #[test]
    fn a_missing_file_means_the_defaults() {
        let vars = std::iter::empty();
        let (config, warnings) =
            Config::load_from(Path::new("/nonexistent/parley.toml"), vars, &BTreeMap::new())
                .unwrap();
        assert!(warnings.is_empty());
        assert_eq!(config.listen, Config::default().listen);
    }
}
