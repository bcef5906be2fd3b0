//! `PARLEY_*` environment variables as settings: the flat contract names of DESIGN.md,
//! `SECTION__KEY` for the rest. The variables are passed in rather than read here, so tests
//! need not change the process environment.

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

use super::keys::Known;

const PREFIX: &str = "PARLEY_";

/// The contract names of DESIGN.md that do not follow the `SECTION__KEY` pattern.
const FLAT_ENV: &[(&str, &str)] = &[
    ("provider", "provider.kind"),
    ("provider_url", "provider.url"),
    ("api_key", "provider.api_key"),
    ("model", "provider.model"),
    ("auth_mode", "auth.mode"),
];

/// Names (after the prefix) that `main.rs` reads itself (`url` and `token` are those of
/// `parley chat`); they are not settings.
const PROCESS_VARS: &[&str] = &["log", "config", "url", "token"];

/// The settings given by `PARLEY_*` variables, as dotted paths and raw text.
pub(super) struct EnvSettings {
    settings: Vec<(String, String)>,
}

impl EnvSettings {
    /// The settings named by `vars`, and a warning for each `PARLEY_*` variable that names
    /// none (it is left out, so it cannot break start-up either).
    pub(super) fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
        known: &Known,
    ) -> (Self, Vec<String>) {
        let mut settings = Vec::new();
        let mut warnings = Vec::new();
        for (name, value) in vars {
            let name = name.trim();
            if !name.get(..PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(PREFIX)) {
                continue;
            }
            let rest = name[PREFIX.len()..].to_ascii_lowercase();
            // Test harness settings (`PARLEY_TEST_POSTGRES_URL`, ...) share the prefix.
            if rest.starts_with("test_") || PROCESS_VARS.contains(&rest.as_str()) {
                continue;
            }
            let path = match FLAT_ENV.iter().find(|(flat, _)| *flat == rest) {
                Some((_, nested)) => (*nested).to_owned(),
                None => rest.replace("__", "."),
            };
            if !path.split('.').any(str::is_empty) && known.contains(&path) {
                settings.push((path, value));
            } else {
                warnings.push(
                    known.describe(&path, &format!("(environment variable {name}), ignored")),
                );
            }
        }
        (Self { settings }, warnings)
    }
}

impl Provider for EnvSettings {
    fn metadata(&self) -> Metadata {
        Metadata::named("`PARLEY_` environment variable(s)")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (path, raw) in &self.settings {
            // Parsed as figment's own `Env` does: numbers, booleans, arrays and tables from
            // their text, anything else as a string.
            let Ok(value) = raw.parse::<Value>();
            let path: Vec<&str> = path.split('.').collect();
            insert(&mut dict, &path, value);
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Puts `value` at `path` in `dict`, making the sections on the way.
fn insert(dict: &mut Dict, path: &[&str], value: Value) {
    match path {
        [] => {}
        [name] => {
            dict.insert((*name).to_owned(), value);
        }
        [section, rest @ ..] => {
            let entry = dict.entry((*section).to_owned()).or_insert_with(|| Dict::new().into());
            if !matches!(entry, Value::Dict(..)) {
                *entry = Dict::new().into();
            }
            if let Value::Dict(_, inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}
