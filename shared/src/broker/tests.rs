use super::*;
use serde_json::json;

fn parsed(line: &str) -> Value {
    serde_json::from_str(line).expect("a JSON line")
}

#[test]
fn requests_keep_the_wire_format() {
    let permit = Request::Permit {
        tokens: 5,
        agent: "a".into(),
        key: None,
        cost: None,
        keys: Vec::new(),
        prefix: None,
    };
    assert_eq!(
        permit.to_line(),
        "{\"agent\":\"a\",\"op\":\"permit\",\"tokens\":5}\n"
    );
    let backoff = |seconds| Request::Backoff {
        seconds,
        agent: "a".into(),
        key: None,
    };
    assert_eq!(parsed(&backoff(0.0).to_line())["seconds"], json!(0));
    assert_eq!(parsed(&backoff(7.0).to_line())["seconds"], json!(7));
    assert_eq!(parsed(&backoff(2.5).to_line())["seconds"], json!(2.5));
    let hello = Request::Hello { secret: "s".into() };
    assert_eq!(hello.to_line(), "{\"op\":\"hello\",\"secret\":\"s\"}\n");
    for request in [permit, backoff(2.5), hello] {
        let back = Request::from_line(&request.to_line()).expect("reads back");
        assert_eq!(back, request);
    }
}

#[test]
fn a_key_and_learned_limits_travel_with_their_requests() {
    let learned = Request::Learned {
        key: key_id("http://127.0.0.1:4000/v1", "OPENAI_API_KEY"),
        agent: "a".into(),
        limits: LearnedLimits {
            requests: Some(Window {
                limit: 120,
                remaining: 119,
                reset_seconds: 0.5,
            }),
            ..LearnedLimits::default()
        },
    };
    let line = learned.to_line();
    assert_eq!(parsed(&line)["requests"]["limit"], json!(120));
    assert!(parsed(&line).get("tokens").is_none(), "{line}");
    assert_eq!(Request::from_line(&line).expect("reads back"), learned);
    let permit = Request::Permit {
        tokens: 3,
        agent: "a".into(),
        key: Some("k".into()),
        cost: Some(0.25),
        keys: Vec::new(),
        prefix: Some(prefix_id("http://x/v1", "m", "Be brief.")),
    };
    assert_eq!(parsed(&permit.to_line())["key"], json!("k"));
    assert_eq!(
        Request::from_line(&permit.to_line()).expect("reads back"),
        permit
    );
}

#[test]
fn missing_fields_take_the_brokers_defaults() {
    assert_eq!(
        Request::from_line(r#"{"op":"permit"}"#).expect("a permit"),
        Request::Permit {
            tokens: 1,
            agent: String::new(),
            key: None,
            cost: None,
            keys: Vec::new(),
            prefix: None,
        }
    );
    assert_eq!(
        Request::from_line(r#"{"op":"report","tokens":9}"#).expect("a report"),
        Request::Report {
            tokens: 9,
            estimated: None,
            agent: String::new(),
            key: None,
            cost: None,
            estimated_cost: None,
            prefix: None,
            quiet: false,
        }
    );
    let quiet = Request::from_line(r#"{"op":"report","tokens":9,"quiet":true}"#).expect("quiet");
    assert!(!quiet.wants_reply());
    assert!(quiet.to_line().contains("\"quiet\":true"));
    assert!(Request::from_line(r#"{"op":"report"}"#)
        .expect("a report")
        .wants_reply());
    assert_eq!(
        Request::from_line(r#"{"op":"hello"}"#).expect("a hello"),
        Request::Hello {
            secret: String::new()
        }
    );
}

#[test]
fn bad_lines_say_what_is_wrong() {
    assert!(matches!(
        Request::from_line("not json"),
        Err(BadRequest::NotJson(_))
    ));
    assert!(matches!(
        Request::from_line(r#"{"op":"stop"}"#),
        Err(BadRequest::UnknownOp)
    ));
    assert!(matches!(
        Request::from_line("5"),
        Err(BadRequest::UnknownOp)
    ));
    assert!(matches!(
        Request::from_line(r#"{"op":"permit","tokens":"many"}"#),
        Err(BadRequest::Invalid { .. })
    ));
}

#[test]
fn replies_keep_the_wire_format() {
    assert_eq!(Reply::ok().to_line(), "{\"ok\":true}\n");
    assert_eq!(
        Reply::granted(1.5).to_line(),
        "{\"ok\":true,\"waited_ms\":1.5}\n"
    );
    assert_eq!(
        Reply::refused("no").to_line(),
        "{\"error\":\"no\",\"ok\":false}\n"
    );
    let paused = Reply::from_line("{\"ok\":true,\"paused_ms\":30000}").expect("a reply");
    assert_eq!(paused, Reply::paused(30000.0));
    assert_eq!(
        Reply::spent("budget").to_line(),
        "{\"error\":\"budget\",\"ok\":false,\"spent\":true}\n"
    );
    assert_eq!(Reply::from_line("[1]"), None);
    assert_eq!(Reply::from_line("{}").map(|r| r.ok), Some(false));
}

#[test]
fn the_broker_file_reads_back() {
    let file = BrokerFile {
        secret: "s".into(),
        tcp: "node1:4000".into(),
    };
    assert_eq!(
        file.to_text(),
        "{\"secret\":\"s\",\"tcp\":\"node1:4000\"}\n"
    );
    assert_eq!(BrokerFile::from_text(&file.to_text()), Some(file));
}
