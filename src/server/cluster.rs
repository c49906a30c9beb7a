//! The cluster adapter: NATS on one side, the sans-IO [`Cluster`] and [`Hub`] on the other.
//! Like a transport it holds no rule: it carries envelopes between NATS subjects and the
//! state machines, and carries out what they ask, in the hub's task (no locks, one order of
//! events).
//!
//! Subjects: `signalgate.<cluster name>.node.<node id>` (everything for one gateway) and
//! `signalgate.<cluster name>.all` (announcements). One NATS connection per gateway, so NATS
//! keeps what one gateway sends another in order.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use prost::Message;
use tokio::sync::mpsc;

use super::durable::{DurableEvent, DurableStore};
use super::hub_driver::HubInput;
use crate::config::ClusterConfig as Settings;
use crate::core::cluster::{Cluster, ClusterConfig, ClusterOutput, Dest};
use crate::core::hub::{Hub, Output};
use crate::core::liveness::LivenessConfig;
use crate::metrics;
use crate::proto::cluster::{Batch, Endpoint, Envelope, Leaving, envelope::Body};

/// Resend what another gateway has not acknowledged after at least this long.
const MIN_RESEND: Duration = Duration::from_millis(200);

/// At most one ack alone per this long to each gateway (more ride on traffic the other way).
/// Under load it delays only the sender's Ack of a signal relayed here (its delivery and any
/// refusal go at once), and it halves the NATS messages of a one-way stream of signals.
const ACK_DELAY: Duration = Duration::from_millis(1);

/// The cluster side of the hub's task.
pub struct ClusterDriver {
    cluster: Cluster,
    publish: mpsc::UnboundedSender<(String, Bytes)>,
    prefix: String,
    /// The NATS connection is up.
    connected: bool,
    /// Let go of its clients after being declared lost; rejoins when NATS is back.
    fenced: bool,
    /// Envelopes of this round, by subject (published together by [`Self::flush`]).
    queued: std::collections::HashMap<String, Vec<Envelope>>,
    /// Endpoints of every live gateway, for `/endpoints`.
    endpoints: std::sync::Arc<std::sync::RwLock<Vec<Endpoint>>>,
    /// Durable mode: the session logs.
    durable: Option<DurableStore>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot connect to NATS ({servers:?}): {source}")]
    Connect {
        servers: Vec<String>,
        source: async_nats::ConnectError,
    },
    #[error("cannot subscribe to {subject} on NATS: {source}")]
    Subscribe {
        subject: String,
        source: async_nats::SubscribeError,
    },
}

fn new_epoch() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    u64::from_le_bytes(bytes).max(1)
}

/// Connects to NATS (retrying in the background until a server answers) and starts the
/// tasks that carry envelopes both ways.
pub async fn start(
    settings: &Settings,
    liveness: LivenessConfig,
    endpoint: Endpoint,
    hub: mpsc::Sender<HubInput>,
    endpoints: std::sync::Arc<std::sync::RwLock<Vec<Endpoint>>>,
) -> Result<ClusterDriver, ClusterError> {
    let prefix = format!("signalgate.{}", settings.name);
    let events = hub.clone();
    let options = async_nats::ConnectOptions::new()
        .name(format!("signalgate {}", settings.node))
        .retry_on_initial_connect()
        .max_reconnects(None)
        // Only the servers the operator listed: where a gateway may connect is configuration,
        // not something the NATS cluster's gossip changes behind the operator's back.
        .ignore_discovered_servers()
        // Another server of the NATS cluster is tried at once: a gateway cut off for longer
        // than the liveness timeout is declared lost by the others.
        .reconnect_delay_callback(|attempts| Duration::from_millis(50 * attempts.min(10) as u64))
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                let up = match event {
                    async_nats::Event::Connected => Some(true),
                    async_nats::Event::Disconnected => Some(false),
                    _ => {
                        tracing::debug!(%event, "NATS");
                        None
                    }
                };
                if let Some(up) = up {
                    let _ = events.send(HubInput::ClusterConnected(up)).await;
                }
            }
        });
    let servers: Vec<async_nats::ServerAddr> = settings
        .servers
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    // With retry_on_initial_connect only a bad option fails here; NATS itself may come later.
    let client = options
        .connect(servers)
        .await
        .map_err(|source| ClusterError::Connect {
            servers: settings.servers.clone(),
            source,
        })?;
    for subject in [
        format!("{prefix}.node.{}", settings.node),
        format!("{prefix}.all"),
    ] {
        let mut subscriber = client
            .subscribe(subject.clone())
            .await
            .map_err(|source| ClusterError::Subscribe { subject, source })?;
        let hub = hub.clone();
        tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                match Batch::decode(message.payload) {
                    Ok(batch) => {
                        for envelope in batch.envelopes {
                            if hub
                                .send(HubInput::Cluster(Box::new(envelope)))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                    Err(error) => {
                        metrics::cluster_message("received_malformed");
                        tracing::warn!(%error, subject = %message.subject, "not a cluster envelope");
                    }
                }
            }
        });
    }
    let durable = settings
        .durable
        .as_ref()
        .map(|config| DurableStore::start(client.clone(), &settings.name, config, hub.clone()));
    let (publish, mut to_publish) = mpsc::unbounded_channel::<(String, Bytes)>();
    tokio::spawn(async move {
        while let Some((subject, payload)) = to_publish.recv().await {
            // Lost while NATS is down: the link resends what matters.
            if let Err(error) = client.publish(subject, payload).await {
                tracing::debug!(%error, "publish to NATS failed");
            }
        }
    });
    let now = Instant::now();
    let config = ClusterConfig {
        node: settings.node.clone(),
        liveness,
        min_resend: MIN_RESEND,
        ack_delay: ACK_DELAY,
        endpoint,
    };
    tracing::info!(node = %settings.node, cluster = %settings.name, servers = ?settings.servers, "cluster mode");
    Ok(ClusterDriver {
        cluster: Cluster::new(now, config, new_epoch()),
        publish,
        prefix,
        connected: false,
        fenced: false,
        queued: std::collections::HashMap::new(),
        endpoints,
        durable,
    })
}

impl ClusterDriver {
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.cluster.poll_timeout()
    }

    pub fn received(&mut self, now: Instant, envelope: Envelope) {
        metrics::cluster_message("received");
        self.cluster.receive(now, envelope);
    }

    pub fn connection_changed(&mut self, now: Instant, hub: &mut Hub, connected: bool) {
        self.connected = connected;
        metrics::cluster_connected(connected);
        if connected {
            tracing::info!("connected to NATS");
        } else {
            tracing::warn!("disconnected from NATS");
        }
        self.cluster.set_connected(now, connected);
        if connected && self.fenced {
            self.rejoin(now, hub);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.cluster.handle_timeout(now);
    }

    /// Starts a drain: every session goes to the other gateways. Returns how many moved.
    pub fn drain(&mut self, now: Instant, hub: &mut Hub) -> usize {
        self.cluster.set_draining(now, true);
        let nodes: Vec<String> = self.cluster.nodes().map(str::to_string).collect();
        hub.drain(now, &nodes)
    }

    /// The others need not wait for this gateway's silence: it is leaving (after a drain
    /// whose hand-overs were acknowledged, so that their new holders have announced them).
    pub fn leave(&mut self, now: Instant) {
        self.cluster
            .leave(now, Body::Leaving(Leaving { draining: true }));
    }

    /// Messages other gateways have not acknowledged yet.
    pub fn unacked(&self) -> usize {
        self.cluster.unacked().map(|(_, n)| n).sum()
    }

    /// A hub output for the cluster; false if it is not one.
    pub fn hub_output(&mut self, now: Instant, output: &Output) -> bool {
        match output {
            Output::ToNode { node, body } => {
                if !self.cluster.send(now, node, body.clone()) {
                    tracing::debug!(node, "a message for a gateway that is not live was dropped");
                }
                true
            }
            Output::ToCluster { body } => {
                self.cluster.broadcast(now, body);
                true
            }
            Output::Persist {
                key,
                expect_last,
                record,
            } => {
                match &self.durable {
                    Some(store) => store.persist(key.clone(), *expect_last, record),
                    None => tracing::warn!("a durable record without a durable store was dropped"),
                }
                true
            }
            Output::ReadLog { ticket, key } => {
                if let Some(store) = &self.durable {
                    store.read(*ticket, key.clone());
                }
                true
            }
            _ => false,
        }
    }

    /// What the durable store reports, for the hub.
    pub fn durable_event(&mut self, now: Instant, hub: &mut Hub, event: DurableEvent) {
        match event {
            DurableEvent::Persisted { key, stream_seq } => hub.persisted(now, &key, stream_seq),
            DurableEvent::PersistFailed { key, failure } => hub.persist_failed(now, &key, failure),
            DurableEvent::Read { ticket, result } => hub.recovered(now, ticket, result),
        }
    }

    /// Carries out what the cluster asks; returns whether it asked anything (the hub may
    /// have new outputs then).
    pub fn step(&mut self, now: Instant, hub: &mut Hub) -> bool {
        let mut any = false;
        while let Some(output) = self.cluster.poll_output() {
            any = true;
            match output {
                ClusterOutput::Transmit { to, envelope } => self.queue(to, envelope),
                ClusterOutput::NodeUp { node } => {
                    self.membership_changed(hub);
                    hub.node_up(&node);
                }
                ClusterOutput::NodeLost { node, silent_for } => {
                    metrics::cluster_node_lost(silent_for);
                    self.membership_changed(hub);
                    hub.node_lost(now, &node, silent_for);
                }
                ClusterOutput::Deliver {
                    from,
                    body: Body::Leaving(_),
                } => {
                    tracing::info!(node = %from, "gateway leaves the cluster");
                    self.cluster.node_left(now, &from);
                }
                ClusterOutput::Deliver { from, body } => hub.cluster_received(now, &from, body),
                ClusterOutput::RelayAcknowledged { ticket, .. } => {
                    hub.relay_acknowledged(now, ticket)
                }
                ClusterOutput::Fence => {
                    metrics::cluster_fenced();
                    self.fenced = true;
                    hub.set_cut_off(now, true);
                    if self.connected {
                        self.rejoin(now, hub);
                    }
                }
            }
        }
        any
    }

    /// The end of a round: acks nothing else carried, then everything queued, one NATS
    /// message per subject.
    pub fn flush(&mut self, now: Instant) {
        self.cluster.flush_acks(now);
        while let Some(output) = self.cluster.poll_output() {
            if let ClusterOutput::Transmit { to, envelope } = output {
                self.queue(to, envelope);
            }
        }
        for (subject, envelopes) in self.queued.drain() {
            let payload = Bytes::from(Batch { envelopes }.encode_to_vec());
            let _ = self.publish.send((subject, payload));
        }
    }

    fn queue(&mut self, to: Dest, envelope: Envelope) {
        let subject = match to {
            Dest::Node(node) => format!("{}.node.{node}", self.prefix),
            Dest::All => format!("{}.all", self.prefix),
        };
        metrics::cluster_message("sent");
        self.queued.entry(subject).or_default().push(envelope);
    }

    /// Back as a new incarnation: the others see this gateway anew, with its sessions away.
    fn rejoin(&mut self, now: Instant, hub: &mut Hub) {
        tracing::warn!("rejoining the cluster as a new incarnation");
        self.fenced = false;
        self.cluster.rejoin(now, new_epoch());
        hub.set_cut_off(now, false);
    }

    fn membership_changed(&mut self, hub: &mut Hub) {
        let nodes: Vec<String> = self.cluster.nodes().map(str::to_string).collect();
        metrics::cluster_nodes(nodes.len() + 1);
        hub.set_live_nodes(nodes);
        if let Ok(mut endpoints) = self.endpoints.write() {
            *endpoints = self.cluster.endpoints();
        }
    }
}
