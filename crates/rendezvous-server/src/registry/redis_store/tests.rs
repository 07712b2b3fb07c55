//! The Redis task store against a real `redis-server` on loopback (the
//! test kit's): the task store contract, leases, take-over, readiness.

use std::time::{Duration, Instant};

use rendezvous_testkit::DEADLINE;
use rendezvous_testkit::redis::RedisServer;

use super::backend::{millis, parse_member};
use super::*;
use crate::auth::Digest;
use crate::config::HOSTLESS_TASK_GRACE;
use crate::registry::tests::{record, task, task_store_contract};

/// A store on `redis` as replica `name`, with the shortest lease.
async fn replica(redis: &RedisServer, name: &str) -> RedisTaskStore {
    let url = RedisUrl::parse(&redis.url()).unwrap();
    let mut config = RedisStoreConfig::new(url, &format!("http://{name}.test:8080"));
    config.replica.id = name.to_owned();
    config.lease = MIN_LEASE;
    RedisTaskStore::connect(config)
        .await
        .expect("connect to redis")
}

/// Waits (at most [`DEADLINE`]) until `done`, polling every 20 ms.
async fn until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    tokio::time::timeout(DEADLINE, async {
        while !done().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("not in time: {what}"));
}

fn host_name(name: &str) -> HostName {
    HostName::or_default(name).unwrap()
}

#[tokio::test]
async fn the_redis_task_store_keeps_the_task_store_contract() {
    let redis = RedisServer::start().await;
    task_store_contract(&replica(&redis, "a").await).await;
}

#[tokio::test]
async fn redis_holds_digests_and_owners_never_secrets() {
    let redis = RedisServer::start().await;
    let store = replica(&redis, "a").await;
    let (owner, id) = (Owner::token("acme:ci"), task("build:42"));
    let record = TaskRecord {
        read_only_secret: Some(Digest::of("read-only-canary-secret")),
        ..record("read-write-canary-secret")
    };
    store
        .add_host(&owner, &id, &host_name("linux"), "h1", &record, 4)
        .await
        .unwrap();
    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut con)
        .await
        .unwrap();
    let mut keys = keys;
    keys.sort();
    assert_eq!(
        keys,
        ["rendezvous:task:build:42", "rendezvous:tasks"],
        "one key per task ID, and the index"
    );
    let fields: Vec<String> = redis::cmd("HGETALL")
        .arg("rendezvous:task:build:42")
        .query_async(&mut con)
        .await
        .unwrap();
    let text = fields.join("\n");
    assert_eq!(fields[0], "token:acme:ci");
    assert!(text.contains(&record.secret.to_hex()), "{text}");
    assert!(text.contains("\"rep\":\"a\""), "{text}");
    assert!(!text.contains("canary"), "a secret in Redis: {text}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg("rendezvous:task:build:42")
        .query_async(&mut con)
        .await
        .unwrap();
    let most = millis(MIN_LEASE + HOSTLESS_TASK_GRACE);
    assert!(ttl > 0 && ttl as u64 <= most, "the key expires: {ttl} ms");
    // The owner and ID are told apart however they use ':'.
    assert_eq!(
        parse_member("13:token:acme:cibuild:42"),
        Some((owner.clone(), id.clone()))
    );
    assert_eq!(parse_member("99:token:acme"), None);
    assert_eq!(parse_member("x:token"), None);
}

#[tokio::test]
async fn a_name_whose_replica_stops_renewing_is_free_after_the_lease() {
    let redis = RedisServer::start().await;
    let (a, b) = (replica(&redis, "a").await, replica(&redis, "b").await);
    let (owner, id, name) = (Owner::token("acme"), task("t"), host_name("default"));
    a.add_host(&owner, &id, &name, "h1", &record("s"), 4)
        .await
        .unwrap();
    // Renewed while a runs: still taken after more than one lease.
    let renewed_until = Instant::now() + MIN_LEASE + MIN_LEASE / 2;
    until("a lease and a half", || async {
        assert_eq!(
            b.add_host(&owner, &id, &name, "h2", &record("s"), 4).await,
            Err(RegistryError::HostNameTaken("default".into())),
            "a's renewed name is taken"
        );
        Instant::now() >= renewed_until
    })
    .await;
    assert_eq!(
        b.owner_of(&owner, &id, &name).await.unwrap(),
        Some(a.replica().clone())
    );
    b.add_host(&owner, &id, &host_name("second"), "h3", &record("s"), 4)
        .await
        .unwrap();
    let mut hosts = b.hosts_of(&owner, &id).await.unwrap();
    hosts.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        hosts,
        [
            ("default".to_owned(), a.replica().clone()),
            ("second".to_owned(), b.replica().clone()),
        ]
    );
    assert_eq!(b.this_replica(), Some(b.replica().clone()));
    assert!(b.hosts_of(&Owner::open(), &id).await.unwrap().is_empty());
    // By task and host name, under any owner: another owner's task with
    // the same ID and a host of the same name on b.
    let other = Owner::token("other-ci");
    b.add_host(&other, &id, &name, "h4", &record("t"), 4)
        .await
        .unwrap();
    let mut holders = b.holders_of(&id, &name).await.unwrap();
    holders.sort_by(|x, y| x.id.cmp(&y.id));
    let mut both = vec![a.replica().clone(), b.replica().clone()];
    both.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(holders, both);
    assert_eq!(
        b.holders_of(&id, &host_name("second")).await.unwrap(),
        [b.replica().clone()]
    );
    assert!(
        b.holders_of(&id, &host_name("none"))
            .await
            .unwrap()
            .is_empty()
    );
    b.remove_host(&other, &id, &name, "h4");

    // a stops (a crash: no removal, no renewal).
    drop(a);
    let stopped = Instant::now();
    until("the name is free on b", || async {
        b.add_host(&owner, &id, &name, "h2", &record("s"), 4)
            .await
            .is_ok()
    })
    .await;
    let waited = stopped.elapsed();
    assert!(
        waited <= MIN_LEASE + Duration::from_secs(1),
        "free within the lease: {waited:?}"
    );
    assert_eq!(
        b.owner_of(&owner, &id, &name).await.unwrap(),
        Some(b.replica().clone())
    );
}

#[tokio::test]
async fn a_resuming_host_takes_its_name_over_from_the_replica_it_left() {
    let redis = RedisServer::start().await;
    let (a, b) = (replica(&redis, "a").await, replica(&redis, "b").await);
    let (owner, id, name) = (Owner::token("acme"), task("t"), host_name("default"));
    a.add_host(&owner, &id, &name, "h1", &record("s"), 4)
        .await
        .unwrap();
    // Only the host that holds the name takes it over, with its secrets.
    assert_eq!(
        b.take_over_host(&owner, &id, &name, "h2", &record("s"), 4)
            .await,
        Err(RegistryError::HostNameTaken("default".into()))
    );
    assert_eq!(
        b.take_over_host(&owner, &id, &name, "h1", &record("other"), 4)
            .await,
        Err(RegistryError::Denied)
    );
    b.take_over_host(&owner, &id, &name, "h1", &record("s"), 4)
        .await
        .unwrap();
    assert_eq!(
        a.owner_of(&owner, &id, &name).await.unwrap(),
        Some(b.replica().clone())
    );
    // a's removal (its grace period for the host ending) leaves b's name
    // alone, and a's renewals do not take it back.
    a.remove_host(&owner, &id, &name, "h1");
    let past_renewals = Instant::now() + MIN_LEASE;
    until("a lease", || async {
        assert_eq!(
            a.add_host(&owner, &id, &name, "h3", &record("s"), 4).await,
            Err(RegistryError::HostNameTaken("default".into()))
        );
        assert_eq!(
            a.owner_of(&owner, &id, &name).await.unwrap(),
            Some(b.replica().clone())
        );
        Instant::now() >= past_renewals
    })
    .await;
}

#[tokio::test]
async fn readiness_follows_redis_and_the_directory_comes_back_after_a_restart() {
    let mut redis = RedisServer::start().await;
    let store = replica(&redis, "a").await;
    let (owner, id, name) = (Owner::token("acme"), task("t"), host_name("default"));
    store
        .add_host(&owner, &id, &name, "h1", &record("s"), 4)
        .await
        .unwrap();
    assert!(store.is_healthy());

    redis.stop();
    until("unhealthy", || async { !store.is_healthy() }).await;
    assert_eq!(
        store.task(&owner, &id).await.unwrap_err(),
        RegistryError::DirectoryUnavailable
    );
    let started = Instant::now();
    assert_eq!(
        store.tasks_with_id(&id).await.unwrap_err(),
        RegistryError::DirectoryUnavailable
    );
    assert!(started.elapsed() <= CALL_TIMEOUT + Duration::from_millis(500));

    // Back, empty (no persistence): healthy again, and the renewals put
    // this replica's host back into the directory.
    redis.restart().await;
    until("healthy", || async { store.is_healthy() }).await;
    until("the task is back", || async {
        matches!(store.task(&owner, &id).await, Ok(Some(_)))
    })
    .await;
    assert_eq!(
        store.owner_of(&owner, &id, &name).await.unwrap(),
        Some(store.replica().clone())
    );
    assert_eq!(store.len(), 1);
}

#[tokio::test]
async fn a_store_refuses_a_short_lease_and_an_unreachable_redis() {
    let redis = RedisServer::start().await;
    let url = RedisUrl::parse(&redis.url()).unwrap();
    let mut config = RedisStoreConfig::new(url, "http://a.test:8080");
    config.lease = Duration::from_secs(1);
    assert!(matches!(
        RedisTaskStore::connect(config.clone()).await,
        Err(RedisStoreError::LeaseTooShort(_))
    ));
    drop(redis);
    config.lease = DEFAULT_LEASE;
    let error = RedisTaskStore::connect(config).await.unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("cannot reach Redis at redis://127.0.0.1:"),
        "{error}"
    );
}
