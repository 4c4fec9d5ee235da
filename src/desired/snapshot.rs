//! The desired state of every environment at one commit: each file parsed and checked, with
//! the same rules whatever the source (git or GitHub's contents API).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::yaml::{Location, MAX_FILE_BYTES};
use super::{DesiredState, Problem};
use crate::desired;

/// One environment's file at a revision.
#[derive(Debug, Clone)]
pub enum FileState {
    Valid(Box<DesiredState>),
    Invalid(Vec<Problem>),
}

/// The desired state of every environment at one commit.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub revision: String,
    pub files: BTreeMap<String, FileState>,
}

impl Snapshot {
    pub fn valid(&self, env: &str) -> Option<&DesiredState> {
        match self.files.get(env) {
            Some(FileState::Valid(d)) => Some(d),
            _ => None,
        }
    }
}

/// Collects the files of one revision into a `Snapshot`, with the same checks whatever the
/// source (git or GitHub's contents API).
#[derive(Default)]
pub struct SnapshotBuilder {
    files: BTreeMap<String, FileState>,
    parsed: Vec<(PathBuf, DesiredState)>,
}

impl SnapshotBuilder {
    /// Records a file as refused without reading it (a symbolic link, say).
    pub fn refuse(&mut self, rel: PathBuf, message: String) {
        self.invalid(rel, message)
    }

    fn invalid(&mut self, rel: PathBuf, message: String) {
        let env = desired::stem_of(&rel);
        self.files.insert(
            env,
            FileState::Invalid(vec![Problem {
                path: rel,
                at: Location { line: 1, col: 1 },
                message,
            }]),
        );
    }

    /// Records a file over the size limit as invalid, before it is read; true if it was.
    pub fn too_large(&mut self, rel: &Path, size: usize) -> bool {
        if size <= MAX_FILE_BYTES {
            return false;
        }
        self.invalid(
            rel.to_path_buf(),
            format!("file is {size} bytes, over the {MAX_FILE_BYTES} byte limit for a desired-state file"),
        );
        true
    }

    /// Parses and validates one file's bytes (`None`: the source could not decode them).
    pub fn add(&mut self, rel: PathBuf, bytes: Option<Vec<u8>>) {
        let Some(text) = bytes.and_then(|b| String::from_utf8(b).ok()) else {
            return self.invalid(rel, "file is not UTF-8 text; save it as UTF-8".into());
        };
        let env = desired::stem_of(&rel);
        let state = match desired::parse(&rel, &text) {
            Ok(s) => {
                self.parsed.push((rel, s.clone()));
                FileState::Valid(Box::new(s))
            }
            Err(p) => FileState::Invalid(p),
        };
        self.files.insert(env, state);
    }

    /// Promotion problems across files (`desired::check_set`) make the files that have them
    /// invalid.
    pub fn finish(mut self, revision: String) -> Snapshot {
        for problem in desired::check_set(&self.parsed) {
            let env = desired::stem_of(&problem.path);
            match self.files.get_mut(&env) {
                Some(FileState::Invalid(p)) => p.push(problem),
                Some(slot) => *slot = FileState::Invalid(vec![problem]),
                None => {}
            }
        }
        Snapshot {
            revision,
            files: self.files,
        }
    }
}
