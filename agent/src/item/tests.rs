use super::*;
use serde_json::json;

fn call<'a>(item: &'a Value, id: &'a IdKey) -> Call<'a> {
    Call {
        item,
        id,
        id_field: "id",
        launch_attempt: 1,
        item_attempt: 1,
    }
}

#[test]
fn missing_id_is_added_and_wrong_id_refused() {
    let item = json!({"id": 7});
    let id = IdKey::from_value(&item["id"]).expect("integer id");
    let Value::Object(record) = json!({"output": "x"}) else {
        panic!("object literal")
    };
    let fixed = with_id(record, call(&item, &id)).expect("id added");
    assert_eq!(fixed["id"], json!(7));
    let Value::Object(wrong) = json!({"id": "7"}) else {
        panic!("object literal")
    };
    assert!(matches!(
        with_id(wrong, call(&item, &id)),
        Err(AttemptError::WrongId { .. })
    ));
}

#[test]
fn local_wait_follows_retry_after_or_doubles() {
    assert_eq!(local_wait(Some(0.25), 1), Duration::from_millis(250));
    assert_eq!(local_wait(Some(1e300), 1), MAX_LOCAL_WAIT);
    let waits: Vec<u64> = (1..=8).map(|n| local_wait(None, n).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
}
