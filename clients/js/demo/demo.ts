/**
 * The demo page served by the gateway at `/`: connects with the SDK, shows presence, and runs
 * a WebRTC call (data channel "chat", optionally video) between two tabs, signalled through
 * the gateway.
 *
 * Query parameters: ?room=NAME (default "demo"), ?transport=auto|webtransport|websocket,
 * ?video=1, ?rtc=0 (no WebRTC at all: chat messages go through the gateway as data signals.
 * Chromium keeps no page with an RTCPeerConnection in its back/forward cache, so this is the
 * mode in which the page can be cached, suspended and resumed), ?sub=NAME (the identity asked
 * of the gateway's development token route; default a random `guest-NNNN`).
 *
 * Cluster mode: when /endpoints lists the cluster's gateways (`gateways` not empty), the page
 * gives the SDK that list (each gateway with its own certificate hash) and `endpointsUrl`, so
 * it spreads, fails over and follows drains; the log says which gateway each connection uses.
 *
 * Tokens: when the gateway serves `GET /dev-token?sub=NAME` (only with an HS256 secret, on
 * loopback) the page authenticates with those tokens, fetching a new one for every Hello and
 * every refresh (the SDK's `getToken`); the peers' names come from them. Without the route
 * (404) it runs anonymous.
 *
 * For automated tests: `window.signalgateDemo = { client, state, send(text) }`, and
 * `document.body.dataset` mirrors state (transport, gateway, peerId, identity, clientState,
 * pcState, peers, peerNames, peerReasons, received, rtc).
 */
import {
  gatewaysFromEndpoints,
  SignalgateClient,
  SignalgateError,
  type GatewayEndpoint,
  type PeerInfo,
  type PeerReason,
  type SignalgateClientOptions,
  type TransportPreference,
} from "../src/index.js";

interface Endpoints {
  webtransport: string | null;
  websocket: string | null;
  cert_sha256?: string | null;
  /** Cluster mode: every live gateway (this one first); `[]` alone. */
  gateways?: unknown[];
}

type DemoPeerState = "online" | "unreachable" | "left";

interface DemoState {
  room: string;
  /** False with ?rtc=0: no RTCPeerConnection; chat goes through the gateway. */
  rtc: boolean;
  clientState: string;
  transport: string | null;
  /** The gateway of the current connection: its node name in a cluster, else its URL. */
  gateway: string | null;
  peerId: string | null;
  /** Welcome.identity: the token's `sub` ('' when anonymous, null before a Welcome). */
  identity: string | null;
  /** Other peers of the room: peer id → online | unreachable | left. */
  peers: Record<string, DemoPeerState>;
  /** Names of the peers that have one (from their tokens). */
  peerNames: Record<string, string>;
  /**
   * Why each peer is in its state, as the gateway said (e.g. `suspended`: its page is frozen
   * or cached; `liveness_timeout` / `connection_lost`: its network; `bye`: it left).
   */
  peerReasons: Record<string, PeerReason>;
  /** The peer the WebRTC call is with. */
  remotePeer: string | null;
  pcState: RTCPeerConnectionState | "none";
  /** Chat messages received: over the data channel, or with ?rtc=0 as data signals. */
  received: string[];
  log: string[];
}

declare global {
  interface Window {
    signalgateDemo?: {
      client: SignalgateClient | null;
      state: DemoState;
      send(text: string): boolean;
    };
  }
}

const params = new URLSearchParams(location.search);
const room = params.get("room") || "demo";
const transportParam = params.get("transport");
const transportPref: TransportPreference =
  transportParam === "webtransport" || transportParam === "websocket" ? transportParam : "auto";
const useRtc = params.get("rtc") !== "0";
const withVideo = useRtc && params.get("video") === "1";
/** The identity this page asks the development token route for. */
const sub = params.get("sub") || `guest-${1000 + Math.floor(Math.random() * 9000)}`;

const state: DemoState = {
  room,
  rtc: useRtc,
  clientState: "idle",
  transport: null,
  gateway: null,
  peerId: null,
  identity: null,
  peers: {},
  peerNames: {},
  peerReasons: {},
  remotePeer: null,
  pcState: "none",
  received: [],
  log: [],
};
const silentFor: Record<string, number> = {};

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} missing`);
  return el as T;
};

// ------------------------------------------------------------------------------------------
// Rendering
// ------------------------------------------------------------------------------------------

function log(text: string): void {
  const line = `${new Date().toISOString().slice(11, 23)} ${text}`;
  state.log.push(line);
  if (state.log.length > 500) state.log.shift();
  const ul = $<HTMLUListElement>("log");
  const li = document.createElement("li");
  li.textContent = line;
  ul.append(li);
  while (ul.children.length > 200) ul.firstElementChild?.remove();
  ul.scrollTop = ul.scrollHeight;
}

function render(): void {
  $("client-state").textContent = state.clientState;
  $("transport").textContent = state.transport ?? "–";
  $("peer-id").textContent = state.peerId ?? "–";
  const identity = document.getElementById("identity"); // absent from an older index.html
  if (identity) identity.textContent = state.identity === null ? "–" : state.identity || "anonymous";
  $("pc-state").textContent = state.rtc
    ? state.pcState + (state.remotePeer ? ` (with ${who(state.remotePeer)})` : "")
    : "off (?rtc=0: chat goes through the gateway)";
  const rtt = client?.rttMs;
  $("rtt").textContent = rtt === undefined ? "–" : `${rtt.toFixed(1)} ms`;

  const ul = $<HTMLUListElement>("peers");
  ul.replaceChildren();
  const ids = Object.keys(state.peers).sort();
  if (ids.length === 0) {
    const li = document.createElement("li");
    li.textContent = "nobody else yet";
    ul.append(li);
  }
  for (const id of ids) {
    const s = state.peers[id]!;
    const reason = state.peerReasons[id];
    const li = document.createElement("li");
    li.dataset.peerId = id;
    li.dataset.state = s;
    if (reason) li.dataset.reason = reason;
    li.className = s === "unreachable" && reason === "suspended" ? "suspended" : s;
    const name = state.peerNames[id];
    if (name) li.dataset.name = name;
    li.textContent = `${name ? `${name} (${id})` : id}  ${peerLabel(id, s, reason)}`;
    ul.append(li);
  }

  const ready = state.rtc ? dc?.readyState === "open" : canChatViaGateway();
  $<HTMLInputElement>("chat-input").disabled = !ready;
  $<HTMLButtonElement>("chat-send").disabled = !ready;

  const ds = document.body.dataset;
  ds.rtc = String(state.rtc);
  ds.clientState = state.clientState;
  ds.transport = state.transport ?? "";
  ds.gateway = state.gateway ?? "";
  ds.peerId = state.peerId ?? "";
  ds.identity = state.identity ?? "";
  ds.pcState = state.pcState;
  ds.peers = JSON.stringify(state.peers);
  ds.peerNames = JSON.stringify(state.peerNames);
  ds.peerReasons = JSON.stringify(state.peerReasons);
  ds.received = String(state.received.length);
  ds.dataChannel = dc?.readyState ?? "none";
}

/**
 * A peer the gateway cannot reach is shown by why: its browser suspended the page (it comes
 * back on its own when the page runs again) is not the same news as its network being gone.
 */
function peerLabel(id: string, s: DemoPeerState, reason: PeerReason | undefined): string {
  if (s === "online") return "ONLINE";
  if (s === "left") return `LEFT${reason ? ` (${reason === "bye" ? "said bye" : reason})` : ""}`;
  if (reason === "suspended") return "SUSPENDED (page frozen or cached; may resume)";
  const silent = silentFor[id] !== undefined ? `, silent for ${(silentFor[id]! / 1000).toFixed(1)} s` : "";
  const why = reason === "client_closed" ? "connection closed" : (reason ?? "connection lost").replace(/_/g, " ");
  return `UNREACHABLE (${why}${silent})`;
}

function chatLine(text: string): void {
  const ul = $<HTMLUListElement>("chat-log");
  const li = document.createElement("li");
  li.textContent = text;
  ul.append(li);
  ul.scrollTop = ul.scrollHeight;
}

// ------------------------------------------------------------------------------------------
// Controls
// ------------------------------------------------------------------------------------------

function reloadWith(name: string, value: string | null): void {
  const next = new URLSearchParams(location.search);
  if (value === null) next.delete(name);
  else next.set(name, value);
  location.search = next.toString();
}

$("room-name").textContent = room;
const select = $<HTMLSelectElement>("transport-select");
select.value = transportPref;
select.addEventListener("change", () => reloadWith("transport", select.value === "auto" ? null : select.value));
const videoToggle = $<HTMLInputElement>("video-toggle");
videoToggle.checked = withVideo;
videoToggle.addEventListener("change", () => reloadWith("video", videoToggle.checked ? "1" : null));
videoToggle.disabled = !useRtc;
$("videos").hidden = !withVideo;
const rtcToggle = $<HTMLInputElement>("rtc-toggle");
rtcToggle.checked = useRtc;
rtcToggle.addEventListener("change", () => reloadWith("rtc", rtcToggle.checked ? null : "0"));
$<HTMLButtonElement>("leave-button").addEventListener("click", () => {
  client?.close();
  syncClientState();
});

$<HTMLFormElement>("chat-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = $<HTMLInputElement>("chat-input");
  if (input.value && send(input.value)) input.value = "";
});

// ------------------------------------------------------------------------------------------
// WebRTC
// ------------------------------------------------------------------------------------------

let client: SignalgateClient | null = null;
let pc: RTCPeerConnection | null = null;
let dc: RTCDataChannel | null = null;
let localStream: MediaStream | null = null;
/** Candidates that arrived before the remote description. */
let pendingCandidates: RTCIceCandidateInit[] = [];

function send(text: string): boolean {
  if (!state.rtc) return sendViaGateway(text);
  if (!dc || dc.readyState !== "open") return false;
  dc.send(text);
  chatLine(`me: ${text}`);
  return true;
}

/** Peers a message through the gateway goes to: all in the room that have not left. */
function gatewayRecipients(): string[] {
  return Object.keys(state.peers).filter((id) => state.peers[id] !== "left");
}

function canChatViaGateway(): boolean {
  return !!client && client.state !== "closed" && client.state !== "closing" && gatewayRecipients().length > 0;
}

/**
 * ?rtc=0: a chat message is a data signal to every peer; it is delivered (or held for a peer
 * that is unreachable) once the gateway acknowledges it, which the log shows.
 */
function sendViaGateway(text: string): boolean {
  const c = client;
  if (!c || !canChatViaGateway()) return false;
  const bytes = new TextEncoder().encode(text);
  for (const to of gatewayRecipients()) {
    c.sendData(room, to, bytes).then(
      (id) => log(`message #${id} to ${to} acknowledged by the gateway`),
      (err: unknown) => log(`message to ${to} not delivered: ${String(err)}`),
    );
  }
  chatLine(`me: ${text}`);
  return true;
}

function setupChannel(channel: RTCDataChannel): void {
  dc = channel;
  channel.onopen = () => {
    log(`data channel "${channel.label}" open`);
    render();
  };
  channel.onclose = () => {
    log(`data channel "${channel.label}" closed`);
    render();
  };
  channel.onmessage = (ev: MessageEvent) => {
    const text = typeof ev.data === "string" ? ev.data : "[binary]";
    state.received.push(text);
    const remote = state.remotePeer;
    chatLine(`${remote ? (state.peerNames[remote] ?? remote) : "peer"}: ${text}`);
    render();
  };
}

async function getLocalStream(): Promise<MediaStream | null> {
  if (!withVideo) return null;
  if (!localStream) {
    localStream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    $<HTMLVideoElement>("local-video").srcObject = localStream;
  }
  return localStream;
}

function closeCall(why: string): void {
  if (!pc) return;
  log(`WebRTC call with ${state.remotePeer ?? "?"} closed (${why})`);
  dc?.close();
  pc.close();
  pc = null;
  dc = null;
  pendingCandidates = [];
  state.remotePeer = null;
  state.pcState = "none";
  $<HTMLVideoElement>("remote-video").srcObject = null;
  render();
}

function createPeerConnection(remote: string): RTCPeerConnection {
  closeCall("replaced");
  const conn = new RTCPeerConnection({ iceServers: [] });
  pc = conn;
  state.remotePeer = remote;
  state.pcState = conn.connectionState;
  conn.onicecandidate = (ev) => {
    if (!ev.candidate || !client) return;
    client.sendCandidate(room, remote, ev.candidate.toJSON()).catch((e: unknown) => log(`candidate not sent: ${String(e)}`));
  };
  conn.onconnectionstatechange = () => {
    if (pc !== conn) return;
    state.pcState = conn.connectionState;
    log(`WebRTC connectionState: ${conn.connectionState}`);
    render();
  };
  conn.ondatachannel = (ev) => setupChannel(ev.channel);
  conn.ontrack = (ev) => {
    const [stream] = ev.streams;
    if (stream) $<HTMLVideoElement>("remote-video").srcObject = stream;
  };
  render();
  return conn;
}

/** The peer with the lexicographically smaller peer id makes the offer. */
async function maybeCall(): Promise<void> {
  if (!state.rtc || !client || !state.peerId || pc) return;
  const remote = Object.keys(state.peers)
    .sort()
    .find((id) => state.peers[id] === "online");
  if (!remote || !(state.peerId < remote)) return;
  const conn = createPeerConnection(remote);
  setupChannel(conn.createDataChannel("chat"));
  const stream = await getLocalStream();
  if (stream) for (const track of stream.getTracks()) conn.addTrack(track, stream);
  const offer = await conn.createOffer();
  await conn.setLocalDescription(offer);
  log(`sending offer to ${remote}`);
  await client.sendDescription(room, remote, offer);
}

async function onDescription(from: string, description: RTCSessionDescriptionInit): Promise<void> {
  if (!state.rtc || !client) return;
  if (description.type === "offer") {
    if (!pc || state.remotePeer !== from || pc.connectionState === "failed" || pc.connectionState === "closed") {
      createPeerConnection(from);
    }
    const conn = pc!;
    await conn.setRemoteDescription(description);
    await flushCandidates(conn);
    const stream = await getLocalStream();
    // The offer already created a (receive-only) transceiver; addTrack reuses it.
    if (stream && !conn.getSenders().some((s) => s.track)) {
      for (const track of stream.getTracks()) conn.addTrack(track, stream);
    }
    const answer = await conn.createAnswer();
    await conn.setLocalDescription(answer);
    log(`sending answer to ${from}`);
    await client.sendDescription(room, from, answer);
  } else if (description.type === "answer" && pc && state.remotePeer === from) {
    await pc.setRemoteDescription(description);
    await flushCandidates(pc);
  }
}

async function onCandidate(from: string, candidate: RTCIceCandidateInit): Promise<void> {
  if (!pc || state.remotePeer !== from) return;
  if (!pc.remoteDescription) {
    pendingCandidates.push(candidate);
    return;
  }
  await pc.addIceCandidate(candidate);
}

async function flushCandidates(conn: RTCPeerConnection): Promise<void> {
  const queued = pendingCandidates;
  pendingCandidates = [];
  for (const c of queued) await conn.addIceCandidate(c);
}

// ------------------------------------------------------------------------------------------
// Signaling
// ------------------------------------------------------------------------------------------

function hexToBytes(hex: string): Uint8Array<ArrayBuffer> {
  const clean = hex.replace(/[^0-9a-fA-F]/g, "");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  return out;
}

function syncClientState(): void {
  if (!client) return;
  state.clientState = client.state;
  state.transport = client.transport ?? null;
  state.gateway = gatewayName(client.gateway);
  state.peerId = client.peerId ?? null;
  state.identity = client.identity ?? null;
  render();
}

function gatewayName(g: GatewayEndpoint | undefined): string | null {
  if (!g) return null;
  return g.node ?? g.webTransportUrl ?? g.webSocketUrl ?? null;
}

/** A peer as the log shows it: with its name (from its token) when it has one. */
function who(peerId: string): string {
  const name = state.peerNames[peerId];
  return name ? `${name} (${peerId})` : peerId;
}

function rememberPeer(peer: PeerInfo): void {
  state.peers[peer.peerId] = peer.state;
  delete state.peerReasons[peer.peerId];
  if (peer.name) state.peerNames[peer.peerId] = peer.name;
}

/**
 * A development token for `sub` from the gateway (`GET /dev-token`, served only when it runs
 * with an HS256 secret on loopback). Throws when there is none.
 */
async function devToken(): Promise<string> {
  const res = await fetch(`/dev-token?sub=${encodeURIComponent(sub)}`, { cache: "no-store" });
  if (!res.ok) throw new Error(`GET /dev-token: HTTP ${res.status}`);
  const body = (await res.json()) as { token?: unknown };
  if (typeof body.token !== "string" || !body.token) throw new Error("GET /dev-token: no token in the answer");
  return body.token;
}

async function main(): Promise<void> {
  const res = await fetch("/endpoints", { cache: "no-store" });
  if (!res.ok) throw new Error(`GET /endpoints: HTTP ${res.status}`);
  const endpoints = (await res.json()) as Endpoints;
  log(`endpoints: ${JSON.stringify(endpoints)}`);

  const options: SignalgateClientOptions = {
    transport: transportPref,
    client: "signalgate-demo",
    webSocketUrl: endpoints.websocket ?? `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`,
  };
  if (endpoints.webtransport) options.webTransportUrl = endpoints.webtransport;
  if (endpoints.cert_sha256 && /^[0-9a-fA-F]{64}$/.test(endpoints.cert_sha256)) {
    options.serverCertificateHashes = [{ algorithm: "sha-256", value: hexToBytes(endpoints.cert_sha256) }];
  }
  // Cluster mode: the list (this gateway in it, with the URLs this page reached it by) and
  // where to ask for it again.
  const gateways = Array.isArray(endpoints.gateways) && endpoints.gateways.length > 0 ? gatewaysFromEndpoints(endpoints) : [];
  if (gateways.length > 0) {
    log(`cluster of ${gateways.length} gateway(s): ${gateways.map((g) => gatewayName(g)).join(", ")}`);
    delete options.webTransportUrl;
    delete options.webSocketUrl;
    delete options.serverCertificateHashes;
    options.gateways = gateways;
    options.endpointsUrl = "/endpoints";
  }
  const anyWebTransport = !!options.webTransportUrl || (options.gateways ?? []).some((g) => g.webTransportUrl);
  if (transportPref === "webtransport" && !anyWebTransport) {
    log("WebTransport is disabled on this gateway: using WebSocket");
    options.transport = "websocket";
  }
  if (typeof WebTransport === "undefined") log("this browser has no WebTransport");
  // Tokens when the gateway hands out development tokens; anonymous otherwise. The first one
  // goes into the first Hello; every later Hello and every refresh fetches a new one.
  try {
    options.token = await devToken();
    options.getToken = devToken;
    log(`authenticating as "${sub}" with development tokens from /dev-token`);
  } catch (err) {
    // A TypeError: the request itself did not go through.
    const why = err instanceof TypeError ? "no answer from /dev-token" : err instanceof Error ? err.message : String(err);
    log(`anonymous: no development tokens here (${why})${params.get("sub") ? `; ?sub=${sub} is ignored` : ""}`);
  }

  const c = new SignalgateClient(options);
  client = c;
  window.signalgateDemo = { client: c, state, send };

  const via = () => (options.gateways ? ` via gateway ${gatewayName(c.gateway) ?? "?"}` : "");
  c.on("connected", (e) => {
    log(`connected over ${e.transport}${via()} as ${e.peerId} (connection ${e.connectionId})`);
    syncClientState();
  });
  c.on("resumed", (e) => {
    log(`resumed over ${e.transport}${via()} as ${e.peerId}; ${e.replayed} frames replayed, ${e.resent} resent`);
    syncClientState();
  });
  c.on("gatewaysUpdated", (e) => log(`gateways now: ${e.gateways.map((g) => gatewayName(g)).join(", ")}`));
  c.on("sessionLost", (e) => {
    log(`session lost (${e.code}): was ${e.previousPeerId}; starting a new one`);
    state.peers = {};
    state.peerNames = {};
    state.peerReasons = {};
    closeCall("session lost");
    syncClientState();
  });
  c.on("disconnected", (e) => {
    log(`disconnected: ${e.reason}${e.message ? ` (${e.message})` : ""}${e.willReconnect ? ", reconnecting" : ""}`);
    syncClientState();
  });
  c.on("tokenRefreshed", (e) => log(`token refreshed: valid for ${Math.round(e.expiresInMs / 1000)} s`));
  c.on("authFailed", (e) => log(`authentication failed (${e.code}: ${e.message}); not reconnecting`));
  c.on("transportFailed", (e) => log(`${e.transport} failed: ${e.error}`));
  // The SDK acts on these (Bye, Suspend, resume); the log shows when they happen.
  document.addEventListener("visibilitychange", () => log(`page ${document.visibilityState}`));
  document.addEventListener("freeze", () => log("page freeze"));
  document.addEventListener("resume", () => {
    log("page resume");
    syncClientState();
  });
  window.addEventListener("pagehide", (e) => log(`pagehide (persisted: ${e.persisted})`));
  window.addEventListener("pageshow", (e) => {
    if (!e.persisted) return;
    log("pageshow (restored from the back/forward cache)");
    syncClientState();
  });
  c.on("reconnecting", (e) => {
    log(`next attempt in ${e.delayMs} ms (failure #${e.attempt})`);
    syncClientState();
  });
  c.on("joined", (e) => {
    log(`joined ${e.room}${e.rejoined ? " again" : ""}: ${e.peers.length} other peer(s)`);
    for (const p of e.peers) {
      if (p.peerId === c.peerId) continue;
      rememberPeer(p);
    }
    render();
    void maybeCall().catch((err: unknown) => log(`call failed: ${String(err)}`));
  });
  c.on("peerJoined", (e) => {
    if (e.peer.peerId !== c.peerId) rememberPeer(e.peer);
    log(`${who(e.peer.peerId)} joined ${e.room} (${e.peer.state})`);
    if (e.peer.peerId === c.peerId) return;
    render();
    void maybeCall().catch((err: unknown) => log(`call failed: ${String(err)}`));
  });
  c.on("peerState", (e) => {
    const silent = e.state === "unreachable" ? `, silent for ${e.silentForMs} ms` : "";
    log(`${who(e.peerId)} is ${e.state.toUpperCase()} (${e.reason}${silent}, detected by ${e.detectedBy})`);
    if (e.peerId === c.peerId) return;
    state.peers[e.peerId] = e.state;
    state.peerReasons[e.peerId] = e.reason;
    silentFor[e.peerId] = e.silentForMs;
    render();
    void maybeCall().catch((err: unknown) => log(`call failed: ${String(err)}`));
  });
  c.on("peerLeft", (e) => {
    log(`${who(e.peerId)} left ${e.room} (${e.reason})`);
    state.peers[e.peerId] = "left";
    state.peerReasons[e.peerId] = e.reason;
    if (state.remotePeer === e.peerId) closeCall("peer left");
    render();
    void maybeCall().catch((err: unknown) => log(`call failed: ${String(err)}`));
  });
  c.on("signal", (e) => {
    if (e.description) {
      log(`${e.description.type} from ${e.from}`);
      onDescription(e.from, e.description).catch((err: unknown) => log(`WebRTC error: ${String(err)}`));
    } else if (e.candidate) {
      onCandidate(e.from, e.candidate).catch((err: unknown) => log(`candidate error: ${String(err)}`));
    } else if (e.data) {
      log(`${e.data.length} bytes of data from ${e.from}`);
      if (!state.rtc) {
        const text = new TextDecoder().decode(e.data);
        state.received.push(text);
        chatLine(`${state.peerNames[e.from] ?? e.from}: ${text}`);
        render();
      }
    }
  });
  c.on("error", (e) => log(`error ${e.code}: ${e.message}${e.inReplyTo ? ` (frame ${e.inReplyTo})` : ""}`));
  c.on("goAway", (e) =>
    log(`gateway going away (${e.reason}); reconnect in ${e.reconnectAfterMs}–${e.reconnectAfterMs + e.spreadMs} ms`),
  );

  syncClientState();
  const connecting = c.connect();
  syncClientState();
  await connecting;
  let joined;
  try {
    joined = await c.join(room);
  } catch (err) {
    if (!(err instanceof SignalgateError && err.code === "ALREADY_JOINED")) throw err;
    // With tokens the identity owns its session: this page took over the session of another
    // page with the same ?sub=, room included. Leave and join again for the list of peers.
    log(`already in ${room} (this identity's session came from another page): joining again`);
    await c.leave(room);
    joined = await c.join(room);
  }
  log(`in room ${joined.room}`);
  setInterval(render, 1000); // refresh rtt
}

window.signalgateDemo = { client: null, state, send };
render();
main().catch((err: unknown) => {
  log(`failed: ${err instanceof Error ? err.message : String(err)}`);
  document.body.dataset.error = String(err);
});
