//! Reading the input one item at a time, so the supervisor never holds a run's
//! items all at once: JSONL and plain lines stream through a buffered reader.
//! A JSON array is parsed whole (its items have no line boundaries to stream
//! by), so its memory goes with the file's size; README says to prefer JSONL
//! for very large inputs.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{parse_json_array, require_object, syntax, InputError};
use crate::job::InputFormat;

/// The input's items in order, each with the line it starts on.
pub struct ItemReader {
    path: PathBuf,
    source: Source,
}

enum Source {
    Lines {
        reader: BufReader<File>,
        buffer: Vec<u8>,
        line: usize,
        /// Plain lines: the item is made as `{id_field: line, "text": line}`.
        plain_id: Option<String>,
    },
    Array(std::vec::IntoIter<(usize, Box<RawValue>)>),
}

impl ItemReader {
    pub fn open(path: &Path, format: InputFormat, id_field: &str) -> Result<Self, InputError> {
        let read_error = |source| InputError::Read {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(read_error)?;
        let format = match format {
            InputFormat::Auto => detect_format(&mut file).map_err(read_error)?,
            other => other,
        };
        let file = File::open(path).map_err(read_error)?;
        let source = match format {
            InputFormat::Json => {
                let mut bytes = Vec::new();
                BufReader::new(file)
                    .read_to_end(&mut bytes)
                    .map_err(read_error)?;
                Source::Array(parse_json_array(path, &bytes)?.into_iter())
            }
            InputFormat::Jsonl | InputFormat::Lines | InputFormat::Auto => Source::Lines {
                reader: BufReader::with_capacity(1 << 16, file),
                buffer: Vec::new(),
                line: 0,
                plain_id: (format != InputFormat::Jsonl).then(|| id_field.to_owned()),
            },
        };
        Ok(Self {
            path: path.to_owned(),
            source,
        })
    }

    fn next_line_item(&mut self) -> Result<Option<(usize, Box<RawValue>)>, InputError> {
        let Source::Lines {
            reader,
            buffer,
            line,
            plain_id,
        } = &mut self.source
        else {
            return Ok(None);
        };
        loop {
            buffer.clear();
            let read = reader
                .read_until(b'\n', buffer)
                .map_err(|source| InputError::Read {
                    path: self.path.clone(),
                    source,
                })?;
            if read == 0 {
                return Ok(None);
            }
            *line += 1;
            let content = buffer.strip_suffix(b"\n").unwrap_or(buffer);
            let content = content.strip_suffix(b"\r").unwrap_or(content);
            if content.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let (path, line) = (&self.path, *line);
            let text =
                std::str::from_utf8(content).map_err(|_| syntax(path, line, "not valid UTF-8"))?;
            let raw = match plain_id {
                None => RawValue::from_string(text.trim().to_owned())
                    .map_err(|e| syntax(path, line, format!("not valid JSON: {e}")))
                    .and_then(|raw| require_object(path, line, raw))?,
                Some(id_field) => plain_item(path, line, id_field, text)?,
            };
            return Ok(Some((line, raw)));
        }
    }
}

impl Iterator for ItemReader {
    type Item = Result<(usize, Box<RawValue>), InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.source {
            Source::Array(items) => items.next().map(Ok),
            Source::Lines { .. } => self.next_line_item().transpose(),
        }
    }
}

/// A plain line as an item: `{id_field: line number, "text": the line}`.
fn plain_item(
    path: &Path,
    line: usize,
    id_field: &str,
    text: &str,
) -> Result<Box<RawValue>, InputError> {
    let mut item = Map::new();
    item.insert(id_field.to_owned(), Value::from(line));
    item.insert("text".to_owned(), Value::from(text));
    let text = serde_json::to_string(&Value::Object(item))
        .map_err(|e| syntax(path, line, e.to_string()))?;
    RawValue::from_string(text).map_err(|e| syntax(path, line, e.to_string()))
}

/// The format of `Auto` input, from its first non-blank byte.
fn detect_format(file: &mut File) -> std::io::Result<InputFormat> {
    let mut buffer = [0u8; 4096];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(InputFormat::Lines);
        }
        if let Some(b) = buffer[..n].iter().find(|b| !b.is_ascii_whitespace()) {
            return Ok(match b {
                b'[' => InputFormat::Json,
                b'{' => InputFormat::Jsonl,
                _ => InputFormat::Lines,
            });
        }
    }
}
