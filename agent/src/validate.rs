//! `[agent.validate]`: the checks a result must pass before it is saved, in
//! this order: required fields, reject patterns, then the validator command.
//! A rejection is a failed attempt; its message is the failure reason.

use std::borrow::Cow;
use std::os::unix::process::ExitStatusExt;

use regex::Regex;
use serde_json::{Map, Value};
use shared::job::{HumanDuration, ValidateSettings};

use crate::process::{self, RunError, Stderr};
use crate::setup::SetupError;

/// How much of the validator's first line a reason quotes.
const SAID_CHARS: usize = 200;

/// Why a result was not saved.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("missing required field \"{0}\"")]
    Missing(String),
    #[error("required field \"{0}\" is empty")]
    Empty(String),
    #[error("matches reject pattern \"{0}\"")]
    Matches(String),
    #[error("validator exited with code {code}{}", colon(.said))]
    Exit { code: i32, said: String },
    #[error("validator was killed by signal {signal}{}", colon(.said))]
    Signal { signal: i32, said: String },
    #[error("validator: {0}")]
    Run(#[from] RunError),
}

fn colon(said: &str) -> String {
    if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    }
}

/// The checks of one job, patterns compiled once.
#[derive(Debug)]
pub struct Validator {
    required: Vec<String>,
    reject: Vec<(String, Regex)>,
    field: String,
    /// The validator command: program, then arguments.
    command: Option<(String, Vec<String>)>,
    timeout: Option<HumanDuration>,
}

impl Validator {
    /// The validator of agent.validate, or `None` when there is nothing to check.
    pub fn new(
        settings: Option<&ValidateSettings>,
        item_timeout: Option<HumanDuration>,
    ) -> Result<Option<Self>, SetupError> {
        let Some(settings) = settings else {
            return Ok(None);
        };
        let reject = settings
            .reject
            .iter()
            .map(|pattern| match Regex::new(&pattern.0) {
                Ok(regex) => Ok((pattern.0.clone(), regex)),
                // The job file's loader checked every pattern; a task file
                // written by hand may still hold a bad one.
                Err(source) => Err(SetupError::BadPattern {
                    pattern: pattern.0.clone(),
                    source,
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let command = match settings.command.as_deref() {
            None => None,
            Some([program, args @ ..]) if !program.is_empty() => {
                Some((program.clone(), args.to_vec()))
            }
            Some(_) => return Err(SetupError::NoValidatorCommand),
        };
        Ok(Some(Self {
            required: settings.required.clone(),
            reject,
            field: settings.field.clone(),
            command,
            timeout: item_timeout,
        }))
    }

    /// Checks one record, cheapest checks first, and stops at the first
    /// rejection.
    pub fn check(&self, record: &Map<String, Value>) -> Result<(), Rejection> {
        for field in &self.required {
            match record.get(field) {
                None => return Err(Rejection::Missing(field.clone())),
                Some(value) if is_empty(value) => return Err(Rejection::Empty(field.clone())),
                Some(_) => {}
            }
        }
        if !self.reject.is_empty() {
            let text = match record.get(&self.field) {
                Some(Value::String(text)) => Cow::Borrowed(text.as_str()),
                // Serializing a map of JSON values cannot fail.
                _ => Cow::Owned(serde_json::to_string(record).unwrap_or_default()),
            };
            if let Some((pattern, _)) = self.reject.iter().find(|(_, re)| re.is_match(&text)) {
                return Err(Rejection::Matches(pattern.clone()));
            }
        }
        match &self.command {
            Some((program, args)) => self.run_command(program, args, record),
            None => Ok(()),
        }
    }

    /// Runs the validator command on the record: exit 0 is good.
    fn run_command(
        &self,
        program: &str,
        args: &[String],
        record: &Map<String, Value>,
    ) -> Result<(), Rejection> {
        let mut input = serde_json::to_vec(record).map_err(|e| RunError::Io {
            what: "encoding the record",
            error: e.into(),
        })?;
        input.push(b'\n');
        let done = process::run(program, args, input, Stderr::Capture, self.timeout)?;
        if done.status.success() {
            return Ok(());
        }
        let said = first_line(&done.stdout)
            .or_else(|| first_line(&done.stderr))
            .unwrap_or_default();
        Err(match (done.status.code(), done.status.signal()) {
            (Some(code), _) => Rejection::Exit { code, said },
            (None, Some(signal)) => Rejection::Signal { signal, said },
            (None, None) => Rejection::Exit { code: -1, said },
        })
    }
}

/// null, "", [] and {} are empty; 0 and false are values.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(text) => text.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(fields) => fields.is_empty(),
        Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The first line with something on it, shortened for a reason.
fn first_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(|line| line.chars().take(SAID_CHARS).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shared::job::Pattern;

    fn validator(settings: Value) -> Validator {
        let settings: ValidateSettings = serde_json::from_value(settings).expect("valid settings");
        Validator::new(Some(&settings), Some(HumanDuration::from_secs(5)))
            .expect("valid validator")
            .expect("settings given")
    }

    fn check(validator: &Validator, record: Value) -> Result<(), String> {
        let Value::Object(record) = record else {
            panic!("records are objects")
        };
        validator.check(&record).map_err(|e| e.to_string())
    }

    #[test]
    fn required_fields_must_be_present_and_non_empty() {
        let v = validator(json!({"required": ["output", "score"]}));
        assert_eq!(check(&v, json!({"output": "x", "score": 0})), Ok(()));
        assert_eq!(check(&v, json!({"output": "x", "score": false})), Ok(()));
        assert_eq!(
            check(&v, json!({"output": "x"})),
            Err("missing required field \"score\"".to_owned())
        );
        for empty in [json!(null), json!(""), json!([]), json!({})] {
            assert_eq!(
                check(&v, json!({"output": empty, "score": 1})),
                Err("required field \"output\" is empty".to_owned())
            );
        }
    }

    #[test]
    fn reject_patterns_read_the_field_or_the_whole_record() {
        let v = validator(json!({"reject": ["(?i)as an ai", r"^\d+$"]}));
        assert_eq!(check(&v, json!({"output": "Bonjour"})), Ok(()));
        assert_eq!(
            check(&v, json!({"output": "As an AI, I cannot"})),
            Err("matches reject pattern \"(?i)as an ai\"".to_owned())
        );
        assert_eq!(
            check(&v, json!({"output": "42"})),
            Err("matches reject pattern \"^\\d+$\"".to_owned())
        );
        // No string at `output`: the whole record's JSON is searched.
        assert!(check(&v, json!({"text": "as an AI"})).is_err());
        assert_eq!(check(&v, json!({"output": 42})), Ok(()));

        let on_field = validator(json!({"reject": ["bad"], "field": "answer"}));
        assert_eq!(
            check(&on_field, json!({"answer": "ok", "output": "bad"})),
            Ok(())
        );
        assert!(check(&on_field, json!({"answer": "bad"})).is_err());
    }

    #[test]
    fn required_is_checked_before_patterns() {
        let v = validator(json!({"required": ["output"], "reject": ["."]}));
        assert_eq!(
            check(&v, json!({"other": 1})),
            Err("missing required field \"output\"".to_owned())
        );
    }

    #[test]
    fn validator_command_gets_the_record_and_its_exit_code_decides() {
        let script = "grep -q '\"good\"' && exit 0; echo \"no good word\"; exit 3";
        let v = validator(json!({"command": ["sh", "-c", script]}));
        assert_eq!(check(&v, json!({"output": "good"})), Ok(()));
        assert_eq!(
            check(&v, json!({"output": "bad"})),
            Err("validator exited with code 3: no good word".to_owned())
        );
        let quiet =
            validator(json!({"command": ["sh", "-c", "cat >/dev/null; echo why >&2; exit 1"]}));
        assert_eq!(
            check(&quiet, json!({})),
            Err("validator exited with code 1: why".to_owned())
        );
        let missing = validator(json!({"command": ["./no-such-validator"]}));
        let reason = check(&missing, json!({})).expect_err("cannot start");
        assert!(reason.starts_with("validator: cannot start"), "{reason}");
    }

    #[test]
    fn validator_command_has_the_item_timeout() {
        let settings = ValidateSettings {
            command: Some(vec!["sleep".to_owned(), "5".to_owned()]),
            ..ValidateSettings::default()
        };
        let v = Validator::new(Some(&settings), Some(HumanDuration::from_millis(100)))
            .expect("valid")
            .expect("given");
        let reason = v.check(&Map::new()).expect_err("too slow").to_string();
        assert_eq!(reason, "validator: timeout after 100ms");
    }

    #[test]
    fn empty_command_and_bad_pattern_are_setup_errors() {
        let empty = ValidateSettings {
            command: Some(Vec::new()),
            ..ValidateSettings::default()
        };
        assert!(matches!(
            Validator::new(Some(&empty), None),
            Err(SetupError::NoValidatorCommand)
        ));
        let bad = ValidateSettings {
            reject: vec![Pattern("(".to_owned())],
            ..ValidateSettings::default()
        };
        assert!(matches!(
            Validator::new(Some(&bad), None),
            Err(SetupError::BadPattern { .. })
        ));
    }
}
