use super::*;
use serde_json::json;

fn key(n: u64) -> CacheKey {
    CacheKey::of("openai", "http://x/v1", &json!({"n": n}))
}

#[test]
fn answers_are_stored_found_counted_and_pruned() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("deep/er/answers.sqlite");
    let cache = AnswerCache::open(&path).expect("a new cache");
    assert_eq!(cache.get(&key(1)).expect("a lookup"), None);
    cache.put(&key(1), "m-a", r#"{"a": 1}"#).expect("stored");
    cache.put(&key(2), "m-b", r#"{"b": 2}"#).expect("stored");
    cache.put(&key(2), "m-b", r#"{"b": 3}"#).expect("replaced");
    // Another connection (another agent process) sees them.
    let other = AnswerCache::open(&path).expect("opened again");
    assert_eq!(
        other.get(&key(1)).expect("a lookup").as_deref(),
        Some(r#"{"a": 1}"#)
    );
    assert_eq!(
        other.get(&key(2)).expect("a lookup").as_deref(),
        Some(r#"{"b": 3}"#)
    );
    other.get(&key(2)).expect("a lookup");
    // Hits are written in batches, the last ones when the cache is dropped.
    drop(other);
    let stats = cache.stats().expect("stats");
    assert_eq!((stats.entries, stats.hits), (2, 3));
    assert_eq!(
        stats.models,
        vec![
            ModelStats {
                model: "m-a".into(),
                entries: 1,
                hits: 1
            },
            ModelStats {
                model: "m-b".into(),
                entries: 1,
                hits: 2
            },
        ]
    );
    assert!(stats.bytes > 0);
    // Everything was used just now: nothing is a day old.
    assert_eq!(
        cache
            .prune(Some(Duration::from_secs(86_400)))
            .expect("pruned"),
        0
    );
    assert_eq!(cache.prune(None).expect("pruned"), 2);
    assert_eq!(cache.get(&key(1)).expect("a lookup"), None);
}

#[test]
fn a_file_that_is_not_a_cache_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("answers.sqlite");
    std::fs::write(&path, vec![b'x'; 4096]).expect("garbage written");
    let error = AnswerCache::open(&path).expect_err("not a database");
    assert!(
        error.to_string().contains(&*path.to_string_lossy()),
        "{error}"
    );
    // Nothing was done to it.
    assert_eq!(std::fs::read(&path).expect("still there"), vec![b'x'; 4096]);
}

#[test]
fn prune_older_than_removes_answers_saved_before_then() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let cache = AnswerCache::open(&dir.path().join("a.sqlite")).expect("a new cache");
    cache.put(&key(1), "m", "{}").expect("stored");
    cache.put(&key(2), "m", "{}").expect("stored");
    // Answer 1 was saved 40 days ago.
    let forty_days_ago = now() - 40 * 86_400;
    cache
        .inner()
        .conn
        .execute(
            "UPDATE answers SET saved_at = ?2 WHERE key = ?1",
            params![&key(1).0[..], forty_days_ago],
        )
        .expect("backdated");
    let thirty_days = Duration::from_secs(30 * 86_400);
    assert_eq!(cache.prune(Some(thirty_days)).expect("pruned"), 1);
    assert_eq!(cache.get(&key(1)).expect("a lookup"), None);
    assert!(cache.get(&key(2)).expect("a lookup").is_some());
}
