//! Reading the job's input: a JSON array, JSONL, or plain lines, each item with
//! a unique id. Every item keeps the line it came from, for error messages.
//! The input is read item by item, twice (`check_input`, then the writing of
//! the task files), never held whole: see `reader` and `check`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::value::RawValue;

mod check;
mod reader;

pub use check::{check_input, InputFile};
pub use reader::ItemReader;

/// How many offenders an input error lists before it summarises.
const OFFENDERS_SHOWN: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read input {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: the input holds no items")]
    Empty { path: PathBuf },
    #[error("{0}")]
    BadIds(IdProblems),
}

/// Items whose id is missing, unusable or repeated.
#[derive(Debug)]
pub struct IdProblems {
    pub path: PathBuf,
    pub id_field: String,
    /// (line, what is wrong), in file order.
    pub offenders: Vec<(usize, String)>,
}

impl fmt::Display for IdProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} item(s) without a unique `{}`:",
            self.path.display(),
            self.offenders.len(),
            self.id_field
        )?;
        for (line, what) in self.offenders.iter().take(OFFENDERS_SHOWN) {
            writeln!(f, "  {}:{line}: {what}", self.path.display())?;
        }
        if self.offenders.len() > OFFENDERS_SHOWN {
            writeln!(f, "  … and {} more", self.offenders.len() - OFFENDERS_SHOWN)?;
        }
        Ok(())
    }
}

fn line_of(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

pub(crate) fn syntax(path: &Path, line: usize, message: impl Into<String>) -> InputError {
    InputError::Syntax {
        path: path.to_owned(),
        line,
        message: message.into(),
    }
}

pub(crate) fn require_object(
    path: &Path,
    line: usize,
    raw: Box<RawValue>,
) -> Result<Box<RawValue>, InputError> {
    if raw.get().starts_with('{') {
        Ok(raw)
    } else {
        Err(syntax(path, line, "an item must be a JSON object"))
    }
}

/// The elements of a JSON array of objects, each with the line it starts on.
pub fn json_array_elements(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<(usize, Box<RawValue>)>, InputError> {
    parse_json_array(path, bytes)
}

/// A JSON array, read element by element so each item knows its line.
pub(crate) fn parse_json_array(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<(usize, Box<RawValue>)>, InputError> {
    let skip_ws = |mut pos: usize| {
        while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        pos
    };
    let mut pos = skip_ws(0);
    if bytes.get(pos) != Some(&b'[') {
        return Err(syntax(
            path,
            line_of(bytes, pos),
            "expected a JSON array of items",
        ));
    }
    pos = skip_ws(pos + 1);
    let mut items = Vec::new();
    if bytes.get(pos) == Some(&b']') {
        return Ok(items);
    }
    // Lines are counted on from the previous item, not from the file's start:
    // counting from the start made a large array quadratic to read.
    let (mut counted_to, mut line) = (0, 1);
    loop {
        line += line_of(&bytes[counted_to..], pos - counted_to) - 1;
        counted_to = pos;
        let mut stream =
            serde_json::Deserializer::from_slice(&bytes[pos..]).into_iter::<Box<RawValue>>();
        let value = match stream.next() {
            Some(Ok(value)) => value,
            Some(Err(e)) => return Err(syntax(path, line + e.line() - 1, e.to_string())),
            None => return Err(syntax(path, line, "unexpected end of the JSON array")),
        };
        pos = skip_ws(pos + stream.byte_offset());
        items.push((line, require_object(path, line, value)?));
        match bytes.get(pos) {
            Some(b',') => pos = skip_ws(pos + 1),
            Some(b']') => break,
            _ => {
                return Err(syntax(
                    path,
                    line_of(bytes, pos),
                    "expected `,` or `]` after an item",
                ))
            }
        }
    }
    if skip_ws(pos + 1) != bytes.len() {
        return Err(syntax(
            path,
            line_of(bytes, pos + 1),
            "unexpected text after the JSON array",
        ));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::IdKey;
    use crate::job::InputFormat;

    /// The ids of an input, after the first pass checked it.
    fn load(text: &str, format: InputFormat) -> Result<Vec<IdKey>, InputError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("items");
        std::fs::write(&path, text).expect("write");
        let input = check_input(&path, format, "id")?;
        let ids: Vec<IdKey> = input
            .items_with_ids()?
            .map(|item| item.map(|(id, _)| id))
            .collect::<Result<_, _>>()?;
        assert_eq!(ids.len(), input.count);
        Ok(ids)
    }

    #[test]
    fn a_bad_item_of_a_json_array_is_found_at_its_line() {
        let text = "[\n{\"id\": 1},\n\n{\"id\": 2},\n{\"id\": 3}\n7\n]\n";
        let err = load(text, InputFormat::Json).expect_err("no comma");
        assert!(matches!(err, InputError::Syntax { line: 6, .. }), "{err}");
        let err = load("[\n{\"id\": 1},\n\n\n5\n]", InputFormat::Json).expect_err("not an object");
        assert!(matches!(err, InputError::Syntax { line: 5, .. }), "{err}");
    }

    #[test]
    fn formats_are_detected() {
        assert_eq!(
            load("[{\"id\": 1}, {\"id\": 2}]", InputFormat::Auto)
                .expect("json")
                .len(),
            2
        );
        assert_eq!(
            load("{\"id\": \"a\"}\n\n{\"id\": \"b\"}\n", InputFormat::Auto)
                .expect("jsonl")
                .len(),
            2
        );
        let lines = load("first\n\nthird\n", InputFormat::Auto).expect("lines");
        assert_eq!(
            lines,
            vec![IdKey::from_line_number(1), IdKey::from_line_number(3)]
        );
    }

    #[test]
    fn duplicate_and_missing_ids_list_their_lines() {
        let err = load(
            "[\n{\"id\": 1},\n{\"x\": 2},\n{\"id\": 1}\n]",
            InputFormat::Auto,
        )
        .expect_err("bad ids");
        let InputError::BadIds(problems) = err else {
            panic!("expected id problems, got {err}")
        };
        assert_eq!(problems.offenders.len(), 2);
        assert_eq!(problems.offenders[0].0, 3);
        assert_eq!(problems.offenders[1].0, 4);
        assert!(problems.offenders[1].1.contains("first at line 2"));
    }

    #[test]
    fn jsonl_syntax_errors_name_the_line() {
        let err = load("{\"id\": 1}\n{oops\n", InputFormat::Jsonl).expect_err("bad json");
        assert!(matches!(err, InputError::Syntax { line: 2, .. }), "{err}");
    }

    #[test]
    fn repeats_are_found_in_jsonl_with_the_first_line() {
        let text: String = (0..1000)
            .map(|n| format!("{{\"id\": {}}}\n", if n == 700 { 3 } else { n }))
            .collect();
        let err = load(&text, InputFormat::Auto).expect_err("a repeat");
        let InputError::BadIds(problems) = err else {
            panic!("expected id problems, got {err}")
        };
        assert_eq!(
            problems.offenders,
            vec![(701, "duplicate id 3 (first at line 4)".to_owned())]
        );
    }
}
