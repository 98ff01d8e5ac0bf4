//! The scheduler driven in-process: the order of launches, the concurrency
//! limit, retries after their backoff, requeues at the front, the stagger.

use std::time::Duration;

use shared::job::{AgentSettings, Count, HumanDuration, ScheduleSettings};
use shared::plan::{AgentPlan, AgentRef};

use super::*;

fn agent(orchestrator: usize, number: usize) -> AgentPlan {
    let at = AgentRef {
        segment: 1,
        orchestrator,
        agent: number,
    };
    AgentPlan {
        name: at.to_string(),
        at,
        first_item: 0,
        items: 1,
    }
}

fn launched<'p>(next: Next<'p>) -> &'p AgentPlan {
    match next {
        Next::Launch(agent) => agent,
        other => panic!("expected a launch, got {other:?}"),
    }
}

#[test]
fn agents_start_in_the_order_fed_up_to_the_concurrency_limit() {
    let agents = [agent(1, 1), agent(1, 2), agent(1, 3)];
    let now = Instant::now();
    let mut scheduler = Scheduler::new(&ScheduleSettings::default(), 2, HashMap::new(), now);
    scheduler.feed(&agents);
    scheduler.admit_due(now);
    assert_eq!(launched(scheduler.next(now, 0)).name, agents[0].name);
    assert_eq!(launched(scheduler.next(now, 1)).name, agents[1].name);
    assert!(
        matches!(scheduler.next(now, 2), Next::Nothing),
        "two run: the limit"
    );
    assert!(!scheduler.is_idle());
    assert_eq!(launched(scheduler.next(now, 1)).name, agents[2].name);
    assert!(scheduler.is_idle());
}

#[test]
fn a_retry_waits_for_its_doubling_backoff_and_stops_when_retries_run_out() {
    let failing = agent(1, 1);
    let settings = AgentSettings {
        retries: 2,
        retry_backoff: HumanDuration::from_secs(5),
        ..AgentSettings::default()
    };
    let now = Instant::now();
    let mut scheduler = Scheduler::new(&ScheduleSettings::default(), 4, HashMap::new(), now);
    assert_eq!(
        scheduler.retry(&failing, &settings, now),
        Some((1, Duration::from_secs(5)))
    );
    scheduler.admit_due(now);
    assert!(
        matches!(scheduler.next(now, 0), Next::Nothing),
        "not yet due"
    );
    assert_eq!(scheduler.next_wake(), Some(now + Duration::from_secs(5)));
    let later = now + Duration::from_secs(5);
    scheduler.admit_due(later);
    assert_eq!(launched(scheduler.next(later, 0)).name, failing.name);
    assert_eq!(
        scheduler.retry(&failing, &settings, later),
        Some((2, Duration::from_secs(10))),
        "the backoff doubles"
    );
    assert_eq!(scheduler.retry(&failing, &settings, later), None);
}

#[test]
fn an_agent_killed_to_make_room_goes_back_to_the_front() {
    let agents = [agent(1, 1), agent(1, 2), agent(1, 3)];
    let now = Instant::now();
    let mut scheduler = Scheduler::new(&ScheduleSettings::default(), 4, HashMap::new(), now);
    scheduler.feed(&agents[1..]);
    scheduler.requeue(&agents[0]);
    scheduler.admit_due(now);
    assert_eq!(launched(scheduler.next(now, 0)).name, agents[0].name);
}

#[test]
fn attempt_numbers_go_on_from_the_journal() {
    let first = agent(1, 1);
    let now = Instant::now();
    let launches = HashMap::from([(first.name.clone(), 2)]);
    let mut scheduler = Scheduler::new(&ScheduleSettings::default(), 1, launches, now);
    assert_eq!(scheduler.adopted_attempt(&first), 2);
    assert_eq!(scheduler.next_attempt(&first), 3);
    let second = agent(1, 2);
    assert_eq!(
        scheduler.adopted_attempt(&second),
        1,
        "submitted, never journaled"
    );
}

#[test]
fn a_staggered_orchestrator_waits_while_the_first_starts() {
    let agents = [agent(2, 1), agent(1, 1)];
    let schedule = ScheduleSettings {
        orchestrator_stagger: HumanDuration::from_secs(30),
        ..ScheduleSettings::default()
    };
    let now = Instant::now();
    let mut scheduler = Scheduler::new(&schedule, 4, HashMap::new(), now);
    scheduler.start_segment(now);
    scheduler.feed(&agents);
    scheduler.admit_due(now);
    assert_eq!(
        launched(scheduler.next(now, 0)).name,
        agents[1].name,
        "orchestrator 1 goes first though fed second"
    );
    match scheduler.next(now, 1) {
        Next::WaitUntil(at) => assert_eq!(at, now + Duration::from_secs(30)),
        other => panic!("orchestrator 2 waits for its stagger: {other:?}"),
    }
    assert_eq!(scheduler.next_wake(), Some(now + Duration::from_secs(30)));
}

#[test]
fn the_warmup_holds_launches_until_its_delay_passed() {
    let agents = [agent(1, 1), agent(1, 2)];
    let schedule = ScheduleSettings {
        warmup: Some(Count(1)),
        warmup_delay: HumanDuration::from_secs(10),
        ..ScheduleSettings::default()
    };
    let now = Instant::now();
    let mut scheduler = Scheduler::new(&schedule, 4, HashMap::new(), now);
    scheduler.feed(&agents);
    scheduler.admit_due(now);
    launched(scheduler.next(now, 0));
    scheduler.note_launch(now);
    assert!(matches!(scheduler.next(now, 1), Next::WaitUntil(_)));
    let later = now + Duration::from_secs(10);
    assert_eq!(launched(scheduler.next(later, 1)).name, agents[1].name);
}
