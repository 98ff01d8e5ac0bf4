//! The key pacer's rules, on a clock the tests move by hand.
use super::*;
use shared::broker::Window;
use shared::job::{Count, HumanDuration, PositiveRate};

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn window(limit: u64, remaining: u64, reset_seconds: f64) -> Option<Window> {
    Some(Window {
        limit,
        remaining,
        reset_seconds,
    })
}

fn requests(limit: u64, remaining: u64, reset_seconds: f64) -> LearnedLimits {
    LearnedLimits {
        requests: window(limit, remaining, reset_seconds),
        ..LearnedLimits::default()
    }
}

fn rate(rpm: Option<f64>, tpm: Option<f64>) -> RateSettings {
    RateSettings {
        requests_per_minute: rpm.map(PositiveRate),
        tokens_per_minute: tpm.map(PositiveRate),
        burst: Count(1),
        backoff: HumanDuration::from_secs(30),
        tokens_per_day: None,
        requests_per_day: None,
    }
}

/// Grants as many permits as it can at `now`.
fn drain(pacer: &mut KeyPacer, tokens: u64, now: Instant) -> usize {
    let mut granted = 0;
    while pacer.ready_at(tokens, now).is_none() {
        pacer.take(tokens);
        granted += 1;
        assert!(granted < 100_000, "no end to the permits");
    }
    granted
}

/// Permits granted over `seconds`, asking every 10 ms.
fn granted_over(pacer: &mut KeyPacer, from: Instant, seconds: f64) -> usize {
    (0..(seconds * 100.0) as u32)
        .map(|i| drain(pacer, 1, from + secs(f64::from(i) / 100.0)))
        .sum()
}

#[test]
fn nothing_learned_starts_with_a_few_then_answers_widen_it() {
    let now = Instant::now();
    let mut pacer = KeyPacer::new(Cap::new(None), now);
    assert_eq!(drain(&mut pacer, 1, now), 4, "a few at once");
    let next = pacer.ready_at(1, now).expect("then it waits");
    assert_eq!(next - now, secs(1.0), "a trickle, not a stop");
    for _ in 0..4 {
        pacer.report(1, 1, now);
    }
    assert_eq!(drain(&mut pacer, 1, now), 8, "four answers: twice as many");
}

#[test]
fn learned_limits_set_the_pace() {
    let now = Instant::now();
    let mut pacer = KeyPacer::new(Cap::new(None), now);
    let outcome = pacer.learn(&requests(120, 119, 0.5), now);
    assert!(outcome.retuned);
    assert_eq!(outcome.hold, None);
    assert_eq!(pacer.rates()[0], Some(2.0), "120 a minute");
    // A bucket of two seconds' worth, then one every half second.
    assert_eq!(drain(&mut pacer, 1, now), 4);
    assert_eq!(pacer.ready_at(1, now), Some(now + secs(0.5)));
    let later = now + secs(10.0);
    let granted = granted_over(&mut pacer, later, 30.0);
    assert!((59..=65).contains(&granted), "{granted} in 30 s at 2/s");
}

#[test]
fn the_level_is_never_above_what_the_server_says_remains() {
    let now = Instant::now();
    let mut pacer = KeyPacer::new(Cap::new(None), now);
    pacer.learn(&requests(600, 1, 30.0), now);
    assert_eq!(drain(&mut pacer, 1, now), 1);
}

#[test]
fn rate_caps_the_learned_pace() {
    let now = Instant::now();
    let mut pacer = KeyPacer::new(Cap::new(Some(&rate(Some(60.0), Some(600.0)))), now);
    assert_eq!(
        pacer.rates()[0],
        Some(1.0),
        "[rate] paces before anything is learned"
    );
    drain(&mut pacer, 1, now);
    assert_eq!(
        pacer.ready_at(1, now),
        Some(now + secs(1.0)),
        "no slow start with [rate]"
    );
    pacer.learn(&requests(6000, 5999, 0.01), now);
    assert_eq!(
        pacer.rates()[0],
        Some(1.0),
        "the server allows more: [rate] holds"
    );
    pacer.learn(&requests(30, 29, 2.0), now);
    assert_eq!(
        pacer.rates()[0],
        Some(0.5),
        "the server allows less: its limit holds"
    );
    let tokens = LearnedLimits {
        tokens: window(60_000, 50_000, 1.0),
        ..LearnedLimits::default()
    };
    pacer.learn(&tokens, now);
    assert_eq!(pacer.rates()[1], Some(10.0), "600 tokens a minute at most");
}

#[test]
fn nothing_remaining_holds_the_key_until_the_reset() {
    let now = Instant::now();
    let mut pacer = KeyPacer::new(Cap::new(None), now);
    pacer.learn(&requests(1000, 500, 10.0), now);
    let outcome = pacer.learn(&requests(1000, 0, 7.0), now);
    assert_eq!(outcome.hold, Some(secs(7.0)));
    assert_eq!(pacer.stopped_until(now), Some(now + secs(7.0)));
    assert_eq!(pacer.ready_at(1, now + secs(6.9)), Some(now + secs(7.0)));
    assert_eq!(
        pacer.ready_at(1, now + secs(7.0)),
        None,
        "granted at the reset"
    );
}

#[test]
fn a_backoff_pauses_one_key_and_not_another() {
    let now = Instant::now();
    let mut keys = KeyPacers::new(None);
    keys.get("http://a/v1 A_KEY", now)
        .learn(&requests(600, 599, 0.1), now);
    keys.get("http://b/v1 B_KEY", now)
        .learn(&requests(600, 599, 0.1), now);
    let pause = keys.get("http://a/v1 A_KEY", now).back_off(3.0, now);
    assert_eq!(pause, secs(3.0), "retry-after as given");
    let a = keys.get("http://a/v1 A_KEY", now).ready_at(1, now);
    assert_eq!(a, Some(now + secs(3.0)));
    assert_eq!(keys.get("http://b/v1 B_KEY", now).ready_at(1, now), None);
}

#[test]
fn a_backoff_without_retry_after_grows_and_resets_when_quiet() {
    let now = Instant::now();
    let mut pacer = KeyPacer::new(Cap::new(None), now);
    let mut at = now;
    let mut pauses = Vec::new();
    for _ in 0..8 {
        let pause = pacer.back_off(0.0, at);
        pauses.push(pause.as_secs());
        at += pause;
    }
    assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60]);
    // While paused, more reports of the same burst neither grow nor extend it.
    let during = pacer.back_off(0.0, at);
    assert_eq!(pacer.back_off(0.0, at + secs(1.0)), during - secs(1.0));
    let after = at + during;
    assert_eq!(
        pacer.back_off(0.0, after + QUIET).as_secs(),
        1,
        "quiet: from 1 s again"
    );
}

#[test]
fn the_pace_drops_at_once_then_climbs_back_slowly() {
    let now = Instant::now();
    let mut pacer = KeyPacer::new(Cap::new(None), now);
    pacer.learn(&requests(600, 599, 0.1), now);
    assert_eq!(pacer.rates()[0], Some(10.0));
    pacer.back_off(2.0, now);
    assert_eq!(pacer.rates()[0], Some(5.0), "halved at once");
    // A burst of 429s from many agents cuts the pace once, not each time.
    pacer.back_off(2.0, now + secs(0.5));
    assert_eq!(pacer.rates()[0], Some(5.0));
    let rate_at = |pacer: &mut KeyPacer, s: f64| {
        pacer.ready_at(1, now + secs(s));
        pacer.rates()[0].map(|r| (r * 100.0).round() / 100.0)
    };
    // The pause ends at 2.5 s; the climb starts from there.
    assert_eq!(
        rate_at(&mut pacer, 7.4),
        Some(5.0),
        "no climb before a quiet interval"
    );
    assert_eq!(
        rate_at(&mut pacer, 7.5),
        Some(6.0),
        "a step per quiet interval"
    );
    assert_eq!(rate_at(&mut pacer, 22.5), Some(9.0));
    assert_eq!(
        rate_at(&mut pacer, 60.0),
        Some(10.0),
        "never above the learned pace"
    );
}

#[test]
fn tokens_are_reserved_and_the_unused_part_given_back() {
    let now = Instant::now();
    let mut pacer = KeyPacer::new(Cap::new(None), now);
    // 6000 a minute: 100 a second, a bucket of 200.
    let tokens = LearnedLimits {
        tokens: window(6000, 6000, 0.0),
        ..LearnedLimits::default()
    };
    pacer.learn(&tokens, now);
    assert_eq!(drain(&mut pacer, 100, now), 2);
    assert_eq!(pacer.ready_at(100, now), Some(now + secs(1.0)));
    pacer.report(100, 40, now);
    pacer.report(100, 40, now);
    assert_eq!(
        drain(&mut pacer, 100, now),
        1,
        "120 unused tokens came back"
    );
    pacer.report(100, 300, now);
    assert_eq!(
        pacer.ready_at(100, now),
        Some(now + secs(2.8)),
        "and extra ones are owed"
    );
}

#[test]
fn input_and_output_tokens_are_paced_apart() {
    let now = Instant::now();
    let mut pacer = KeyPacer::new(Cap::new(None), now);
    // Anthropic's way: 60,000 input and 6,000 output tokens a minute; the
    // server has counted 3000 input and 1000 output tokens: a quarter output.
    let limits = LearnedLimits {
        requests: window(1000, 990, 1.0),
        input_tokens: window(60_000, 57_000, 3.0),
        output_tokens: window(6_000, 5_000, 10.0),
        ..LearnedLimits::default()
    };
    pacer.learn(&limits, now);
    let rates = pacer.rates();
    assert_eq!((rates[2], rates[3]), (Some(1000.0), Some(100.0)));
    // Output: a bucket of 200; a permit of 400 tokens charges it 100.
    assert_eq!(drain(&mut pacer, 400, now), 2);
    assert_eq!(
        pacer.ready_at(400, now),
        Some(now + secs(1.0)),
        "output is the limit"
    );
    let output_empty = LearnedLimits {
        output_tokens: window(6_000, 0, 4.0),
        ..LearnedLimits::default()
    };
    assert_eq!(pacer.learn(&output_empty, now).hold, Some(secs(4.0)));
}
