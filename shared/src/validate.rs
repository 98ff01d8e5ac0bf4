//! What a check of record files can find, with file and line, and the checks
//! of whole files against the ids they must hold.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::ids::IdKey;
use crate::input::{self, InputError};
use crate::records::{id_from_text, record_id_text, Lines, RecordError};

/// How many ids a "missing" problem prints before it summarises.
const IDS_SHOWN: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub kind: ProblemKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// A last line without its newline: a crash mid-write. It is ignored.
    TornLine,
    Invalid(RecordError),
    /// A record for an id this file should not hold.
    UnexpectedId(IdKey),
    /// A second record for an id; the first one is kept.
    Duplicate {
        id: IdKey,
        first_line: usize,
    },
    /// A merged file whose records are not in input order.
    OutOfOrder {
        id: IdKey,
    },
    /// Expected ids without a record (`no_file`: the whole file is absent).
    Missing {
        ids: Vec<IdKey>,
        no_file: bool,
    },
    /// A JSON array file that cannot be read as records at all.
    Unreadable(String),
}

impl Problem {
    /// A torn line is expected after a crash and is not itself an error: the
    /// item it would have held is reported as missing if nobody redid it.
    pub fn is_error(&self) -> bool {
        !matches!(self.kind, ProblemKind::TornLine)
    }

    /// Number of items this problem leaves missing.
    pub fn missing_count(&self) -> usize {
        match &self.kind {
            ProblemKind::Missing { ids, .. } => ids.len(),
            _ => 0,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        match &self.kind {
            ProblemKind::TornLine => f.write_str("torn last line (cut off by a crash), ignored"),
            ProblemKind::Invalid(e) => write!(f, "invalid record: {e}"),
            ProblemKind::UnexpectedId(id) => {
                write!(f, "record for id {id}, which this file should not hold")
            }
            ProblemKind::Duplicate { id, first_line } => {
                write!(
                    f,
                    "duplicate record for id {id} (first at line {first_line}, which is kept)"
                )
            }
            ProblemKind::OutOfOrder { id } => write!(f, "record for id {id} is out of input order"),
            ProblemKind::Missing { ids, no_file } => {
                if *no_file {
                    f.write_str("file not found; ")?;
                }
                write!(f, "{} missing id(s): ", ids.len())?;
                let shown: Vec<&str> = ids.iter().take(IDS_SHOWN).map(IdKey::as_str).collect();
                f.write_str(&shown.join(", "))?;
                if ids.len() > IDS_SHOWN {
                    write!(f, ", …")?;
                }
                Ok(())
            }
            ProblemKind::Unreadable(e) => f.write_str(e),
        }
    }
}

/// A JSONL record file checked against the ids it must hold.
pub struct CheckedFile {
    pub bytes: Vec<u8>,
    /// (index in the expected ids, byte range of the record), in expected order.
    pub records: Vec<(usize, Range<usize>)>,
    pub problems: Vec<Problem>,
}

impl CheckedFile {
    pub fn record_bytes(&self) -> impl Iterator<Item = &[u8]> {
        self.records.iter().map(|(_, r)| &self.bytes[r.clone()])
    }
}

/// Reads a JSONL record file and checks it against `expected` (in input order).
/// `require_order`: records out of input order are a problem (merged files).
/// A missing file is a problem, not an error; other I/O failures are errors.
pub fn check_jsonl(
    path: &Path,
    expected: &[IdKey],
    id_field: &str,
    require_order: bool,
) -> io::Result<CheckedFile> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let problems = vec![Problem {
                path: path.to_owned(),
                line: None,
                kind: ProblemKind::Missing {
                    ids: expected.to_vec(),
                    no_file: true,
                },
            }];
            return Ok(CheckedFile {
                bytes: Vec::new(),
                records: Vec::new(),
                problems,
            });
        }
        Err(e) => return Err(e),
    };
    Ok(check_bytes(path, bytes, expected, id_field, require_order))
}

/// The checks of [`check_jsonl`] on bytes already read.
fn check_bytes(
    path: &Path,
    bytes: Vec<u8>,
    expected: &[IdKey],
    id_field: &str,
    require_order: bool,
) -> CheckedFile {
    // Records are usually in expected order: compare with the next expected id
    // first, and build the lookup table only when that guess misses.
    let mut position: Option<HashMap<&str, usize>> = None;
    let mut seen_at: Vec<usize> = vec![0; expected.len()];
    let mut records = Vec::with_capacity(expected.len());
    let mut problems = Vec::new();
    let lines = Lines::new(&bytes);
    let mut last_index: Option<usize> = None;
    for (line, range) in lines.iter() {
        let problem = |kind| Problem {
            path: path.to_owned(),
            line: Some(line),
            kind,
        };
        let raw = match record_id_text(&bytes[range.clone()], id_field) {
            Ok(raw) => raw,
            Err(e) => {
                problems.push(problem(ProblemKind::Invalid(e)));
                continue;
            }
        };
        let guess = last_index.map_or(0, |i| i + 1);
        let index = if expected.get(guess).is_some_and(|id| id.as_str() == raw) {
            guess
        } else {
            let id = match id_from_text(raw) {
                Ok(id) => id,
                Err(e) => {
                    problems.push(problem(ProblemKind::Invalid(e)));
                    continue;
                }
            };
            let table = position.get_or_insert_with(|| {
                expected
                    .iter()
                    .enumerate()
                    .map(|(i, id)| (id.as_str(), i))
                    .collect()
            });
            match table.get(id.as_str()) {
                Some(&index) => index,
                None => {
                    problems.push(problem(ProblemKind::UnexpectedId(id)));
                    continue;
                }
            }
        };
        let id = || expected[index].clone();
        if seen_at[index] != 0 {
            problems.push(problem(ProblemKind::Duplicate {
                id: id(),
                first_line: seen_at[index],
            }));
            continue;
        }
        if require_order && last_index.is_some_and(|last| index < last) {
            problems.push(problem(ProblemKind::OutOfOrder { id: id() }));
        }
        last_index = Some(index);
        seen_at[index] = line;
        records.push((index, range));
    }
    if !lines.torn.is_empty() {
        problems.push(Problem {
            path: path.to_owned(),
            line: Some(lines.torn_line_number()),
            kind: ProblemKind::TornLine,
        });
    }
    if records.len() < expected.len() {
        let absent = expected
            .iter()
            .zip(&seen_at)
            .filter(|(_, at)| **at == 0)
            .map(|(id, _)| id.clone())
            .collect();
        problems.push(missing(path, absent));
    }
    // Agents may finish items out of order (a retried item comes last); merged
    // output is always in input order.
    records.sort_unstable_by_key(|(index, _)| *index);
    CheckedFile {
        bytes,
        records,
        problems,
    }
}

fn missing(path: &Path, ids: Vec<IdKey>) -> Problem {
    Problem {
        path: path.to_owned(),
        line: None,
        kind: ProblemKind::Missing {
            ids,
            no_file: false,
        },
    }
}

/// Checks a JSON array of records (final.json) against `expected`.
pub fn check_json_array(
    path: &Path,
    expected: &[IdKey],
    id_field: &str,
) -> io::Result<Vec<Problem>> {
    let bytes = std::fs::read(path)?;
    let elements = match input::json_array_elements(path, &bytes) {
        Ok(elements) => elements,
        Err(InputError::Syntax { line, message, .. }) => {
            return Ok(vec![Problem {
                path: path.to_owned(),
                line: Some(line),
                kind: ProblemKind::Unreadable(message),
            }])
        }
        Err(e) => {
            return Ok(vec![Problem {
                path: path.to_owned(),
                line: None,
                kind: ProblemKind::Unreadable(e.to_string()),
            }])
        }
    };
    // Re-render each element as one line and reuse the JSONL checks.
    let mut lines = Vec::new();
    let mut line_numbers = Vec::new();
    for (line, value) in elements {
        serde_json::to_writer(&mut lines, &value)?;
        lines.push(b'\n');
        line_numbers.push(line);
    }
    let checked = check_bytes(path, lines, expected, id_field, true);
    Ok(checked
        .problems
        .into_iter()
        .map(|mut p| {
            p.path = path.to_owned();
            p.line = p.line.and_then(|l| line_numbers.get(l - 1).copied());
            p
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<IdKey> {
        (1..=n).map(IdKey::from_line_number).collect()
    }

    #[test]
    fn finds_every_kind_of_problem_with_its_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.jsonl");
        std::fs::write(
            &path,
            "{\"id\":2}\nnot json\n{\"id\":9}\n{\"id\":2}\n{\"id\":1}\n{\"id\"",
        )
        .expect("write");
        let checked = check_jsonl(&path, &ids(3), "id", false).expect("check");
        let kinds: Vec<(Option<usize>, &ProblemKind)> =
            checked.problems.iter().map(|p| (p.line, &p.kind)).collect();
        assert!(matches!(
            kinds[0],
            (Some(2), ProblemKind::Invalid(RecordError::NotJson(_)))
        ));
        assert!(matches!(kinds[1], (Some(3), ProblemKind::UnexpectedId(_))));
        assert!(matches!(
            kinds[2],
            (Some(4), ProblemKind::Duplicate { first_line: 1, .. })
        ));
        assert!(matches!(kinds[3], (Some(6), ProblemKind::TornLine)));
        assert!(
            matches!(kinds[4], (None, ProblemKind::Missing { ids, .. }) if ids == &ids_of(&[3]))
        );
        let order: Vec<usize> = checked.records.iter().map(|(i, _)| *i).collect();
        assert_eq!(order, vec![0, 1], "records come back in input order");
    }

    fn ids_of(numbers: &[usize]) -> Vec<IdKey> {
        numbers
            .iter()
            .map(|n| IdKey::from_line_number(*n))
            .collect()
    }

    #[test]
    fn merged_files_must_be_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.jsonl");
        std::fs::write(&path, "{\"id\":2}\n{\"id\":1}\n").expect("write");
        let checked = check_jsonl(&path, &ids(2), "id", true).expect("check");
        assert!(matches!(
            checked.problems[0].kind,
            ProblemKind::OutOfOrder { .. }
        ));
    }

    #[test]
    fn json_array_problems_point_at_array_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("final.json");
        std::fs::write(&path, "[\n{\"id\":1},\n{\"id\":1}\n]\n").expect("write");
        let problems = check_json_array(&path, &ids(2), "id").expect("check");
        assert_eq!(problems[0].line, Some(3));
        assert!(matches!(problems[1].kind, ProblemKind::Missing { .. }));
    }
}
