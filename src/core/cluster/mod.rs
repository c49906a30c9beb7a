//! The gateways of a cluster as one gateway sees them: who is there, who answers in time,
//! and a reliable ordered link to each (see `link.rs`). Sans-IO like the hub: the runtime
//! hands it the envelopes that arrive and the time, and carries out what it asks
//! ([`ClusterOutput`]): publish an envelope, tell the hub that a node came or was lost, hand
//! the hub what a node sent, fence this gateway.
//!
//! Liveness between gateways is the same model as between a gateway and its clients
//! ([`Liveness`]): any envelope from a node counts as a reply, a quiet node is probed with
//! Ping, and a node from which nothing arrived for `liveness_timeout` is lost, whatever the
//! reason (crashed, hung, cut off). An incarnation declared lost stays lost: if it speaks
//! again (it was only cut off) it is told so and fences itself, then comes back as a new
//! incarnation with its sessions away — never silently as the old one, whose sessions the
//! rest of the cluster has already reported UNREACHABLE.

pub mod link;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::core::liveness::{Liveness, LivenessConfig, LivenessEvent};
use crate::proto::cluster::{
    Announce, Endpoint, Envelope, Ping, Pong, YouWereLost, envelope::Body,
};
use link::{Link, MAX_UNACKED, Received};

/// Where an envelope goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Node(String),
    /// Every node (discovery).
    All,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClusterOutput {
    /// Publish this envelope.
    Transmit { to: Dest, envelope: Envelope },
    /// A node (incarnation) appeared: the hub's view of the rooms goes to it.
    NodeUp { node: String },
    /// A node stopped answering (or left): its sessions are away on every other gateway.
    NodeLost { node: String, silent_for: Duration },
    /// A message a node sent over its link, in order, once.
    Deliver { from: String, body: Body },
    /// A node acted on a Relay sent to it, and whatever it answered to it was delivered
    /// before this (see the link's acks).
    RelayAcknowledged { node: String, ticket: u64 },
    /// This gateway was declared lost by the others (or was cut off long enough that they
    /// must have): it must let go of its clients. It continues as a new incarnation.
    Fence,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub node: String,
    pub liveness: LivenessConfig,
    /// Resend what a node has not acknowledged after this long (at least; 4 round trips
    /// once measured).
    pub min_resend: Duration,
    /// At most one ack alone per this long to each node (see `Link::ack_now`).
    pub ack_delay: Duration,
    pub endpoint: Endpoint,
}

#[derive(Debug)]
struct Node {
    epoch: u64,
    liveness: Liveness,
    link: Link,
    endpoint: Endpoint,
    rtt: Option<Duration>,
    pinged_at: HashMap<u64, Instant>,
}

#[derive(Debug)]
pub struct Cluster {
    config: ClusterConfig,
    epoch: u64,
    nodes: BTreeMap<String, Node>,
    /// Incarnations declared lost, by node: never taken back.
    lost: HashMap<String, u64>,
    outputs: VecDeque<ClusterOutput>,
    next_announce: Instant,
    next_nonce: u64,
    /// Since when the broker connection is down (None: connected).
    disconnected_since: Option<Instant>,
    /// A node was ever seen by this incarnation (a lone gateway has nobody to be fenced by).
    had_peers: bool,
    /// This gateway said goodbye: it sends and takes nothing more (an answer to what it still
    /// sends would only be "you were lost").
    left: bool,
}

impl Cluster {
    pub fn new(now: Instant, config: ClusterConfig, epoch: u64) -> Self {
        let mut cluster = Self {
            config,
            epoch,
            nodes: BTreeMap::new(),
            lost: HashMap::new(),
            outputs: VecDeque::new(),
            next_announce: now,
            next_nonce: 1,
            disconnected_since: None,
            had_peers: false,
            left: false,
        };
        cluster.announce(now, false);
        cluster
    }

    pub fn node(&self) -> &str {
        &self.config.node
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The nodes that answer now.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    pub fn is_live(&self, node: &str) -> bool {
        self.nodes.contains_key(node)
    }

    /// Every live gateway's endpoint, this one first.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        std::iter::once(self.config.endpoint.clone())
            .chain(self.nodes.values().map(|n| n.endpoint.clone()))
            .collect()
    }

    /// Messages waiting for a node's acknowledgement, by node (for metrics).
    pub fn unacked(&self) -> impl Iterator<Item = (&str, usize)> {
        self.nodes
            .iter()
            .map(|(n, node)| (n.as_str(), node.link.unacked()))
    }

    pub fn rtt(&self, node: &str) -> Option<Duration> {
        self.nodes.get(node).and_then(|n| n.rtt)
    }

    pub fn poll_output(&mut self) -> Option<ClusterOutput> {
        self.outputs.pop_front()
    }

    pub fn set_draining(&mut self, now: Instant, draining: bool) {
        self.config.endpoint.draining = draining;
        self.announce(now, false);
    }

    /// Sends `body` to `node` over its link; false if the node is not live.
    pub fn send(&mut self, now: Instant, node: &str, body: Body) -> bool {
        if self.left {
            return false;
        }
        let rto = self.rto(node);
        let Some(peer) = self.nodes.get_mut(node) else {
            return false;
        };
        let seq = peer.link.push(now, rto, body.clone());
        let envelope = peer.on_link((&self.config.node, self.epoch), seq, Some(body));
        let broken = peer.link.unacked() > MAX_UNACKED;
        self.outputs.push_back(ClusterOutput::Transmit {
            to: Dest::Node(node.to_string()),
            envelope,
        });
        if broken {
            tracing::warn!(
                node,
                "a node does not acknowledge what it is sent: dropping it"
            );
            self.declare_lost(now, node);
        }
        true
    }

    /// Sends `body` to every live node.
    pub fn broadcast(&mut self, now: Instant, body: &Body) {
        let nodes: Vec<String> = self.nodes.keys().cloned().collect();
        for node in nodes {
            self.send(now, &node, body.clone());
        }
    }

    /// The broker connection went down (`false`) or came back (`true`).
    pub fn set_connected(&mut self, now: Instant, connected: bool) {
        if connected {
            self.disconnected_since = None;
            self.announce(now, false);
        } else {
            self.disconnected_since.get_or_insert(now);
        }
    }

    pub fn receive(&mut self, now: Instant, envelope: Envelope) {
        if self.left {
            return;
        }
        let Envelope {
            from,
            epoch,
            to_epoch,
            seq,
            ack,
            sent,
            body,
        } = envelope;
        if from == self.config.node || epoch == 0 {
            return;
        }
        if to_epoch != 0 && to_epoch != self.epoch {
            return; // For an incarnation of this node that is gone.
        }
        if self.lost.get(&from) == Some(&epoch) {
            if let Some(Body::YouWereLost(theirs)) = body {
                // Each side lost the other: the weaker side fences (see YouWereLost).
                let mine = (
                    self.live_nodes(),
                    std::cmp::Reverse(self.config.node.as_str()),
                );
                let theirs = (theirs.live_nodes, std::cmp::Reverse(from.as_str()));
                if mine < theirs {
                    self.fence(&from);
                }
            } else {
                let live_nodes = self.live_nodes();
                let body = Body::YouWereLost(YouWereLost { live_nodes });
                let envelope = self.envelope(epoch, body);
                self.transmit(Dest::Node(from), envelope);
            }
            return;
        }
        if let Some(Body::YouWereLost(_)) = body {
            self.fence(&from);
            return;
        }
        if self.nodes.get(&from).is_some_and(|n| n.epoch != epoch) {
            // A new incarnation: the old one is gone, whatever it was doing.
            self.declare_lost(now, &from);
            self.lost.remove(&from);
        }
        let new = !self.nodes.contains_key(&from);
        if new {
            self.node_up(now, &from, epoch);
        }
        let rto = self.rto(&from);
        let Some(node) = self.nodes.get_mut(&from) else {
            return;
        };
        node.liveness.on_inbound(now);
        let body = if seq == 0 {
            body
        } else {
            match node.link.on_receive(seq) {
                Received::Deliver => body,
                Received::Drop => None,
            }
        };
        match body {
            None => {}
            Some(Body::Announce(announce)) => {
                if let Some(endpoint) = announce.endpoint {
                    node.endpoint = endpoint;
                }
                // A newcomer learns of this gateway at once (the periodic announcements of
                // gateways that know each other need no answer).
                if new && !announce.reply {
                    let reply = self.announce_body(true);
                    let envelope = self.envelope(epoch, reply);
                    self.transmit(Dest::Node(from.clone()), envelope);
                }
            }
            Some(Body::Ping(Ping { nonce })) => {
                let envelope = self.envelope(epoch, Body::Pong(Pong { nonce }));
                self.transmit(Dest::Node(from.clone()), envelope);
            }
            Some(Body::Pong(Pong { nonce })) => {
                if let Some(sent) = node.pinged_at.remove(&nonce) {
                    let rtt = now.saturating_duration_since(sent);
                    node.rtt = Some(rtt);
                    node.liveness.on_rtt(rtt);
                }
            }
            Some(body) => self.outputs.push_back(ClusterOutput::Deliver {
                from: from.clone(),
                body,
            }),
        }
        // After the body: an answer it carries comes before the acknowledgement it makes.
        if let Some(node) = self.nodes.get_mut(&from) {
            let outputs = &mut self.outputs;
            node.link.on_ack(now, rto, (ack, sent), |body| {
                if let Body::Relay(relay) = body {
                    outputs.push_back(ClusterOutput::RelayAcknowledged {
                        node: from.clone(),
                        ticket: relay.ticket,
                    });
                }
            });
        }
    }

    /// The end of a round: everything received has been acted on, and acks that nothing
    /// else carried go out alone when they are due.
    pub fn flush_acks(&mut self, now: Instant) {
        self.send_acks(now, false);
    }

    fn send_acks(&mut self, now: Instant, all_due: bool) {
        let delay = self.config.ack_delay;
        for (name, node) in &mut self.nodes {
            node.link.commit();
            if node.link.ack_now(now, delay) || (all_due && node.link.ack_due()) {
                let envelope = node.on_link((&self.config.node, self.epoch), 0, None);
                self.outputs.push_back(ClusterOutput::Transmit {
                    to: Dest::Node(name.clone()),
                    envelope,
                });
            }
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.left {
            return None;
        }
        let mut next = self.next_announce;
        for node in self.nodes.values() {
            for at in [node.liveness.poll_timeout(), node.link.poll_timeout()]
                .into_iter()
                .flatten()
            {
                next = next.min(at);
            }
        }
        if let Some(since) = self.disconnected_since
            && self.had_peers
        {
            next = next.min(since + self.config.liveness.timeout());
        }
        Some(next)
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.left {
            return;
        }
        if now >= self.next_announce {
            self.announce(now, false);
        }
        if let Some(since) = self.disconnected_since
            && self.had_peers
            && now >= since + self.config.liveness.timeout()
        {
            // Every other gateway has stopped hearing from this one by now and declared it
            // lost: its clients must go where the cluster can see them.
            tracing::warn!(
                cut_off_for_ms = now.duration_since(since).as_millis() as u64,
                "cut off from the cluster for the liveness timeout: fencing"
            );
            self.had_peers = false;
            self.outputs.push_back(ClusterOutput::Fence);
        }
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in names {
            let rto = self.rto(&name);
            let Some(node) = self.nodes.get_mut(&name) else {
                continue;
            };
            for (seq, body) in node.link.resend(now, rto) {
                let envelope = node.on_link((&self.config.node, self.epoch), seq, Some(body));
                self.outputs.push_back(ClusterOutput::Transmit {
                    to: Dest::Node(name.clone()),
                    envelope,
                });
            }
            match node.liveness.handle_timeout(now) {
                Some(LivenessEvent::Probe | LivenessEvent::Stalled { .. }) => {
                    let nonce = self.next_nonce;
                    self.next_nonce += 1;
                    node.pinged_at
                        .retain(|_, at| now.duration_since(*at) < rto * 8);
                    node.pinged_at.insert(nonce, now);
                    let epoch = node.epoch;
                    let envelope = self.envelope(epoch, Body::Ping(Ping { nonce }));
                    self.transmit(Dest::Node(name), envelope);
                }
                Some(LivenessEvent::Dead { .. }) => self.declare_lost(now, &name),
                None => {}
            }
        }
    }

    /// After a fence: a new incarnation that knows nobody yet.
    pub fn rejoin(&mut self, now: Instant, epoch: u64) {
        for name in std::mem::take(&mut self.nodes).into_keys() {
            self.outputs.push_back(ClusterOutput::NodeLost {
                node: name,
                silent_for: Duration::ZERO,
            });
        }
        self.epoch = epoch;
        self.lost.clear();
        self.had_peers = false;
        self.announce(now, false);
    }

    /// Says goodbye (`goodbye` to every live gateway) and goes quiet: the end of a drain.
    pub fn leave(&mut self, now: Instant, goodbye: Body) {
        self.broadcast(now, &goodbye);
        self.send_acks(now, true);
        self.left = true;
    }

    /// A node said it leaves (drained): lost at once, without waiting for its silence.
    pub fn node_left(&mut self, now: Instant, node: &str) {
        if self.nodes.contains_key(node) {
            tracing::info!(node, "gateway left the cluster");
        }
        self.forget(now, node);
    }

    fn live_nodes(&self) -> u32 {
        u32::try_from(self.nodes.len()).unwrap_or(u32::MAX)
    }

    fn fence(&mut self, by: &str) {
        tracing::warn!(by, "this gateway was declared lost by another: fencing");
        self.outputs.push_back(ClusterOutput::Fence);
    }

    fn node_up(&mut self, now: Instant, name: &str, epoch: u64) {
        tracing::info!(node = name, "gateway joined the cluster");
        self.had_peers = true;
        self.nodes.insert(
            name.to_string(),
            Node {
                epoch,
                liveness: Liveness::new(now, self.config.liveness),
                link: Link::default(),
                endpoint: Endpoint {
                    node: name.to_string(),
                    ..Endpoint::default()
                },
                rtt: None,
                pinged_at: HashMap::new(),
            },
        );
        self.outputs.push_back(ClusterOutput::NodeUp {
            node: name.to_string(),
        });
    }

    fn declare_lost(&mut self, now: Instant, name: &str) {
        if let Some(node) = self.nodes.get(name) {
            tracing::warn!(
                node = name,
                silent_for_ms = node.liveness.silent_for(now).as_millis() as u64,
                "gateway lost"
            );
        }
        self.forget(now, name);
    }

    /// The incarnation is gone for good (lost, or it left): never taken back.
    fn forget(&mut self, now: Instant, name: &str) {
        let Some(node) = self.nodes.remove(name) else {
            return;
        };
        let silent_for = node.liveness.silent_for(now);
        self.lost.insert(name.to_string(), node.epoch);
        self.outputs.push_back(ClusterOutput::NodeLost {
            node: name.to_string(),
            silent_for,
        });
    }

    fn rto(&self, node: &str) -> Duration {
        let measured = self.rtt(node).map_or(Duration::ZERO, |rtt| rtt * 4);
        self.config.min_resend.max(measured)
    }

    fn announce_body(&self, reply: bool) -> Body {
        Body::Announce(Announce {
            endpoint: Some(self.config.endpoint.clone()),
            reply,
        })
    }

    fn announce(&mut self, now: Instant, reply: bool) {
        self.next_announce = now + self.config.liveness.ping_interval();
        let envelope = self.envelope(0, self.announce_body(reply));
        self.transmit(Dest::All, envelope);
    }

    /// An envelope outside the link (not numbered, never resent).
    fn envelope(&self, to_epoch: u64, body: Body) -> Envelope {
        let (ack, sent) = self
            .nodes
            .values()
            .find(|n| n.epoch == to_epoch)
            .map_or((0, 0), |n| (n.link.acknowledgeable(), n.link.last_sent()));
        Envelope {
            from: self.config.node.clone(),
            epoch: self.epoch,
            to_epoch,
            seq: 0,
            ack,
            sent,
            body: Some(body),
        }
    }

    fn transmit(&mut self, to: Dest, envelope: Envelope) {
        self.outputs
            .push_back(ClusterOutput::Transmit { to, envelope });
    }
}

impl Node {
    /// An envelope on the link to this node (`seq` 0: an ack alone), from `(node, epoch)`,
    /// carrying the ack due and what the link has sent so far.
    fn on_link(&mut self, (from, epoch): (&str, u64), seq: u64, body: Option<Body>) -> Envelope {
        Envelope {
            from: from.to_string(),
            epoch,
            to_epoch: self.epoch,
            seq,
            ack: self.link.ack_to_send(),
            sent: self.link.last_sent(),
            body,
        }
    }
}

#[cfg(test)]
mod tests;
