//! The Markdown report: a header, one `## ` section per measurement, then the hand-written
//! analysis, which a re-run keeps. A run of some sections (`--only`) replaces just those
//! in the file.

/// The file's hand-written part starts at this heading.
const ANALYSIS: &str = "\n## Analysis";

/// The text of a file that held `previous` after a full run that produced `report`: the
/// new measurements, and the old analysis.
pub fn full(previous: &str, report: &str) -> String {
    let analysis = previous.find(ANALYSIS).map_or("", |at| &previous[at..]);
    format!("{report}{analysis}")
}

/// The text of a file that held `previous` after a run of some sections produced
/// `sections` (each starting with `\n## `): each replaces the section of the same title,
/// or goes after the last measured one; the rest of the file stays as it was.
pub fn merge(previous: &str, sections: &str) -> String {
    let (measured, analysis) = previous.split_at(previous.find(ANALYSIS).unwrap_or(previous.len()));
    let (header, mut blocks) = split(measured);
    for section in split(sections).1 {
        match blocks.iter_mut().find(|block| title(block) == title(section)) {
            Some(block) => *block = section,
            None => blocks.push(section),
        }
    }
    format!("{header}{}{analysis}", blocks.concat())
}

/// Marks each section of `sections` as measured apart from the rest, by `command` on `date`.
pub fn noted(sections: &str, date: &str, command: &str) -> String {
    let note = format!(
        "Measured on its own on {date} (`{command}`), not in the run the header describes.\n\n"
    );
    split(sections)
        .1
        .into_iter()
        .map(|section| {
            // After the heading line and its blank line.
            let at = section[1..].find("\n\n").map_or(section.len(), |i| i + 3);
            format!("{}{note}{}", &section[..at], &section[at..])
        })
        .collect()
}

/// The text before the first section, and the sections (each from its `\n## `).
fn split(text: &str) -> (&str, Vec<&str>) {
    let starts: Vec<usize> = text.match_indices("\n## ").map(|(at, _)| at).collect();
    let Some(&first) = starts.first() else { return (text, Vec::new()) };
    let ends = starts.iter().skip(1).copied().chain([text.len()]);
    (&text[..first], starts.iter().zip(ends).map(|(&start, end)| &text[start..end]).collect())
}

/// A section's title: its heading without the parameters in parentheses.
fn title(section: &str) -> &str {
    let heading = section.trim_start_matches('\n').lines().next().unwrap_or_default();
    heading.split(" (").next().unwrap_or(heading).trim()
}

// The bench binary is not among `cargo test`'s default targets (`test = false`):
// `cargo test --bin parley-bench` runs these.
#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# Benchmarks\n\nMachine.\n\n## A (1 run)\n\n| a |\n\n## B\n\n| b |\n\n## Analysis\n\nWords.\n";

    #[test]
    fn a_partial_run_replaces_its_sections_and_keeps_the_rest() {
        let merged = merge(FILE, "\n## B\n\n| new b |\n\n## C (2 s)\n\n| c |\n");
        assert_eq!(
            merged,
            "# Benchmarks\n\nMachine.\n\n## A (1 run)\n\n| a |\n\n## B\n\n| new b |\n\n## C (2 s)\n\n| c |\n\n## Analysis\n\nWords.\n"
        );
        // A section's parameters may change between runs; its title finds it.
        let again = merge(&merged, "\n## C (9 s)\n\n| c9 |\n");
        assert!(again.contains("## C (9 s)\n\n| c9 |\n\n## Analysis") && !again.contains("| c |"));
    }

    #[test]
    fn a_full_run_keeps_the_analysis() {
        assert_eq!(full(FILE, "# New\n"), "# New\n\n## Analysis\n\nWords.\n");
    }

    #[test]
    fn a_note_goes_under_each_heading() {
        let noted = noted("\n## C (2 s)\n\n| c |\n", "2026-01-02", "parley-bench --only c");
        assert_eq!(
            noted,
            "\n## C (2 s)\n\nMeasured on its own on 2026-01-02 (`parley-bench --only c`), not in \
             the run the header describes.\n\n| c |\n"
        );
    }
}
