/**
 * Length-delimited framing for the WebTransport stream: every frame is prefixed by its length
 * as a protobuf varint (the same bytes as prost `encode_length_delimited` and protobuf-es
 * `sizeDelimitedEncode`). WebSocket needs none of this: one binary message is one frame.
 */

/** Largest frame the decoder accepts unless told otherwise (the gateway's limit is lower). */
export const DEFAULT_MAX_FRAME_BYTES = 1 << 20;

/** The stream cannot be decoded any further: the connection must be closed. */
export class FramingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FramingError";
  }
}

/** Number of bytes the varint encoding of `n` takes. */
function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/** Prefixes `payload` with its length as a varint. */
export function encodeFrame(payload: Uint8Array): Uint8Array {
  const len = payload.length;
  const out = new Uint8Array(varintSize(len) + len);
  let n = len;
  let i = 0;
  while (n >= 0x80) {
    out[i++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  out[i++] = n;
  out.set(payload, i);
  return out;
}

/**
 * Incremental decoder: feed it chunks exactly as they come off the stream (a chunk may hold
 * part of a frame, several frames, or both) and it returns the complete frames' payloads.
 *
 * A length above `maxFrameBytes` throws FramingError as soon as the prefix shows it, without
 * waiting for (or buffering) the body; so does a varint longer than any allowed length.
 */
export class FrameDecoder {
  private buf: Uint8Array = new Uint8Array(0);
  private start = 0;
  private end = 0;
  private failed = false;

  constructor(readonly maxFrameBytes: number = DEFAULT_MAX_FRAME_BYTES) {}

  /** Bytes received but not yet returned as a frame. */
  get pendingBytes(): number {
    return this.end - this.start;
  }

  push(chunk: Uint8Array): Uint8Array[] {
    if (this.failed) throw new FramingError("decoder already failed");
    this.append(chunk);
    const frames: Uint8Array[] = [];
    for (;;) {
      const header = this.readLength();
      if (header === undefined) break;
      const [len, headerBytes] = header;
      const bodyStart = this.start + headerBytes;
      if (this.end - bodyStart < len) break;
      // Copy out so that callers may keep the frame while the buffer is reused.
      frames.push(this.buf.slice(bodyStart, bodyStart + len));
      this.start = bodyStart + len;
    }
    if (this.start === this.end) {
      this.start = 0;
      this.end = 0;
    }
    return frames;
  }

  /** [length, bytes of the prefix] when the whole prefix is buffered, else undefined. */
  private readLength(): [number, number] | undefined {
    let value = 0;
    let factor = 1;
    for (let i = 0; this.start + i < this.end; i++) {
      const byte = this.buf[this.start + i]!;
      value += (byte & 0x7f) * factor;
      if (value > this.maxFrameBytes) {
        this.failed = true;
        throw new FramingError(
          `frame length ${byte & 0x80 ? "≥ " : ""}${value} exceeds the limit of ${this.maxFrameBytes} bytes`,
        );
      }
      if ((byte & 0x80) === 0) return [value, i + 1];
      factor *= 128;
      if (i >= 9) {
        this.failed = true;
        throw new FramingError("invalid varint length prefix");
      }
    }
    return undefined;
  }

  private append(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    if (this.end + chunk.length > this.buf.length) {
      const live = this.end - this.start;
      const needed = live + chunk.length;
      if (needed <= this.buf.length) {
        this.buf.copyWithin(0, this.start, this.end);
      } else {
        const grown = new Uint8Array(Math.max(needed, this.buf.length * 2, 1024));
        grown.set(this.buf.subarray(this.start, this.end));
        this.buf = grown;
      }
      this.start = 0;
      this.end = live;
    }
    this.buf.set(chunk, this.end);
    this.end += chunk.length;
  }
}
