/** The gateways a GET /endpoints answer describes. */
import { describe, expect, it } from "vitest";
import { certificateHash, gatewaysFromEndpoints } from "../src/core/endpoints.js";

const A = "0123456789abcdef".repeat(4);
const B = "fedcba9876543210".repeat(4);

function hash(hex: string) {
  return [{ algorithm: "sha-256", value: new Uint8Array(hex.match(/../g)!.map((h) => parseInt(h, 16))) }];
}

describe("gatewaysFromEndpoints", () => {
  it("cluster mode: every entry of `gateways`, each with its own certificate hash; the answering one with the URLs this client reached it by", () => {
    const list = gatewaysFromEndpoints({
      webtransport: "https://127.0.0.1:4433/wt",
      websocket: "ws://localhost:4480/ws",
      websocket_tls: "wss://localhost:4433/ws",
      cert_sha256: A,
      gateways: [
        { node: "a", websocket: "wss://10.0.0.1:4433/ws", webtransport: "https://10.0.0.1:4433/wt", cert_sha256: A },
        { node: "b", websocket: "wss://10.0.0.2:4433/ws", webtransport: null, cert_sha256: B.toUpperCase() },
      ],
    });
    expect(list).toEqual([
      { node: "a", webTransportUrl: "https://127.0.0.1:4433/wt", webSocketUrl: "ws://localhost:4480/ws", serverCertificateHashes: hash(A) },
      { node: "b", webSocketUrl: "wss://10.0.0.2:4433/ws" },
    ]);
  });

  it("alone (`gateways: []`, or an older gateway without it): the answering gateway from the top-level fields", () => {
    const alone = { webtransport: "https://127.0.0.1:4433/wt", websocket: "ws://127.0.0.1:4480/ws", cert_sha256: A };
    const expected = [{ webTransportUrl: "https://127.0.0.1:4433/wt", webSocketUrl: "ws://127.0.0.1:4480/ws", serverCertificateHashes: hash(A) }];
    expect(gatewaysFromEndpoints({ ...alone, gateways: [] })).toEqual(expected);
    expect(gatewaysFromEndpoints(alone)).toEqual(expected);
    expect(gatewaysFromEndpoints({ webtransport: null, websocket: "ws://h/ws", cert_sha256: null })).toEqual([{ webSocketUrl: "ws://h/ws" }]);
  });

  it("leaves out what cannot be used: entries without a URL, malformed hashes, anything that is not an answer", () => {
    expect(
      gatewaysFromEndpoints({
        gateways: [{ node: "x", websocket: null, webtransport: null, cert_sha256: A }, 7, { node: "y", webtransport: "https://y/wt", cert_sha256: "abc" }],
      }),
    ).toEqual([{ node: "y", webTransportUrl: "https://y/wt" }]);
    for (const junk of [null, "text", 42, [], {}, { gateways: "no" }]) expect(gatewaysFromEndpoints(junk)).toEqual([]);
  });

  it("certificateHash turns cert_sha256 into WebTransport's serverCertificateHashes entry", () => {
    expect(certificateHash(A)).toEqual(hash(A)[0]);
  });
});
