//! `ecs-gitops validate`: lint desired-state files before they merge.
//!
//! Reads files or folders from the working tree (it is a pre-merge check, so it looks at what
//! the pull request contains), validates each file alone, then checks promotions across the
//! files of each folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::desired::yaml::{Location, MAX_FILE_BYTES};
use crate::desired::{self, DesiredState, Problem};

#[derive(Debug, Default)]
pub struct Report {
    pub files: usize,
    pub problems: Vec<Problem>,
}

/// Validates `paths` (files or folders; a folder means its `*.yaml`/`*.yml` files).
/// An unreadable path is a problem at 1:1 of that path.
pub fn validate_paths(paths: &[PathBuf]) -> Report {
    let mut report = Report::default();
    // Cross-file checks are per folder: a folder is one repository's set of environments.
    let mut by_folder: BTreeMap<PathBuf, Vec<(PathBuf, DesiredState)>> = BTreeMap::new();
    for path in paths {
        let files = match expand(path) {
            Ok(f) => f,
            Err(message) => {
                report.problems.push(Problem {
                    path: path.clone(),
                    at: Location { line: 1, col: 1 },
                    message,
                });
                continue;
            }
        };
        let whole_folder = path.is_dir();
        for file in files {
            report.files += 1;
            match read_bounded(&file) {
                Err(message) => report.problems.push(Problem {
                    path: file.clone(),
                    at: Location { line: 1, col: 1 },
                    message,
                }),
                Ok(text) => match desired::parse(&file, &text) {
                    Ok(state) if whole_folder => by_folder
                        .entry(path.clone())
                        .or_default()
                        .push((file, state)),
                    Ok(_) => {}
                    Err(p) => report.problems.extend(p),
                },
            }
        }
    }
    for states in by_folder.values() {
        report.problems.extend(desired::check_set(states));
    }
    report
}

fn expand(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("cannot read folder: {e}"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && desired::is_desired_state_file(p))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(
                "no *.yaml files in this folder; point at the desired-state folder or its files"
                    .into(),
            );
        }
        Ok(files)
    } else if path.exists() {
        Ok(vec![path.to_path_buf()])
    } else {
        Err("no such file or folder".into())
    }
}

fn read_bounded(path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read file: {e}"))?;
    if meta.len() > MAX_FILE_BYTES as u64 {
        return Err(format!(
            "file is {} bytes, over the {MAX_FILE_BYTES} byte limit for a desired-state file; split it or remove what is not needed",
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read file: {e}"))?;
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "file is not UTF-8 (invalid byte at offset {}); save it as UTF-8",
            e.utf8_error().valid_up_to()
        )
    })
}
