//! Reading the job's input: a JSON array, JSONL, or plain lines, each item with
//! a unique id. Every item keeps the line it came from, for error messages.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::ids::IdKey;
use crate::job::InputFormat;
use crate::records::{record_id, RecordError};

/// How many offenders an input error lists before it summarises.
const OFFENDERS_SHOWN: usize = 10;

/// The job's items, in input order. Items are kept as their JSON text: a
/// million parsed objects would hold many times the input's size in memory.
#[derive(Debug, Clone)]
pub struct Items {
    pub path: PathBuf,
    pub id_field: String,
    pub items: Vec<Box<RawValue>>,
    pub ids: Vec<IdKey>,
}

impl Items {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

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

/// Reads the input file and checks that every item has a unique id.
pub fn load_items(path: &Path, format: InputFormat, id_field: &str) -> Result<Items, InputError> {
    let bytes = std::fs::read(path).map_err(|source| InputError::Read {
        path: path.to_owned(),
        source,
    })?;
    let format = match format {
        InputFormat::Auto => detect_format(&bytes),
        other => other,
    };
    let located = match format {
        InputFormat::Json => parse_json_array(path, &bytes)?,
        InputFormat::Jsonl => parse_jsonl(path, &bytes)?,
        InputFormat::Lines | InputFormat::Auto => parse_lines(path, &bytes, id_field)?,
    };
    if located.is_empty() {
        return Err(InputError::Empty {
            path: path.to_owned(),
        });
    }

    let mut first_seen: HashMap<IdKey, usize> = HashMap::with_capacity(located.len());
    let mut offenders = Vec::new();
    let mut items = Vec::with_capacity(located.len());
    let mut ids = Vec::with_capacity(located.len());
    for (line, item) in located {
        let id = match record_id(item.get().as_bytes(), id_field) {
            Ok(id) => id,
            Err(RecordError::NoId) => {
                offenders.push((line, format!("no `{id_field}` field")));
                continue;
            }
            Err(RecordError::BadId(value)) => {
                offenders.push((
                    line,
                    format!("`{id_field}` is {value}, not a string or an integer"),
                ));
                continue;
            }
            Err(RecordError::NotObject) => {
                return Err(syntax(path, line, "an item must be a JSON object"))
            }
            Err(RecordError::NotJson(e)) => {
                return Err(syntax(path, line, format!("not valid JSON: {e}")))
            }
        };
        if let Some(first) = first_seen.get(&id) {
            offenders.push((line, format!("duplicate id {id} (first at line {first})")));
            continue;
        }
        first_seen.insert(id.clone(), line);
        items.push(item);
        ids.push(id);
    }
    if !offenders.is_empty() {
        return Err(InputError::BadIds(IdProblems {
            path: path.to_owned(),
            id_field: id_field.to_owned(),
            offenders,
        }));
    }
    Ok(Items {
        path: path.to_owned(),
        id_field: id_field.to_owned(),
        items,
        ids,
    })
}

fn detect_format(bytes: &[u8]) -> InputFormat {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => InputFormat::Json,
        Some(b'{') => InputFormat::Jsonl,
        _ => InputFormat::Lines,
    }
}

fn line_of(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn syntax(path: &Path, line: usize, message: impl Into<String>) -> InputError {
    InputError::Syntax {
        path: path.to_owned(),
        line,
        message: message.into(),
    }
}

fn require_object(
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
fn parse_json_array(path: &Path, bytes: &[u8]) -> Result<Vec<(usize, Box<RawValue>)>, InputError> {
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
    loop {
        let line = line_of(bytes, pos);
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

fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    bytes.split(|b| *b == b'\n').enumerate().map(|(i, l)| {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        (i + 1, l)
    })
}

fn parse_jsonl(path: &Path, bytes: &[u8]) -> Result<Vec<(usize, Box<RawValue>)>, InputError> {
    let mut items = Vec::new();
    for (line, content) in lines(bytes) {
        if content.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text =
            std::str::from_utf8(content).map_err(|_| syntax(path, line, "not valid UTF-8"))?;
        let value = RawValue::from_string(text.trim().to_owned())
            .map_err(|e| syntax(path, line, format!("not valid JSON: {e}")))?;
        items.push((line, require_object(path, line, value)?));
    }
    Ok(items)
}

/// Plain lines: each non-blank line is an item `{id: line number, "text": line}`.
fn parse_lines(
    path: &Path,
    bytes: &[u8],
    id_field: &str,
) -> Result<Vec<(usize, Box<RawValue>)>, InputError> {
    let mut items = Vec::new();
    for (line, content) in lines(bytes) {
        if content.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let text =
            std::str::from_utf8(content).map_err(|_| syntax(path, line, "not valid UTF-8"))?;
        let mut item = Map::new();
        item.insert(id_field.to_owned(), Value::from(line));
        item.insert("text".to_owned(), Value::from(text));
        let text = serde_json::to_string(&Value::Object(item))
            .map_err(|e| syntax(path, line, e.to_string()))?;
        let raw = RawValue::from_string(text).map_err(|e| syntax(path, line, e.to_string()))?;
        items.push((line, raw));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, format: InputFormat) -> Result<Items, InputError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("items");
        std::fs::write(&path, text).expect("write");
        load_items(&path, format, "id")
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
            lines.ids,
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
}
