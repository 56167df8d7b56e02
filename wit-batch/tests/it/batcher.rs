//! The batcher: each limit emits, keys stay apart, backpressure hands parts back, and a
//! property test checks batch boundaries against a plain model, with nothing lost or
//! duplicated. The async shell (feature `tokio`) runs on a paused clock.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use wit_batch::{
    BatchKey, Batcher, BatcherConfig, Compression, Envelope, Part, PayloadFormat, Push, Signal, SourceKind, Tenant,
};

fn key(tenant: &str) -> BatchKey {
    BatchKey::new(Tenant::try_new(tenant).unwrap(), Signal::Traces, SourceKind::Http)
}

/// A part whose source offset identifies it.
fn part(id: i64, messages: u32, bytes: usize) -> Part {
    Part::new(
        PayloadFormat::OtlpProtobuf,
        Compression::None,
        messages,
        vec![id as u8; bytes],
    )
    .with_source_offset(id)
}

fn ids(envelope: &Envelope) -> Vec<i64> {
    envelope.parts().iter().map(|p| p.source_offset.unwrap()).collect()
}

fn accepted(push: Push) -> Vec<Envelope> {
    match push {
        Push::Accepted { ready } => ready,
        Push::Full(part) => panic!("part {:?} was refused", part.source_offset),
    }
}

fn config() -> BatcherConfig {
    BatcherConfig::default()
        .with_max_messages(10)
        .with_max_bytes(1_000)
        .with_max_age(Duration::from_secs(1))
        .with_max_buffered_bytes(2_500)
}

#[test]
fn the_message_limit_emits() {
    let mut b = Batcher::try_new(config()).unwrap();
    let t0 = Instant::now();
    for id in 0..3 {
        assert!(accepted(b.push(&key("a"), part(id, 3, 1), t0)).is_empty());
    }
    // 12 messages do not fit into 10: the first three parts (9) leave when the fourth comes.
    let ready = accepted(b.push(&key("a"), part(3, 3, 1), t0));
    assert_eq!(ready.iter().map(ids).collect::<Vec<_>>(), [vec![0, 1, 2]]);
    assert_eq!(b.open_batches(), 1);
    // Reaching 10 exactly emits at once.
    let ready = accepted(b.push(&key("a"), part(4, 7, 1), t0));
    assert_eq!(ready.len(), 1);
    assert_eq!(ids(&ready[0]), [3, 4]);
    assert_eq!(ready[0].meta().message_count, 10);
    assert_eq!(b.open_batches(), 0);
}

#[test]
fn the_byte_limit_emits() {
    let mut b = Batcher::try_new(config()).unwrap();
    let t0 = Instant::now();
    assert!(accepted(b.push(&key("a"), part(0, 1, 600), t0)).is_empty());
    let ready = accepted(b.push(&key("a"), part(1, 1, 400), t0));
    assert_eq!(ready.iter().map(ids).collect::<Vec<_>>(), [vec![0, 1]]);
    assert_eq!(ready[0].meta().byte_size, 1_000);
    assert_eq!(b.buffered_bytes(), 0);
}

#[test]
fn the_age_limit_emits() {
    let mut b = Batcher::try_new(config()).unwrap();
    let t0 = Instant::now();
    let _ = b.push(&key("a"), part(0, 1, 1), t0);
    let _ = b.push(&key("a"), part(1, 1, 1), t0 + Duration::from_millis(900));
    assert_eq!(b.next_deadline(), Some(t0 + Duration::from_secs(1)));
    assert!(b.poll_expired(t0 + Duration::from_millis(999)).is_empty());
    let ready = b.poll_expired(t0 + Duration::from_secs(1));
    assert_eq!(ready.iter().map(ids).collect::<Vec<_>>(), [vec![0, 1]]);
    assert_eq!(b.next_deadline(), None);
}

#[test]
fn keys_are_batched_apart() {
    let mut b = Batcher::try_new(config()).unwrap();
    let t0 = Instant::now();
    let keys = [
        key("a"),
        key("b"),
        BatchKey::new(Tenant::try_new("a").unwrap(), Signal::Logs, SourceKind::Http),
        BatchKey::new(Tenant::try_new("a").unwrap(), Signal::Traces, SourceKind::Grpc),
        key("a").with_topic("t1"),
        key("a").with_topic("t2"),
    ];
    for round in 0..3 {
        for (k, key) in keys.iter().enumerate() {
            assert!(accepted(b.push(key, part((k * 10 + round) as i64, 1, 10), t0)).is_empty());
        }
    }
    assert_eq!(b.open_batches(), keys.len());
    let ready = b.flush_all();
    assert_eq!(ready.len(), keys.len());
    for (k, (envelope, key)) in ready.iter().zip(&keys).enumerate() {
        let meta = envelope.meta();
        assert_eq!(
            (&meta.tenant, meta.signal, meta.source),
            (&key.tenant, key.signal, key.source)
        );
        assert_eq!(meta.topics, key.topic.iter().cloned().collect::<Vec<_>>());
        let k = k as i64 * 10;
        assert_eq!(ids(envelope), [k, k + 1, k + 2]);
    }
}

#[test]
fn backpressure_hands_the_part_back_until_batches_leave() {
    let mut b = Batcher::try_new(config()).unwrap();
    let t0 = Instant::now();
    for (id, tenant) in ["a", "b", "c"].into_iter().enumerate() {
        assert!(accepted(b.push(&key(tenant), part(id as i64, 1, 800), t0)).is_empty());
    }
    assert_eq!(b.buffered_bytes(), 2_400);
    // A fourth key would hold 2,500 + 200 > 2,500.
    let refused = part(3, 1, 200);
    let Push::Full(back) = b.push(&key("d"), refused.clone(), t0) else {
        panic!("not refused")
    };
    assert_eq!(back, refused);
    assert_eq!((b.buffered_bytes(), b.open_batches()), (2_400, 3));
    // 100 bytes still fit.
    assert!(accepted(b.push(&key("d"), part(4, 1, 100), t0)).is_empty());
    assert!(matches!(b.push(&key("e"), part(5, 1, 1), t0), Push::Full(_)));

    // Once the aged batches leave, the part is taken.
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(b.poll_expired(t1).len(), 4);
    assert!(accepted(b.push(&key("d"), back, t1)).is_empty());
    assert_eq!(b.buffered_bytes(), 200);
}

#[test]
fn a_part_larger_than_max_bytes_is_emitted_alone() {
    let mut b = Batcher::try_new(config()).unwrap();
    let t0 = Instant::now();
    let _ = b.push(&key("a"), part(0, 1, 10), t0);
    // Even larger than the whole buffer: it is never held, so it is never refused.
    let ready = accepted(b.push(&key("a"), part(1, 1, 5_000), t0));
    assert_eq!(ready.iter().map(ids).collect::<Vec<_>>(), [vec![0], vec![1]]);
    assert_eq!(b.buffered_bytes(), 0);
}

/// What the documentation of `Batcher` promises, written out as plainly as possible.
#[derive(Default)]
struct Model {
    /// Per key: when its open batch was opened, its opening order, and its parts.
    open: HashMap<usize, (Instant, u64, Vec<Part>)>,
    next_seq: u64,
}

const MAX_MESSAGES: u64 = 8;
const MAX_BYTES: u64 = 100;
const MAX_AGE: Duration = Duration::from_millis(1_000);
const MAX_BUFFERED: u64 = 150;

fn totals(parts: &[Part]) -> (u64, u64) {
    (
        parts.iter().map(|p| u64::from(p.message_count)).sum(),
        parts.iter().map(|p| p.payload.len() as u64).sum(),
    )
}

fn at_limit(parts: &[Part]) -> bool {
    let (messages, bytes) = totals(parts);
    messages >= MAX_MESSAGES || bytes >= MAX_BYTES
}

impl Model {
    fn buffered(&self) -> u64 {
        self.open.values().map(|(_, _, parts)| totals(parts).1).sum()
    }

    /// `None` for "full", else the emitted batches as (key, part ids).
    fn push(&mut self, k: usize, part: Part, now: Instant) -> Option<Vec<(usize, Vec<i64>)>> {
        let mut current = self.open.get(&k).map(|(_, _, parts)| parts.clone()).unwrap_or_default();
        let held = totals(&current).1;
        let emit_first = self.open.get(&k).is_some_and(|(opened, _, parts)| {
            let mut with = parts.clone();
            with.push(part.clone());
            let (messages, bytes) = totals(&with);
            now.duration_since(*opened) >= MAX_AGE || messages > MAX_MESSAGES || bytes > MAX_BYTES
        });
        if emit_first {
            current.clear();
        }
        current.push(part.clone());
        let held_after = if at_limit(&current) { 0 } else { totals(&current).1 };
        if self.buffered() - held + held_after > MAX_BUFFERED {
            return None;
        }
        let mut ready = Vec::new();
        if emit_first {
            ready.push(self.take(k));
        }
        let seq = self.next_seq;
        let entry = self.open.entry(k).or_insert_with(|| (now, seq, Vec::new()));
        if entry.1 == seq {
            self.next_seq += 1;
        }
        entry.2.push(part);
        if at_limit(&entry.2) {
            ready.push(self.take(k));
        }
        Some(ready)
    }

    fn take(&mut self, k: usize) -> (usize, Vec<i64>) {
        let (_, _, parts) = self.open.remove(&k).unwrap();
        (k, parts.iter().map(|p| p.source_offset.unwrap()).collect())
    }

    fn take_where(&mut self, pred: impl Fn(Instant) -> bool) -> Vec<(usize, Vec<i64>)> {
        let mut keys: Vec<(u64, usize)> = self
            .open
            .iter()
            .filter(|(_, (opened, _, _))| pred(*opened))
            .map(|(&k, (_, seq, _))| (*seq, k))
            .collect();
        keys.sort();
        keys.into_iter().map(|(_, k)| self.take(k)).collect()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Push { key: usize, messages: u32, bytes: usize },
    Advance(u64),
    Poll,
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0usize..4, 0u32..5, prop_oneof![4 => 0usize..40, 1 => 40usize..130])
            .prop_map(|(key, messages, bytes)| Op::Push { key, messages, bytes }),
        3 => (0u64..700).prop_map(Op::Advance),
        2 => Just(Op::Poll),
        1 => Just(Op::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn batches_match_the_model_and_nothing_is_lost(ops in proptest::collection::vec(op(), 1..120)) {
        let config = BatcherConfig::default()
            .with_max_messages(MAX_MESSAGES)
            .with_max_bytes(MAX_BYTES)
            .with_max_age(MAX_AGE)
            .with_max_buffered_bytes(MAX_BUFFERED);
        let mut batcher = Batcher::try_new(config).unwrap();
        let mut model = Model::default();
        let keys: Vec<BatchKey> = (0..4).map(|k| key(&format!("tenant{k}"))).collect();
        let key_index = |e: &Envelope| keys.iter().position(|k| k.tenant == e.meta().tenant).unwrap();
        let t0 = Instant::now();
        let mut now = t0;
        let mut next_id = 0i64;
        let mut pushed: Vec<Vec<i64>> = vec![Vec::new(); keys.len()];
        let mut emitted: Vec<Vec<i64>> = vec![Vec::new(); keys.len()];
        let mut last_id = None;

        for op in ops {
            let ready = match op {
                Op::Push { key: k, messages, bytes } => {
                    let p = part(next_id, messages, bytes);
                    next_id += 1;
                    let expected = model.push(k, p.clone(), now);
                    match (batcher.push(&keys[k], p.clone(), now), expected) {
                        (Push::Accepted { ready }, Some(expected)) => {
                            pushed[k].push(p.source_offset.unwrap());
                            let got: Vec<_> = ready.iter().map(|e| (key_index(e), ids(e))).collect();
                            prop_assert_eq!(got, expected);
                            ready
                        }
                        (Push::Full(back), None) => {
                            prop_assert_eq!(back, p);
                            // Only ever refused while other keys hold bytes, which will age out.
                            let others: u64 = model.open.iter().filter(|(o, _)| **o != k).map(|(_, (_, _, ps))| totals(ps).1).sum();
                            prop_assert!(others > 0);
                            Vec::new()
                        }
                        (got, expected) => {
                            return Err(TestCaseError::fail(format!("batcher: {got:?}, model: {expected:?}")));
                        }
                    }
                }
                Op::Advance(ms) => {
                    now += Duration::from_millis(ms);
                    Vec::new()
                }
                Op::Poll => {
                    let ready = batcher.poll_expired(now);
                    let expected = model.take_where(|opened| now.duration_since(opened) >= MAX_AGE);
                    let got: Vec<_> = ready.iter().map(|e| (key_index(e), ids(e))).collect();
                    prop_assert_eq!(got, expected);
                    prop_assert!(batcher.next_deadline().is_none_or(|d| d > now));
                    ready
                }
                Op::Flush => {
                    let ready = batcher.flush_all();
                    let expected = model.take_where(|_| true);
                    let got: Vec<_> = ready.iter().map(|e| (key_index(e), ids(e))).collect();
                    prop_assert_eq!(got, expected);
                    ready
                }
            };
            for envelope in &ready {
                let meta = envelope.meta();
                prop_assert!(
                    envelope.parts().len() == 1 || (meta.message_count <= MAX_MESSAGES && meta.byte_size <= MAX_BYTES),
                    "batch over a limit: {} messages, {} bytes, {} parts", meta.message_count, meta.byte_size, envelope.parts().len()
                );
                prop_assert!(last_id < Some(meta.id), "ids increase in emission order");
                last_id = Some(meta.id);
                emitted[key_index(envelope)].extend(ids(envelope));
            }
            prop_assert_eq!(batcher.buffered_bytes(), model.buffered());
            prop_assert!(batcher.buffered_bytes() <= MAX_BUFFERED);
            prop_assert_eq!(batcher.open_batches(), model.open.len());
        }

        for envelope in batcher.flush_all() {
            emitted[key_index(&envelope)].extend(ids(&envelope));
        }
        // Every accepted part came out exactly once, in order, under its own key.
        prop_assert_eq!(emitted, pushed);
        prop_assert_eq!(batcher.buffered_bytes(), 0);
    }
}

#[cfg(feature = "tokio")]
mod async_shell {
    use std::sync::Arc;

    use tokio::sync::mpsc;
    use tokio::time::Instant;
    use wit_batch::{AsyncBatcher, Error};

    use super::*;

    fn spawn(config: BatcherConfig, capacity: usize) -> (Arc<AsyncBatcher>, mpsc::Receiver<Envelope>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Arc::new(AsyncBatcher::spawn(config, tx).unwrap()), rx)
    }

    #[tokio::test(start_paused = true)]
    async fn batches_leave_when_they_are_old_enough() {
        let (batcher, mut rx) = spawn(config(), 8);
        let start = Instant::now();
        batcher.push(&key("a"), part(0, 1, 10)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        batcher.push(&key("a"), part(1, 1, 10)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(599)).await;
        assert!(rx.try_recv().is_err(), "nothing before a second");

        let batch = rx.recv().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(ids(&batch), [0, 1]);

        // The flusher sleeps with no batch open, and wakes for the next one.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let start = Instant::now();
        batcher.push(&key("b"), part(2, 1, 10)).await.unwrap();
        let batch = rx.recv().await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(ids(&batch), [2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_leaves_at_once() {
        let (batcher, mut rx) = spawn(config(), 8);
        let start = Instant::now();
        for id in 0..5 {
            batcher.push(&key("a"), part(id, 2, 1)).await.unwrap();
        }
        let batch = rx.recv().await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(batch.meta().message_count, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn push_waits_while_the_batcher_is_full() {
        let (batcher, mut rx) = spawn(config(), 8);
        let start = Instant::now();
        batcher.push(&key("a"), part(0, 1, 900)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        batcher.push(&key("b"), part(1, 1, 900)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        batcher.push(&key("c"), part(2, 1, 600)).await.unwrap();

        let waiting = tokio::spawn({
            let batcher = Arc::clone(&batcher);
            async move {
                batcher.push(&key("d"), part(3, 1, 600)).await.unwrap();
                Instant::now()
            }
        });
        tokio::time::sleep(Duration::from_millis(399)).await;
        assert!(
            !waiting.is_finished(),
            "2,400 + 600 bytes exceed 2,500: the push must wait"
        );

        // At 1 s the first batch ages out, and the waiting push gets in.
        let accepted_at = waiting.await.unwrap();
        assert_eq!(accepted_at - start, Duration::from_secs(1));
        assert_eq!(ids(&rx.recv().await.unwrap()), [0]);

        batcher.close().await.unwrap();
        let rest: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).map(|e| ids(&e)).collect();
        assert_eq!(rest, [vec![1], vec![2], vec![3]]);
    }

    #[tokio::test(start_paused = true)]
    async fn push_waits_while_the_receiver_is_behind() {
        let (batcher, mut rx) = spawn(config().with_max_messages(1), 1);
        batcher.push(&key("a"), part(0, 1, 1)).await.unwrap(); // fills the channel
        let waiting = tokio::spawn({
            let batcher = Arc::clone(&batcher);
            async move { batcher.push(&key("a"), part(1, 1, 1)).await }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiting.is_finished());
        assert_eq!(ids(&rx.recv().await.unwrap()), [0]);
        waiting.await.unwrap().unwrap();
        assert_eq!(ids(&rx.recv().await.unwrap()), [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn close_emits_everything_then_ends_the_channel() {
        let (batcher, mut rx) = spawn(config(), 8);
        for (id, tenant) in ["a", "b", "a"].into_iter().enumerate() {
            batcher.push(&key(tenant), part(id as i64, 1, 1)).await.unwrap();
        }
        let start = Instant::now();
        batcher.close().await.unwrap();
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(ids(&rx.recv().await.unwrap()), [0, 2]);
        assert_eq!(ids(&rx.recv().await.unwrap()), [1]);
        assert!(rx.recv().await.is_none());

        assert!(matches!(
            batcher.push(&key("a"), part(3, 1, 1)).await,
            Err(Error::Closed)
        ));
        batcher.close().await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_batcher_flushes_in_the_background() {
        let (tx, mut rx) = mpsc::channel(8);
        let batcher = AsyncBatcher::spawn(config(), tx).unwrap();
        batcher.push(&key("a"), part(0, 1, 1)).await.unwrap();
        drop(batcher);
        assert_eq!(ids(&rx.recv().await.unwrap()), [0]);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_receiver_closes_the_batcher() {
        let (batcher, rx) = spawn(config(), 8);
        batcher.push(&key("a"), part(0, 1, 1)).await.unwrap();
        drop(rx);
        assert!(matches!(
            batcher.push(&key("a"), part(1, 1, 1)).await,
            Err(Error::Closed)
        ));
        assert!(matches!(batcher.close().await, Err(Error::Closed)));
    }

    #[test]
    fn an_invalid_config_is_refused_before_spawning() {
        let (tx, _rx) = mpsc::channel(1);
        let config = BatcherConfig::default().with_max_messages(0);
        // No runtime is needed to be told the configuration is wrong.
        assert!(matches!(
            AsyncBatcher::spawn(config, tx),
            Err(Error::InvalidConfig { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_pushes_lose_and_duplicate_nothing() {
        let config = BatcherConfig::default()
            .with_max_messages(7)
            .with_max_bytes(300)
            .with_max_age(Duration::from_millis(2))
            .with_max_buffered_bytes(600);
        let (batcher, mut rx) = spawn(config, 2);
        let receiver = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(envelope) = rx.recv().await {
                got.push(envelope);
            }
            got
        });
        let pushers: Vec<_> = (0..4)
            .map(|task| {
                let batcher = Arc::clone(&batcher);
                tokio::spawn(async move {
                    for n in 0..250 {
                        let id = task * 1_000 + n;
                        let k = key(&format!("t{}", n % 3));
                        batcher
                            .push(&k, part(id, (n % 3) as u32, (n % 50) as usize))
                            .await
                            .unwrap();
                    }
                })
            })
            .collect();
        for pusher in pushers {
            pusher.await.unwrap();
        }
        batcher.close().await.unwrap();
        let batches = receiver.await.unwrap();
        let mut all: Vec<i64> = batches.iter().flat_map(ids).collect();
        all.sort();
        let expected: Vec<i64> = (0..4)
            .flat_map(|task| (0..250).map(move |n| task * 1_000 + n))
            .collect();
        assert_eq!(all, expected);
        // Within a key, each task's parts keep their order.
        for task in 0..4 {
            for t in 0..3 {
                let tenant = format!("t{t}");
                let seen: Vec<i64> = batches
                    .iter()
                    .filter(|e| e.meta().tenant.as_str() == tenant)
                    .flat_map(ids)
                    .filter(|id| id / 1_000 == task)
                    .collect();
                assert!(seen.windows(2).all(|w| w[0] < w[1]), "task {task}, {tenant}: {seen:?}");
            }
        }
    }
}
