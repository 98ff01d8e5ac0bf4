//! `[agent.llm]` as the loader sees it: defaults, files read at load, and
//! every refusal located at its line and key.

use std::ffi::OsString;
use std::path::Path;

use crate::job::{Job, JobError, JobFileError, KeyVars, ResponseFormat, Schema};

const HEAD: &str = "[input]\npath = \"items.jsonl\"\n[agent]\nbackend = \"openai\"\n";

fn load_in(dir: &Path, text: &str) -> Result<Job, JobError> {
    Job::from_text(&dir.join("job.toml"), text.to_owned())
}

fn load(text: &str) -> Result<Job, JobError> {
    load_in(Path::new("/jobs"), text)
}

fn invalid(text: &str) -> JobFileError {
    match load(text) {
        Err(JobError::Invalid(e)) => *e,
        other => panic!("expected an invalid job, got {other:?}"),
    }
}

#[test]
fn a_minimal_llm_job_gets_defaults() {
    let job = load(&format!(
        "{HEAD}[agent.llm]\nbase_url = \"http://127.0.0.1:4000/v1\"\nmodel = \"m\"\n"
    ))
    .expect("valid");
    let llm = job.settings.agent.llm.as_ref().expect("llm settings");
    assert_eq!(llm.request_timeout.get().as_secs(), 120);
    assert!(!llm.wants_json());
    assert!(llm.api_key_env.is_none());
    assert!(job.missing_api_keys(|_| None).is_empty());
}

#[test]
fn backend_without_the_table_and_table_without_the_backend_are_refused() {
    let e = invalid(HEAD);
    assert_eq!(
        (e.line, e.key.as_deref()),
        (4, Some("agent.backend")),
        "{e}"
    );
    let e = invalid("[input]\npath = \"x\"\n[agent]\nbackend = \"demo\"\n[agent.llm]\nbase_url = \"http://x\"\nmodel = \"m\"\n");
    assert_eq!((e.line, e.key.as_deref()), (5, Some("agent.llm")), "{e}");
}

#[test]
fn base_url_and_model_are_required() {
    let e = invalid(&format!("{HEAD}[agent.llm]\nmodel = \"m\"\n"));
    assert_eq!(e.key.as_deref(), Some("agent.llm.base_url"), "{e}");
    assert_eq!(e.line, 5);
    let e = invalid(&format!("{HEAD}[agent.llm]\nbase_url = \"http://x/v1\"\n"));
    assert_eq!(e.key.as_deref(), Some("agent.llm.model"), "{e}");
    let e = invalid(&format!(
        "{HEAD}[agent.llm]\nbase_url = \"x.example\"\nmodel = \"m\"\n"
    ));
    assert_eq!((e.line, e.key.as_deref()), (6, Some("agent.llm.base_url")));
}

#[test]
fn unknown_keys_and_batch_mode_are_refused_by_line_and_key() {
    let base = format!("{HEAD}[agent.llm]\nbase_url = \"http://x/v1\"\nmodel = \"m\"\n");
    let e = invalid(&format!("{base}max_token = 5\n"));
    assert_eq!(
        (e.line, e.key.as_deref()),
        (8, Some("agent.llm.max_token")),
        "{e}"
    );
    let e = invalid(&format!("{base}batch_deadline = \"06:00\"\n"));
    assert_eq!(
        (e.line, e.key.as_deref()),
        (8, Some("agent.llm.batch_deadline")),
        "{e}"
    );
    let auto = load(&format!("{base}mode = \"auto\"\nbatch_deadline = \"2h\"\n")).expect("auto");
    let llm = auto.settings.agent.llm.expect("llm");
    assert_eq!(llm.mode, crate::job::LlmMode::Auto);
    assert!(llm.batch_deadline.is_some());
    for poll in ["\"soon\"", "\"0s\""] {
        let e = invalid(&format!("{base}mode = \"batch\"\nbatch_poll = {poll}\n"));
        assert_eq!(
            (e.line, e.key.as_deref()),
            (9, Some("agent.llm.batch_poll")),
            "{e}"
        );
    }
    let e = invalid(&format!("{base}temperature = -1.0\n"));
    assert_eq!(e.key.as_deref(), Some("agent.llm.temperature"), "{e}");
    let e = invalid(&format!("{base}response_format = \"yaml\"\n"));
    assert_eq!(e.key.as_deref(), Some("agent.llm.response_format"), "{e}");
    let e = invalid(&format!(
        "{base}[[agent.llm.fallback]]\nmodel = \"other\"\n"
    ));
    assert_eq!(e.key.as_deref(), Some("agent.llm.fallback.base_url"), "{e}");
}

#[test]
fn key_names_are_names_never_keys_and_not_in_agent_env() {
    let base = format!("{HEAD}[agent.llm]\nbase_url = \"http://x/v1\"\nmodel = \"m\"\n");
    let e = invalid(&format!("{base}api_key_env = \"sk-secret-123\"\n"));
    assert_eq!(e.key.as_deref(), Some("agent.llm.api_key_env"), "{e}");
    assert!(!e.to_string().contains("sk-secret-123"), "{e}");
    let e = invalid(&format!("{base}api_key_env = []\n"));
    assert_eq!(e.key.as_deref(), Some("agent.llm.api_key_env"), "{e}");
    let text = "[input]\npath = \"x\"\n[agent]\nbackend = \"openai\"\nenv = { K = \"v\" }\n[agent.llm]\nbase_url = \"http://x/v1\"\nmodel = \"m\"\napi_key_env = \"K\"\n";
    let e = invalid(text);
    assert!(e.message.contains("agent.env"), "{e}");
}

#[test]
fn key_lists_and_fallback_keys_are_all_checked_for_being_set() {
    let job = load(&format!(
        "{HEAD}[agent.llm]\nbase_url = \"http://x/v1\"\nmodel = \"m\"\napi_key_env = [\"A\", \"B\"]\n\
         [[agent.llm.fallback]]\nbase_url = \"http://y/v1\"\napi_key_env = \"C\"\n\
         [[agent.llm.fallback]]\nbackend = \"anthropic\"\nbase_url = \"http://z/v1\"\napi_key_env = \"A\"\n"
    ))
    .expect("valid");
    let llm = job.settings.agent.llm.as_ref().expect("llm");
    assert_eq!(
        llm.api_key_env,
        Some(KeyVars::Many(vec!["A".into(), "B".into()]))
    );
    let set = |name: &str| (name == "B").then(|| OsString::from("key"));
    assert_eq!(job.missing_api_keys(set), ["A", "C"]);
    let empty = |_: &str| Some(OsString::new());
    assert_eq!(job.missing_api_keys(empty), ["A", "B", "C"]);
    let err = JobError::MissingApiKeys {
        path: job.path.clone(),
        vars: vec!["A".into()],
    };
    assert!(err.to_string().contains("$A"), "{err}");
}

#[test]
fn prompt_system_and_schema_files_are_read_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("system.md"), "Be brief.").expect("write");
    std::fs::write(dir.path().join("prompt.md"), "Say {{text}}").expect("write");
    std::fs::write(
        dir.path().join("schema.json"),
        r#"{"type": "object", "required": ["answer"]}"#,
    )
    .expect("write");
    let text = format!(
        "{HEAD}[agent.llm]\nbase_url = \"http://x/v1\"\nmodel = \"m\"\nsystem_file = \"system.md\"\nprompt_file = \"prompt.md\"\nschema = \"schema.json\"\n"
    );
    let job = load_in(dir.path(), &text).expect("valid");
    let llm = job.settings.agent.llm.as_ref().expect("llm");
    assert_eq!(llm.system.as_deref(), Some("Be brief."));
    assert_eq!(llm.prompt.as_deref(), Some("Say {{text}}"));
    assert!(llm.system_file.is_none() && llm.prompt_file.is_none());
    assert!(matches!(&llm.schema, Some(Schema::Inline(s)) if s["required"][0] == "answer"));
    assert!(llm.wants_json());
    // The task file carries the texts, and reads back the same.
    let task = serde_json::to_value(&job.settings.agent).expect("JSON");
    assert_eq!(task["llm"]["prompt"], "Say {{text}}");
    let back: crate::job::AgentSettings = serde_json::from_value(task).expect("round trip");
    assert_eq!(back.llm.expect("llm").schema, llm.schema);
}

#[test]
fn bad_files_are_refused_at_their_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("list.json"), "[1]").expect("write");
    std::fs::write(dir.path().join("bad.json"), r#"{"type": 12}"#).expect("write");
    let base = format!("{HEAD}[agent.llm]\nbase_url = \"http://x/v1\"\nmodel = \"m\"\n");
    let located = |extra: &str| match load_in(dir.path(), &format!("{base}{extra}")) {
        Err(JobError::Invalid(e)) => *e,
        other => panic!("expected an invalid job, got {other:?}"),
    };
    let e = located("prompt_file = \"missing.md\"\n");
    assert_eq!(
        (e.line, e.key.as_deref()),
        (8, Some("agent.llm.prompt_file")),
        "{e}"
    );
    let e = located("schema = \"list.json\"\n");
    assert!(e.message.contains("not a JSON object"), "{e}");
    let e = located("schema = \"bad.json\"\n");
    assert!(e.message.contains("not a valid JSON Schema"), "{e}");
    let e = located("prompt = \"a\"\nprompt_file = \"p.md\"\n");
    assert_eq!(e.key.as_deref(), Some("agent.llm.prompt_file"), "{e}");
    let e = located("schema = \"list.json\"\nresponse_format = \"text\"\n");
    assert_eq!(e.key.as_deref(), Some("agent.llm.response_format"), "{e}");
    let job = load_in(dir.path(), &format!("{base}response_format = \"json\"\n")).expect("valid");
    let llm = job.settings.agent.llm.expect("llm");
    assert_eq!(llm.response_format, Some(ResponseFormat::Json));
}
