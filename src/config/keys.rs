//! Which settings exist, read off the [`Config`] structs themselves (their defaults,
//! serialized), so a new field is known without a list to update, and a name that is not
//! a setting is reported with the nearest one that is.

use figment::value::{Dict, Value};
use serde_json::Value as Json;

use super::{Config, FREE_FORM_MAPS};

/// The tree of settings: sections are objects, settings are leaves.
pub(super) struct Known {
    tree: Json,
    /// Every section and setting as a dotted path, the candidates for a suggestion.
    paths: Vec<String>,
}

impl Known {
    /// The settings of [`Config`].
    pub(super) fn new() -> Self {
        // The defaults are strings, numbers, lists and string-keyed maps, which serde_json
        // always serializes; an empty tree would only make every name unknown.
        let tree = serde_json::to_value(Config::default()).unwrap_or_default();
        let mut paths = Vec::new();
        collect_paths(&tree, "", &mut paths);
        Self { tree, paths }
    }

    /// Whether the dotted `path` is a section, a setting, or a key of a free-form map.
    pub(super) fn contains(&self, path: &str) -> bool {
        let mut node = &self.tree;
        let mut walked = String::new();
        for segment in path.split('.') {
            if is_free_form(&walked) {
                return true;
            }
            // A leaf has no children: `listen.port` is not a setting.
            let Some(child) = node.as_object().and_then(|map| map.get(segment)) else {
                return false;
            };
            node = child;
            walked = join(&walked, segment);
        }
        true
    }

    /// The dotted paths in `dict` (a parsed file) that are not settings. A name under an
    /// unknown section is not listed on its own: the section is.
    pub(super) fn unknown_in(&self, dict: &Dict) -> Vec<String> {
        let mut unknown = Vec::new();
        walk(&self.tree, "", dict, &mut unknown);
        unknown
    }

    /// The message for the unknown setting `path`, found in `source`.
    pub(super) fn describe(&self, path: &str, source: &str) -> String {
        match self.nearest(path) {
            Some(near) => format!("unknown setting `{path}` {source}; did you mean `{near}`?"),
            None => format!("unknown setting `{path}` {source}"),
        }
    }

    /// The known path closest to `path`, if any is close: by the whole path (a typo), or
    /// by its last name (the right setting in the wrong section), whichever is nearer.
    fn nearest(&self, path: &str) -> Option<&str> {
        let limit = (last(path).chars().count() / 3).max(1);
        self.paths
            .iter()
            .map(|known| {
                let whole = distance(path, known);
                let moved = distance(last(path), last(known)) + 1;
                (whole.min(moved), known)
            })
            .filter(|(score, _)| *score <= limit)
            .min()
            .map(|(_, known)| known.as_str())
    }
}

fn walk(known: &Json, prefix: &str, dict: &Dict, unknown: &mut Vec<String>) {
    for (key, value) in dict {
        let path = join(prefix, key);
        match known.get(key) {
            None => unknown.push(path),
            Some(section @ Json::Object(_)) if !is_free_form(&path) => {
                // A value of the wrong shape is left to extraction, which names the type.
                if let Value::Dict(_, inner) = value {
                    walk(section, &path, inner, unknown);
                }
            }
            Some(_) => {}
        }
    }
}

fn collect_paths(node: &Json, prefix: &str, paths: &mut Vec<String>) {
    let Some(map) = node.as_object() else { return };
    for (key, child) in map {
        let path = join(prefix, key);
        if !is_free_form(&path) {
            collect_paths(child, &path, paths);
        }
        paths.push(path);
    }
}

fn is_free_form(path: &str) -> bool {
    FREE_FORM_MAPS.contains(&path)
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") }
}

fn last(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// Levenshtein distance: the fewest one-character insertions, deletions and substitutions
/// that turn `a` into `b`.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = Vec::with_capacity(b.len() + 1);
        current.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("turns_per_minit", "turns_per_minute"), 2);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("same", "same"), 0);
    }

    #[test]
    fn suggests_the_nearest_setting_or_nothing() {
        let known = Known::new();
        assert_eq!(known.nearest("limits.turns_per_minit"), Some("limits.turns_per_minute"));
        assert_eq!(known.nearest("limitz"), Some("limits"));
        assert_eq!(known.nearest("agent.shell_timeout_secs"), Some("tools.shell_timeout_secs"));
        assert_eq!(known.nearest("completely_unrelated"), None);
        assert_eq!(known.nearest("zzz.qqq"), None);
    }

    #[test]
    fn knows_settings_sections_and_map_keys() {
        let known = Known::new();
        for path in ["listen", "limits", "limits.turns_per_minute", "agent.page_hints.any-page"] {
            assert!(known.contains(path), "{path}");
        }
        assert!(known.contains("tools.approval.list_dir"), "any tool may get a policy");
        for path in ["limits.turns_per_minit", "listen.port", "nope", "agent.page_hint"] {
            assert!(!known.contains(path), "{path}");
        }
    }

    /// Every field that takes keys of the user's choosing (a map) is in [`FREE_FORM_MAPS`],
    /// and nothing else is: a key added under each object of the defaults survives a round
    /// trip through [`Config`] exactly when that object is a map.
    #[test]
    fn free_form_maps_are_exactly_the_map_fields() {
        let defaults = serde_json::to_value(Config::default()).unwrap();
        let mut objects = Vec::new();
        collect_objects(&defaults, "", &mut objects);
        assert!(objects.len() > 5, "{objects:?}");
        for path in objects {
            assert_eq!(
                is_free_form(&path),
                takes_any_key(&defaults, &path),
                "`{path}`: a map field must be listed in FREE_FORM_MAPS, and only a map field"
            );
        }
    }

    fn collect_objects(node: &Json, prefix: &str, objects: &mut Vec<String>) {
        let Some(map) = node.as_object() else { return };
        for (key, child) in map {
            if child.is_object() {
                let path = join(prefix, key);
                collect_objects(child, &path, objects);
                objects.push(path);
            }
        }
    }

    fn takes_any_key(defaults: &Json, path: &str) -> bool {
        let pointer = format!("/{}", path.replace('.', "/"));
        // A value of the map's own type if it has entries; otherwise one of each shape.
        let existing = defaults.pointer(&pointer).and_then(Json::as_object).unwrap();
        let mut samples = existing.values().next().cloned().into_iter().chain([
            json!("x"),
            json!(1),
            json!(true),
            json!({}),
            json!([]),
        ]);
        samples.any(|sample| {
            let mut probe = defaults.clone();
            let object = probe.pointer_mut(&pointer).and_then(Json::as_object_mut).unwrap();
            object.insert("zz_probe".into(), sample);
            serde_json::from_value::<Config>(probe)
                .ok()
                .and_then(|config| serde_json::to_value(config).ok())
                .is_some_and(|back| back.pointer(&format!("{pointer}/zz_probe")).is_some())
        })
    }
}
