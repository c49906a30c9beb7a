//! The durable store: session logs in NATS JetStream, for the hub's durable mode (see
//! `core/hub/durable.rs` for the rules). Like the cluster adapter it holds no rule: it appends
//! the records the hub asks for, reads logs back, and reports each outcome to the hub's task.
//! It never purges: in nats-server 2.9 a purge of one subject scans the whole stream, and a
//! few hundred at once stalled every append for 200 ms (bench/results/durable/report.md).
//!
//! One stream per cluster, `SIGNALGATE_<cluster name>`, subjects
//! `signalgate.<cluster name>.session.<log key>`, file storage, replicated
//! (`--durable-replicas`). Appends carry `Nats-Expected-Last-Subject-Sequence` (one writer per
//! log) and `Nats-Msg-Id` (a retry of an append that was stored after all is recognised by
//! JetStream, not stored twice); reads go to the stream's leader, never to a replica that may
//! lag behind.
//!
//! Appends go straight to the stream leader's server when the gateway is connected to another
//! one: JetStream appends are handled by the leader, and through another server each takes a
//! route hop both ways (measured on this project's 2-core box, 1,000 appends/s, R3: ack p99
//! 2.1–2.3 ms direct, 3.2–4.4 ms through a follower). The leader's server is found among the
//! client URLs the NATS cluster advertises; while it cannot be reached, appends go through the
//! gateway's own connection as before.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use bytes::Bytes;
use prost::Message;
use tokio::sync::{mpsc, watch};

use super::hub_driver::HubInput;
use crate::config::DurableConfig;
use crate::core::hub::{PersistFailure, StoredRecord};
use crate::metrics;
use crate::proto::cluster::DurableRecord;

/// Records older than this, and beyond the newest this many of a log, are dropped by JetStream
/// itself; a session's holder checkpoints its log so that both drop only what no recovery
/// needs (`core::hub::durable`). No log is ever purged: a purge scans the stream.
use crate::core::hub::{LOG_MAX_AGE, LOG_RECORDS};

/// Between two tries of an append that failed for a reason that may pass (no quorum yet, a
/// leader election, a NATS server reconnecting).
const RETRY_EVERY: Duration = Duration::from_millis(100);

/// A log's records, read back, at most.
const MAX_RECORDS: usize = 10_000;

/// How long a log may take to be read, tries included: a NATS node's death costs its streams
/// a leader election of a few seconds, and a client's Hello waits meanwhile.
const READ_WITHIN: Duration = Duration::from_secs(8);
/// One try at reading a log.
const READ_TRY: Duration = Duration::from_secs(1);

/// How often the store checks which server leads the stream (a leader moves when a NATS node
/// fails or restarts).
const LEADER_CHECK_EVERY: Duration = Duration::from_secs(5);
/// ...and while it has no leader.
const LEADER_RETRY: Duration = Duration::from_millis(250);
/// One try of an append on the direct link to the leader: short, so that an append caught by
/// the leader's death is retried through the gateway's own connection well within
/// `--durable-timeout`.
const LEADER_TRY: Duration = Duration::from_secs(1);

/// A connection of its own to the stream leader's server.
#[derive(Clone)]
struct LeaderLink {
    server: String,
    client: async_nats::Client,
    context: jetstream::Context,
}

impl LeaderLink {
    fn up(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// What the hub's task learns from the store.
#[derive(Debug)]
pub enum DurableEvent {
    Persisted {
        key: String,
        stream_seq: u64,
    },
    PersistFailed {
        key: String,
        failure: PersistFailure,
    },
    Read {
        ticket: u64,
        result: Result<Vec<StoredRecord>, String>,
    },
}

/// The store's side of the hub's task: hands work to tasks of its own.
pub struct DurableStore {
    context: jetstream::Context,
    /// The stream, once it exists (created or checked in the background at start).
    stream: watch::Receiver<Option<stream::Stream>>,
    subject_prefix: String,
    timeout: Duration,
    hub: mpsc::Sender<HubInput>,
    /// The direct link to the stream leader's server, when there is one.
    leader: watch::Receiver<Option<LeaderLink>>,
}

impl DurableStore {
    /// Creates (or checks) the stream in the background, retrying until JetStream answers;
    /// appends wait for it, within their timeout.
    pub fn start(
        client: async_nats::Client,
        cluster_name: &str,
        config: &DurableConfig,
        hub: mpsc::Sender<HubInput>,
    ) -> Self {
        let context = jetstream::new(client.clone());
        let subject_prefix = format!("signalgate.{cluster_name}.session");
        let stream_config = stream::Config {
            name: format!("SIGNALGATE_{cluster_name}"),
            subjects: vec![format!("{subject_prefix}.*")],
            storage: stream::StorageType::File,
            num_replicas: usize::from(config.replicas),
            max_age: LOG_MAX_AGE,
            max_messages_per_subject: i64::from(LOG_RECORDS),
            // Longer than any append is retried: a retry is recognised, not stored twice.
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        let (ready, stream) = watch::channel(None);
        let ctx = context.clone();
        tokio::spawn(async move {
            let mut logged = false;
            loop {
                match ctx.get_or_create_stream(stream_config.clone()).await {
                    Ok(stream) => {
                        tracing::info!(
                            stream = %stream_config.name,
                            replicas = stream_config.num_replicas,
                            "durable session logs ready (JetStream)"
                        );
                        let _ = ready.send(Some(stream));
                        return;
                    }
                    Err(error) => {
                        if !logged {
                            tracing::warn!(
                                stream = %stream_config.name,
                                %error,
                                "JetStream is not ready for the session logs yet; retrying \
                                 (nothing is accepted for a session until its log is written)"
                            );
                            logged = true;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        let (link, leader) = watch::channel(None);
        tokio::spawn(follow_the_leader(client, stream.clone(), link));
        metrics::durable_configured();
        Self {
            context,
            stream,
            subject_prefix,
            timeout: config.timeout,
            hub,
            leader,
        }
    }

    fn subject(&self, key: &str) -> String {
        format!("{}.{key}", self.subject_prefix)
    }

    /// Appends a record; the outcome goes to the hub.
    pub fn persist(&self, key: String, expect_last: Option<u64>, record: &DurableRecord) {
        let subject = self.subject(&key);
        let payload = Bytes::from(record.encode_to_vec());
        let session = record.session.as_ref();
        let message_id = format!(
            "{key}-{}-{}",
            session.map_or(0, |s| s.durable_generation),
            session.map_or(0, |s| s.durable_revision)
        );
        let context = self.context.clone();
        let leader = self.leader.clone();
        let mut stream = self.stream.clone();
        let timeout = self.timeout;
        let hub = self.hub.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let deadline = tokio::time::Instant::now() + timeout;
            let outcome = async {
                let mut last_error = format!("JetStream did not answer within {timeout:?}");
                loop {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id.as_str());
                    if let Some(seq) = expect_last {
                        headers.insert(
                            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                            seq.to_string().as_str(),
                        );
                    }
                    // Straight to the leader while that link is up; else through this
                    // gateway's own server.
                    let direct = leader.borrow().clone().filter(LeaderLink::up);
                    let (context, within) = match &direct {
                        Some(link) => (
                            &link.context,
                            deadline.min(tokio::time::Instant::now() + LEADER_TRY),
                        ),
                        None => (&context, deadline),
                    };
                    let attempt = async {
                        let ack = context
                            .publish_with_headers(subject.clone(), headers, payload.clone())
                            .await?;
                        ack.await
                    };
                    match tokio::time::timeout_at(within, attempt).await {
                        Ok(Ok(ack)) => return Ok(ack.sequence),
                        Ok(Err(error)) if error.kind() == PublishErrorKind::WrongLastSequence => {
                            let last =
                                tokio::time::timeout_at(deadline, read_last(&mut stream, &subject))
                                    .await
                                    .ok()
                                    .flatten();
                            return Err(PersistFailure::Conflict {
                                last: last.map(Box::new),
                            });
                        }
                        Ok(Err(error)) => last_error = error.to_string(),
                        Err(_) => {}
                    }
                    if tokio::time::Instant::now() + RETRY_EVERY >= deadline {
                        return Err(PersistFailure::Unavailable(last_error));
                    }
                    tokio::time::sleep(RETRY_EVERY).await;
                }
            }
            .await;
            let result = match &outcome {
                Ok(seq) => format!("stored at {seq}"),
                Err(PersistFailure::Conflict { last }) => {
                    format!("conflict: last {:?}", last.as_ref().map(|l| l.stream_seq))
                }
                Err(PersistFailure::Unavailable(why)) => why.clone(),
            };
            tracing::debug!(%key, ?expect_last, took = ?started.elapsed(), %result, "append");
            let event = match outcome {
                Ok(stream_seq) => {
                    metrics::durable_write("stored", started.elapsed());
                    DurableEvent::Persisted { key, stream_seq }
                }
                Err(failure) => {
                    let outcome = match failure {
                        PersistFailure::Conflict { .. } => "conflict",
                        PersistFailure::Unavailable(_) => "unavailable",
                    };
                    metrics::durable_write(outcome, started.elapsed());
                    DurableEvent::PersistFailed { key, failure }
                }
            };
            let _ = hub.send(HubInput::Durable(Box::new(event))).await;
        });
    }

    /// Reads a whole log; the records (oldest first) go to the hub.
    pub fn read(&self, ticket: u64, key: String) {
        let subject = self.subject(&key);
        let mut stream = self.stream.clone();
        let hub = self.hub.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + READ_WITHIN;
            let result = loop {
                let result = tokio::time::timeout(READ_TRY, read_all(&mut stream, &subject))
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!("JetStream did not answer within {READ_TRY:?}"))
                    });
                if result.is_ok() || Instant::now() + RETRY_EVERY >= deadline {
                    break result;
                }
                tokio::time::sleep(RETRY_EVERY).await;
            };
            let event = DurableEvent::Read { ticket, result };
            let _ = hub.send(HubInput::Durable(Box::new(event))).await;
        });
    }
}

/// Keeps a direct link to the server that leads the stream (none while the gateway's own
/// server leads it, or while the leader cannot be reached).
async fn follow_the_leader(
    client: async_nats::Client,
    mut stream: watch::Receiver<Option<stream::Stream>>,
    link: watch::Sender<Option<LeaderLink>>,
) {
    let Ok(mut stream) = ready(&mut stream).await else {
        return;
    };
    // The server name behind each advertised URL, as far as learned: a new leader is looked
    // for where it is, not by connecting to every server again.
    let mut names: HashMap<String, String> = HashMap::new();
    loop {
        let leader = match stream.info().await {
            Ok(info) => info.cluster.as_ref().and_then(|c| c.leader.clone()),
            Err(error) => {
                tracing::debug!(%error, "the stream's leader is unknown for now");
                None
            }
        };
        let current = link.borrow().clone();
        let elected = leader.is_some();
        match leader {
            // The gateway's own server leads it: nothing to skip.
            Some(leader) if client.server_info().server_name == leader => {
                link.send_if_modified(|l| l.take().is_some());
            }
            Some(leader)
                if current
                    .as_ref()
                    .is_some_and(|l| l.server == leader && l.up()) => {}
            Some(leader) => {
                let found = connect_to_server(&client, &leader, &mut names).await;
                match &found {
                    Some(_) => {
                        tracing::info!(%leader, "durable appends go straight to the stream's leader");
                    }
                    None => tracing::debug!(
                        %leader,
                        "the stream's leader is not reachable directly: appends go through this \
                         gateway's own server"
                    ),
                }
                link.send_replace(found);
            }
            None => {}
        }
        // A new stream elects its leader within moments, a lost one within seconds: look again
        // soon until it has one.
        let next = if elected {
            LEADER_CHECK_EVERY
        } else {
            LEADER_RETRY
        };
        tokio::time::sleep(next).await;
    }
}

/// A connection to the NATS server named `name`, among the client URLs its cluster advertises
/// (those known to be `name` first, those known to be another server not at all).
async fn connect_to_server(
    client: &async_nats::Client,
    name: &str,
    names: &mut HashMap<String, String>,
) -> Option<LeaderLink> {
    let mut urls = client.server_info().connect_urls;
    urls.retain(|url| names.get(url).is_none_or(|n| n == name));
    urls.sort_by_key(|url| names.get(url).is_none());
    for url in urls {
        let options = async_nats::ConnectOptions::new()
            .name("signalgate durable appends")
            .ignore_discovered_servers()
            .connection_timeout(Duration::from_secs(1));
        let Ok(candidate) = options.connect(url.as_str()).await else {
            names.remove(&url);
            continue;
        };
        let server = candidate.server_info().server_name;
        names.insert(url, server.clone());
        if server == name {
            let mut context = jetstream::new(candidate.clone());
            context.set_timeout(LEADER_TRY);
            return Some(LeaderLink {
                server: name.to_string(),
                client: candidate,
                context,
            });
        }
    }
    // Servers may have moved between URLs (restarts): learn them again next time.
    names.clear();
    None
}

async fn ready(
    stream: &mut watch::Receiver<Option<stream::Stream>>,
) -> Result<stream::Stream, String> {
    let ready = stream
        .wait_for(Option::is_some)
        .await
        .map_err(|_| "the durable store stopped".to_string())?;
    ready.clone().ok_or_else(|| "no stream".to_string())
}

fn decode(message: jetstream::message::StreamMessage) -> Option<StoredRecord> {
    let record = DurableRecord::decode(message.payload).ok()?;
    let stored = std::time::SystemTime::UNIX_EPOCH
        + Duration::from_nanos(u64::try_from(message.time.unix_timestamp_nanos()).unwrap_or(0));
    let age = std::time::SystemTime::now()
        .duration_since(stored)
        .unwrap_or_default();
    Some(StoredRecord {
        stream_seq: message.sequence,
        age,
        record,
    })
}

async fn read_last(
    stream: &mut watch::Receiver<Option<stream::Stream>>,
    subject: &str,
) -> Option<StoredRecord> {
    let stream = ready(stream).await.ok()?;
    let message = stream.get_last_raw_message_by_subject(subject).await.ok()?;
    decode(message)
}

async fn read_all(
    stream: &mut watch::Receiver<Option<stream::Stream>>,
    subject: &str,
) -> Result<Vec<StoredRecord>, String> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind as Kind;
    let stream = ready(stream).await?;
    let mut records = Vec::new();
    let mut from = 1;
    while records.len() < MAX_RECORDS {
        let message = stream
            .raw_message_builder()
            .next_by_subject(subject.to_string())
            .sequence(from)
            .send()
            .await;
        match message {
            Ok(message) => {
                from = message.sequence + 1;
                match decode(message) {
                    Some(record) => records.push(record),
                    None => tracing::warn!(subject, "an undecodable record in a session log"),
                }
            }
            Err(error) if error.kind() == Kind::NoMessageFound => break,
            Err(error) => return Err(error.to_string()),
        }
    }
    Ok(records)
}
