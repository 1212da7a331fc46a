use super::*;

fn seq(id: SeqId, len: usize, arrival: u64) -> Sequence {
    Sequence::new(
        id,
        (0..len as u32).map(|t| t + 100 * id as u32).collect(),
        0,
        arrival,
    )
}

/// Drives the scheduler as the engine would: after each step every sampling sequence gets
/// one more token until it has `target` generated tokens.
fn run_to_completion(sched: &mut Scheduler, kv: &mut KvCacheManager, target: usize) -> usize {
    let mut steps = 0;
    while sched.has_work() {
        let out = sched.schedule(kv);
        assert!(!out.is_empty(), "scheduler stalled");
        assert!(out.num_batched_tokens <= sched.config().max_num_batched_tokens);
        sched.step_done(&out);
        for s in out.seqs.iter().filter(|s| s.samples) {
            sched.append_token(s.id, 7);
            if sched.get(s.id).unwrap().num_generated() >= target {
                sched.remove(s.id, kv);
            }
        }
        kv.check_invariants().unwrap();
        steps += 1;
        assert!(steps < 10_000);
    }
    steps
}

#[test]
fn decodes_come_before_new_prefills() {
    let mut kv = KvCacheManager::new(64, 4, false);
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_batched_tokens: 8,
        ..Default::default()
    });
    s.add(seq(1, 6, 0));
    let out = s.schedule(&mut kv);
    assert_eq!(out.seqs[0].num_new, 6);
    s.step_done(&out);
    s.append_token(1, 5);
    s.add(seq(2, 20, 1));
    let out = s.schedule(&mut kv);
    assert_eq!(
        out.seqs[0],
        ScheduledSeq {
            id: 1,
            num_computed: 6,
            num_new: 1,
            samples: true
        }
    );
    assert_eq!(out.seqs[1].id, 2);
    assert_eq!(
        out.seqs[1].num_new, 7,
        "prefill chunk fills the remaining budget"
    );
    assert!(!out.seqs[1].samples);
}

#[test]
fn preempts_newest_and_returns_all_blocks() {
    let mut kv = KvCacheManager::new(6, 4, false);
    let mut s = Scheduler::new(SchedulerConfig::default());
    for i in 0..4 {
        s.add(seq(i, 5, i));
    }
    run_to_completion(&mut s, &mut kv, 8);
    assert!(s.num_preemptions() > 0, "cache of 6 blocks must preempt");
    assert_eq!(kv.num_free_blocks(), 6);
}

#[test]
fn without_chunking_a_long_prompt_waits_for_a_whole_budget() {
    let mut kv = KvCacheManager::new(64, 4, false);
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_batched_tokens: 10,
        enable_chunked_prefill: false,
        ..Default::default()
    });
    s.add(seq(1, 4, 0));
    s.add(seq(2, 8, 1));
    let out = s.schedule(&mut kv);
    assert_eq!(out.seqs.len(), 1, "8 tokens do not fit the 6 left");
    s.step_done(&out);
    s.append_token(1, 3);
    let out = s.schedule(&mut kv);
    assert_eq!(out.seqs.len(), 2);
    assert_eq!(out.seqs[1].num_new, 8);
}

#[test]
fn priority_orders_admission() {
    let mut kv = KvCacheManager::new(64, 4, false);
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_seqs: 1,
        ..Default::default()
    });
    s.add(seq(1, 4, 0));
    let mut urgent = seq(2, 4, 1);
    urgent.priority = -1;
    s.add(urgent);
    let out = s.schedule(&mut kv);
    assert_eq!(out.seqs[0].id, 2);
}

#[test]
fn prefix_hits_skip_computed_tokens() {
    let mut kv = KvCacheManager::new(64, 4, true);
    let mut s = Scheduler::new(SchedulerConfig::default());
    let prompt: Vec<u32> = (0..10).collect();
    s.add(Sequence::new(1, prompt.clone(), 0, 0));
    let out = s.schedule(&mut kv);
    s.step_done(&out);
    s.add(Sequence::new(2, prompt, 0, 1));
    let out = s.schedule(&mut kv);
    let second = out.seqs.iter().find(|x| x.id == 2).unwrap();
    assert_eq!(second.num_computed, 8);
    assert_eq!(second.num_new, 2);
    assert_eq!(kv.prefix_cache_stats(), (20, 8));
}

#[test]
fn many_sequences_small_budget_small_cache_finish() {
    let mut kv = KvCacheManager::new(12, 4, true);
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_batched_tokens: 5,
        max_num_seqs: 8,
        enable_chunked_prefill: true,
    });
    for i in 0..20 {
        s.add(seq(i, 3 + (i as usize * 7) % 17, i));
    }
    run_to_completion(&mut s, &mut kv, 6);
    assert_eq!(kv.num_free_blocks(), 12);
}

#[test]
fn a_tenant_holding_every_slot_gives_one_up_to_another() {
    let mut kv = KvCacheManager::new(256, 4, false);
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_seqs: 4,
        ..Default::default()
    });
    let a: Arc<str> = "a".into();
    let b: Arc<str> = "b".into();
    for id in 0..8 {
        s.add(seq(id, 5, id).with_tenant(a.clone()));
    }
    let out = s.schedule(&mut kv);
    s.step_done(&out);
    assert_eq!(s.num_running(), 4);
    assert!(out.preempted.is_empty());

    s.add(seq(100, 5, 100).with_tenant(b.clone()));
    let out = s.schedule(&mut kv);
    assert!(
        out.seqs.iter().any(|q| q.id == 100),
        "b waited for a's slots"
    );
    // a's newest running sequence made room, and it is queued again, not lost.
    assert_eq!(out.preempted, [3]);
    assert_eq!(s.get(3).unwrap().status, SeqStatus::Waiting);
    assert_eq!(s.num_running(), 4);
    s.step_done(&out);

    // One against three: b's next request still takes a slot, to two each...
    s.add(seq(101, 5, 101).with_tenant(b.clone()));
    let out = s.schedule(&mut kv);
    assert_eq!(out.preempted, [2]);
    assert!(out.seqs.iter().any(|q| q.id == 101));
    s.step_done(&out);
    // ...and there it stops: a third one waits for a slot like anybody else.
    s.add(seq(102, 5, 102).with_tenant(b.clone()));
    let out = s.schedule(&mut kv);
    assert!(out.preempted.is_empty());
    assert!(out.seqs.iter().all(|q| q.id != 102));
    kv.check_invariants().unwrap();
}

#[test]
fn sharing_slots_between_tenants_finishes_everything_without_thrashing() {
    let mut kv = KvCacheManager::new(256, 4, false);
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_seqs: 4,
        ..Default::default()
    });
    for id in 0..12 {
        let tenant: Arc<str> = if id % 3 == 0 { "b".into() } else { "a".into() };
        s.add(seq(id, 6, id).with_tenant(tenant));
    }
    run_to_completion(&mut s, &mut kv, 10);
    assert_eq!(kv.num_free_blocks(), 256);
    // Each of b's four sequences takes at most one slot from a.
    assert!(s.num_preemptions() <= 4, "{}", s.num_preemptions());
}

#[test]
fn a_better_priority_is_never_preempted_for_fairness() {
    let mut kv = KvCacheManager::new(256, 4, false);
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_seqs: 2,
        ..Default::default()
    });
    let a: Arc<str> = "a".into();
    for id in 0..2 {
        let mut q = seq(id, 5, id).with_tenant(a.clone());
        q.priority = -1;
        s.add(q);
    }
    let out = s.schedule(&mut kv);
    s.step_done(&out);
    s.add(seq(9, 5, 9).with_tenant("b".into()));
    let out = s.schedule(&mut kv);
    assert!(out.preempted.is_empty());
    assert!(out.seqs.iter().all(|q| q.id != 9));
}
