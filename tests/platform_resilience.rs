//! What the platform survives: a worker killed mid-segment, Redis losing every queued task,
//! a job cancelled while it renders, and a tenant over its concurrent-job limit. Real binary,
//! real Postgres, real Redis.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Api, Options, Platform};

/// A bulk plain-text job of `sentences` distinct sentences, with subtitles.
fn numbered_job(sentences: usize) -> Value {
    json!({
        "voice": support::VOICE,
        "text": support::numbered_sentences(0..sentences),
        "input_format": "text",
        "output_format": "wav",
        "options": { "subtitles": true },
        "priority": "bulk",
    })
}

/// Every sentence once, in order, nothing else: the cues of the job's WebVTT subtitles.
async fn assert_each_sentence_once(api: &Api, id: &str, sentences: usize) {
    let (status, vtt) = api
        .download(&format!("/v1/jobs/{id}/artifacts/subtitles.vtt"))
        .await;
    assert_eq!(status, 200);
    let vtt = String::from_utf8(vtt).unwrap();
    let cues: Vec<&str> = vtt
        .split("\n\n")
        .skip(1)
        .filter_map(|block| {
            let mut lines = block.lines();
            lines.find(|l| l.contains(" --> "))?;
            lines.next()
        })
        .collect();
    assert_eq!(cues.len(), sentences, "{vtt}");
    let mut distinct = cues.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), sentences, "a sentence is repeated: {vtt}");
    // The audio holds exactly the segments' samples, each once.
    let (status, wav) = api.download(&format!("/v1/jobs/{id}/result")).await;
    assert_eq!(status, 200);
    let reader = hound::WavReader::new(std::io::Cursor::new(wav)).unwrap();
    let seconds = reader.duration() as f64 / f64::from(reader.spec().sample_rate);
    let job = api.job(id).await;
    assert!(
        (seconds - job["audio_seconds"].as_f64().unwrap()).abs() < 0.05,
        "{seconds} s of audio, the job says {job}"
    );
}

/// No segment rendered twice into the result, none missing: all done, one row each.
fn assert_segments_complete(platform: &Platform, id: &str) {
    let counts = platform.sql(&format!(
        "SELECT count(*), count(*) FILTER (WHERE status = 'done'), count(DISTINCT index), \
         max(index) + 1 FROM segments WHERE job_id = '{id}'"
    ));
    let counts: Vec<i64> = counts.split('|').map(|c| c.parse().unwrap()).collect();
    assert!(counts[0] > 1, "{counts:?}");
    assert!(counts.iter().all(|&c| c == counts[0]), "{counts:?}");
}

#[test]
fn a_worker_killed_mid_segment_hands_its_work_to_another() {
    let mut platform = Platform::start_with(Options {
        workers: 2,
        // Short leases so the dead worker's segment comes back quickly.
        env: vec![("VOXPROOF_LEASE_SECONDS".into(), "4".into())],
        ..Options::default()
    });
    let api = platform.client("acme");
    let sentences = 120;
    let victim = platform.worker_pid(0);
    let id = support::runtime().block_on(api.submit(&numbered_job(sentences)));

    // Wait until the victim is in the middle of a segment, then kill it without warning.
    let started = Instant::now();
    let held = loop {
        let held = platform.sql(&format!(
            "SELECT index FROM segments WHERE job_id = '{id}' AND status = 'running' \
             AND worker LIKE '%-{victim}-%'"
        ));
        if !held.is_empty() {
            break held;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "worker {victim} never took a segment"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    platform.kill_worker(0);

    support::runtime().block_on(async {
        let job = api.finished(&id, Duration::from_secs(180)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_each_sentence_once(&api, &id, sentences).await;
    });
    assert_segments_complete(&platform, &id);
    // The segment the victim held was finished by the survivor.
    let index = held.lines().next().unwrap();
    let finisher = platform.sql(&format!(
        "SELECT worker FROM segments WHERE job_id = '{id}' AND index = {index}"
    ));
    let survivor = platform.worker_pid(1);
    assert!(
        finisher.contains(&format!("-{survivor}-")),
        "segment {index} was finished by {finisher}"
    );
}

/// A Redis server of this test's own, so FLUSHALL touches nobody else.
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = support::free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        let redis = OwnRedis { child, port };
        let started = Instant::now();
        while redis.cli(&["PING"]) != "PONG" {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis never answered"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_sweeper_recovers_a_job_after_redis_loses_everything() {
    let redis = OwnRedis::start();
    let platform = Platform::start_with(Options {
        redis_url: Some(format!("redis://127.0.0.1:{}", redis.port)),
        ..Options::default()
    });
    let api = platform.client("acme");
    let sentences = 72;
    support::runtime().block_on(async {
        let id = api.submit(&numbered_job(sentences)).await;
        let job = api
            .wait_until(&id, Duration::from_secs(60), |job| {
                job["progress"]["segments_done"].as_i64() >= Some(1)
            })
            .await;
        assert!(
            job["progress"]["segments_done"].as_i64() < job["progress"]["segments_total"].as_i64(),
            "the job finished before Redis could be flushed: {job}"
        );
        assert_eq!(redis.cli(&["FLUSHALL"]), "OK");
        let job = api.finished(&id, Duration::from_secs(180)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_each_sentence_once(&api, &id, sentences).await;
        assert_segments_complete(&platform, &id);
    });
}

#[test]
fn cancel_stops_a_running_job_and_frees_the_tenant_s_slot() {
    let platform = Platform::start_with(Options {
        env: vec![("VOXPROOF_MAX_CONCURRENT_JOBS".into(), "1".into())],
        ..Options::default()
    });
    let api = platform.client("acme");
    support::runtime().block_on(async {
        let id = api.submit(&numbered_job(150)).await;
        // One job at a time for this tenant: a second is refused while the first runs.
        let second = api
            .post("/v1/jobs")
            .json(&numbered_job(3))
            .send()
            .await
            .unwrap();
        assert_eq!(second.status(), 429);
        let body: Value = second.json().await.unwrap();
        assert_eq!(body["error"]["code"], "too_many_jobs", "{body}");

        let running = api
            .wait_until(&id, Duration::from_secs(60), |job| {
                job["status"] == "running" && job["progress"]["segments_done"].as_i64() >= Some(1)
            })
            .await;
        let total = running["progress"]["segments_total"].as_i64().unwrap();
        // A request waiting for the job to finish is answered when it is cancelled.
        let waiting = tokio::spawn(
            api.get(&format!("/v1/jobs/{id}"))
                .header("prefer", "wait=60")
                .send(),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cancel = api
            .post(&format!("/v1/jobs/{id}/cancel"))
            .send()
            .await
            .unwrap();
        assert_eq!(cancel.status(), 200);
        let cancelled: Value = cancel.json().await.unwrap();
        assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
        let waited: Value = waiting.await.unwrap().unwrap().json().await.unwrap();
        assert_eq!(waited["status"], "cancelled", "{waited}");

        // Work in hand may finish, but nothing new starts and the job stays cancelled.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let later = api.job(&id).await;
        assert_eq!(later["status"], "cancelled", "{later}");
        let done = later["progress"]["segments_done"].as_i64().unwrap();
        assert!(done < total, "{later}");
        let pending = platform.sql(&format!(
            "SELECT count(*) FROM segments WHERE job_id = '{id}' AND status IN ('pending', 'running')"
        ));
        assert_eq!(pending, "0");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(api.job(&id).await["progress"]["segments_done"], done);

        let result = api.get(&format!("/v1/jobs/{id}/result")).send().await.unwrap();
        assert_eq!(result.status(), 409);
        let again = api
            .post(&format!("/v1/jobs/{id}/cancel"))
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 409);

        // The slot is free again.
        let next = api.submit(&numbered_job(2)).await;
        let job = api.finished(&next, Duration::from_secs(60)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        // Every job has left queued/running, and the tenant's open-job count says so.
        assert_eq!(
            platform.sql(
                "SELECT o.open_jobs FROM tenant_open_jobs o JOIN tenants t ON t.id = o.tenant_id \
                 WHERE t.slug = 'acme'"
            ),
            "0"
        );
    });
}

#[test]
fn the_open_job_limit_holds_under_a_burst_of_concurrent_requests() {
    let platform = Platform::start_with(Options {
        env: vec![("VOXPROOF_MAX_CONCURRENT_JOBS".into(), "3".into())],
        ..Options::default()
    });
    let api = platform.client("acme");
    support::runtime().block_on(async {
        let body = numbered_job(200);
        let mut burst = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let request = api.post("/v1/jobs").json(&body);
            burst.spawn(async move { request.send().await.unwrap().status().as_u16() });
        }
        let statuses = burst.join_all().await;
        let accepted = statuses.iter().filter(|&&s| s == 202).count();
        let refused = statuses.iter().filter(|&&s| s == 429).count();
        assert_eq!((accepted, refused), (3, 13), "{statuses:?}");
    });
    assert_eq!(
        platform.sql(
            "SELECT o.open_jobs FROM tenant_open_jobs o JOIN tenants t ON t.id = o.tenant_id \
             WHERE t.slug = 'acme'"
        ),
        "3"
    );
}

/// Whether a stored segment holds as many bytes as its header's sample counts call for
/// (the header: 8 bytes of magic, the sample rate, the item count and each item's count).
fn whole_segment(path: &std::path::Path) -> bool {
    let bytes = std::fs::read(path).unwrap();
    let word = |at: usize| u64::from(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()));
    let items = word(12) as usize;
    let samples: u64 = (0..items).map(|i| word(16 + 4 * i)).sum();
    bytes.len() as u64 == 16 + 4 * items as u64 + 4 * samples
}

/// A resubmitted book reuses the segments its first rendering stored (content-addressed: the
/// same voice, settings and words), and renders again only the one whose stored audio was
/// damaged meanwhile.
#[test]
fn a_resubmitted_book_reuses_finished_segments_and_rerenders_a_damaged_one() {
    let platform = Platform::start();
    let api = platform.client("acme");
    let storage = std::path::PathBuf::from(
        platform
            .env_value("VOXPROOF_STORAGE")
            .strip_prefix("file://")
            .unwrap(),
    );
    let sentences = 14; // three segments
    support::runtime().block_on(async {
        let first = api.submit(&numbered_job(sentences)).await;
        let job = api.finished(&first, Duration::from_secs(120)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        let keys: Vec<String> = platform
            .sql(&format!(
                "SELECT content_key FROM segments WHERE job_id = '{first}' ORDER BY index"
            ))
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(keys.len(), 3, "{keys:?}");
        let stored = |key: &str| {
            let meta = std::fs::metadata(storage.join(key)).unwrap();
            (meta.len(), meta.modified().unwrap())
        };
        let before: Vec<_> = keys.iter().map(|k| stored(k)).collect();
        // The middle segment loses its last sample.
        let damaged = storage.join(&keys[1]);
        assert!(whole_segment(&damaged));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&damaged)
            .unwrap()
            .set_len(before[1].0 - 4)
            .unwrap();
        assert!(!whole_segment(&damaged));
        std::thread::sleep(Duration::from_millis(20)); // a rewrite gets a later time

        let second = api.submit(&numbered_job(sentences)).await;
        assert_ne!(second, first);
        let job = api.finished(&second, Duration::from_secs(120)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        let second_keys = platform.sql(&format!(
            "SELECT content_key FROM segments WHERE job_id = '{second}' ORDER BY index"
        ));
        assert_eq!(
            second_keys,
            keys.join("\n"),
            "the same words, the same keys"
        );
        let after: Vec<_> = keys.iter().map(|k| stored(k)).collect();
        assert_eq!(
            after[0], before[0],
            "a finished segment is reused, not rewritten"
        );
        assert_eq!(
            after[2], before[2],
            "a finished segment is reused, not rewritten"
        );
        assert!(
            after[1].1 > before[1].1,
            "the damaged segment is rendered again"
        );
        assert!(
            whole_segment(&damaged),
            "the rewritten segment is whole again"
        );
        assert_each_sentence_once(&api, &second, sentences).await;
    });
}

/// Queue messages arrive in any order, but a claim takes the job's lowest claimable segment,
/// so the assembler (which needs them in order) never waits on one rendered last.
#[test]
fn segments_are_claimed_in_order_whatever_message_arrives() {
    let mut platform = Platform::start_with(Options {
        workers: 1,
        ..Options::default()
    });
    // The API alone: nothing renders while the claims are made by hand.
    platform.kill_worker(0);
    let api = platform.client("acme");
    let id = support::runtime().block_on(api.submit(&numbered_job(120)));
    let total: i32 = platform
        .sql(&format!(
            "SELECT segments_total FROM jobs WHERE id = '{id}'"
        ))
        .parse()
        .unwrap();
    assert!(total >= 4, "{total} segments");
    support::runtime().block_on(async {
        let pool = voxproof_scheduler::db::connect(&platform.database, 2)
            .await
            .unwrap();
        let job_id: uuid::Uuid = id.parse().unwrap();
        let claim = || {
            let pool = pool.clone();
            async move {
                use voxproof_scheduler::jobs::{claim_segment, SegmentClaim};
                match claim_segment(&pool, job_id, "probe", 60, 4).await.unwrap() {
                    SegmentClaim::Work(work) => Some(work.index),
                    _ => None,
                }
            }
        };
        // Whichever message arrives first, claims go lowest index first.
        assert_eq!(claim().await, Some(0));
        assert_eq!(claim().await, Some(1));
        // A segment in its retry backoff is passed over until its time comes.
        platform.sql(&format!(
            "UPDATE segments SET not_before = now() + interval '1 hour' \
             WHERE job_id = '{id}' AND index = 2"
        ));
        assert_eq!(claim().await, Some(3));
    });
}
