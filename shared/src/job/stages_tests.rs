use std::path::Path;

use super::*;
use crate::job::{Backend, JobError};

fn load(text: &str) -> Result<Job, JobError> {
    Job::from_text(Path::new("/jobs/pipe.toml"), text.to_owned())
}

const PIPELINE: &str = r#"
[input]
path = "items.jsonl"
id = "key"
[output]
path = "out.json"
[[stage]]
name = "check"
after = "draft"
[stage.agent]
backend = "exec"
command = ["python3", "check.py"]
retries = 5
[[stage]]
name = "draft"
[stage.layout]
items_per_agent = 4
[stage.agent]
backend = "demo"
"#;

#[test]
fn stages_run_in_chain_order_whatever_order_the_file_lists_them() {
    let job = load(PIPELINE).expect("valid");
    assert!(job.is_pipeline());
    let names: Vec<&str> = job.stage_chain().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["draft", "check"]);
}

#[test]
fn a_stage_job_has_the_stage_agent_and_layout_and_the_upstream_records_as_input() {
    let job = load(PIPELINE).expect("valid");
    let draft = job.stage_job(0, None).expect("draft");
    assert_eq!(draft.name, "pipe-draft");
    assert_eq!(draft.settings.agent.backend, Backend::Demo);
    assert_eq!(
        draft.settings.layout.items_per_agent.map(|c| c.get()),
        Some(4)
    );
    assert_eq!(draft.settings.input.path, Path::new("items.jsonl"));
    assert!(
        draft.settings.output.path.is_none(),
        "only the last stage writes output.path"
    );
    assert_eq!(
        draft.dir,
        Path::new("/jobs"),
        "relative paths mean what they meant"
    );

    let upstream = Path::new("/runs/r/stage_draft/final.json");
    let check = job.stage_job(1, Some(upstream)).expect("check");
    assert_eq!(check.settings.agent.backend, Backend::Exec);
    assert_eq!(check.settings.agent.retries, 5);
    assert_eq!(check.settings.input.path, upstream);
    assert_eq!(check.settings.input.id, "key");
    assert_eq!(
        check.settings.output.path.as_deref(),
        Some(Path::new("out.json"))
    );
    assert!(!check.is_pipeline());
}

#[test]
fn a_stage_folder_is_named_after_the_stage() {
    assert_eq!(stage_dir_name("check"), "stage_check");
}

#[test]
fn a_second_first_stage_and_a_second_downstream_are_refused() {
    let two_first = "[input]\npath = \"x\"\n[[stage]]\nname = \"a\"\n[stage.agent]\nbackend = \"demo\"\n[[stage]]\nname = \"b\"\n[stage.agent]\nbackend = \"demo\"\n";
    match load(two_first) {
        Err(JobError::Invalid(e)) => {
            assert_eq!(e.line, 8, "{e}");
            assert!(e.message.contains("both have no `after`"), "{e}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let fork = "[input]\npath = \"x\"\n[[stage]]\nname = \"a\"\n[stage.agent]\nbackend = \"demo\"\n[[stage]]\nname = \"b\"\nafter = \"a\"\n[stage.agent]\nbackend = \"demo\"\n[[stage]]\nname = \"c\"\nafter = \"a\"\n[stage.agent]\nbackend = \"demo\"\n";
    match load(fork) {
        Err(JobError::Invalid(e)) => assert!(e.message.contains("a chain today"), "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
