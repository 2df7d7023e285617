// The staff upload page's script: encrypts a file in the browser with typage to the
// partner's approved keys the page lists, and sends only the ciphertext
// (gateway/web_uploads.py). Like `blindpost send` it shows the keys by fingerprint
// (computed here, from the very recipients it encrypts to), declares them and the file's
// columns and records before the first byte (the gateway refuses keys that are not
// exactly the partner's approved ones, and contents outside its agreement). Where `send`
// compares the SHA-256 of the whole ciphertext with the gateway's, the page compares each
// part's (WebCrypto has no incremental hash, and one in JavaScript cost a third of the
// page's time) and the size the gateway recorded with the bytes sent.
//
// Nothing is held whole in memory: the File is read as a stream, encrypted as a stream,
// and sent as numbered parts of PART bytes, one at a time. (A fetch whose body is a
// ReadableStream needs HTTP/2 or QUIC in Chromium; the console speaks HTTP/1.1.)
import { Encrypter } from "age-encryption";
import { readContents } from "./contents.js";

"use strict";

const PART = 8 * 1024 * 1024;
const READ = 1024 * 1024;
const SESSIONS = "/upload/sessions";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf"]');
  return meta ? meta.content : "";
}

function base64(bytes) {
  return btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join("")).replace(/=+$/, "");
}

// "SHA256:" and the unpadded base64 SHA-256 of the recipient string, as
// gateway.envelope's Recipient.fingerprint and `blindpost send` show it.
export async function fingerprint(recipient) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(recipient));
  return "SHA256:" + base64(new Uint8Array(digest));
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// A refusal as the gateway words it (an RFC 9457 problem document's detail).
async function refusal(response) {
  let detail = "";
  try {
    detail = (await response.json()).detail || "";
  } catch {
    detail = "";
  }
  return new Error(detail || "the gateway answered " + response.status);
}

async function call(method, url, body, headers) {
  const response = await fetch(url, {
    method, body, credentials: "same-origin",
    headers: { "X-CSRF-Token": csrfToken(), ...headers },
  });
  if (!response.ok) {
    throw await refusal(response);
  }
  return response.status === 204 ? null : response.json();
}

function json(method, url, value) {
  return call(method, url, JSON.stringify(value), { "Content-Type": "application/json" });
}

// The keys the page lists, with their fingerprints computed here; each must be the one
// the page shows beside it.
async function recipientsOf(form) {
  const keys = [];
  for (const item of form.querySelectorAll("[data-recipient]")) {
    const computed = await fingerprint(item.dataset.recipient);
    if (computed !== item.dataset.fingerprint) {
      throw new Error("a listed key does not have the fingerprint shown beside it");
    }
    keys.push({ recipient: item.dataset.recipient, fingerprint: computed });
  }
  if (!keys.length) {
    throw new Error("the partner has no approved key");
  }
  return keys;
}

// Sends PART-sized parts in order, one in flight while the next is encrypted.
class Parts {
  constructor(id, progress) {
    this.url = SESSIONS + "/" + encodeURIComponent(id) + "/parts/";
    this.buffer = new Uint8Array(PART);
    this.filled = 0;
    this.count = 0;
    this.sent = 0;
    this.inflight = null;
    this.progress = progress;
  }

  async write(chunk) {
    while (chunk.length) {
      const n = Math.min(PART - this.filled, chunk.length);
      this.buffer.set(chunk.subarray(0, n), this.filled);
      this.filled += n;
      chunk = chunk.subarray(n);
      if (this.filled === PART) {
        await this.flush();
      }
    }
  }

  async flush() {
    if (this.inflight) {
      await this.inflight;
    }
    // A copy: the buffer fills again while this part is on its way.
    const body = this.buffer.slice(0, this.filled);
    const url = this.url + this.count;
    this.count += 1;
    this.filled = 0;
    // WebCrypto hashes natively, off this thread; a hash in JavaScript here cost a
    // third of the page's time.
    const digest = crypto.subtle.digest("SHA-256", body);
    this.inflight = Promise.all([
      call("PUT", url, body, { "Content-Type": "application/octet-stream" }), digest,
    ]).then(([received, sent]) => {
      if (received.sha256 !== hex(new Uint8Array(sent))) {
        throw new Error("part " + received.part + " arrived altered (SHA-256 "
          + received.sha256 + "); nothing was stored");
      }
      this.sent += body.length;
      this.progress(this.sent);
    });
    // Awaited at the next part or at the end; marked handled so that a refusal is not
    // also reported as an uncaught rejection meanwhile.
    this.inflight.catch(() => {});
  }

  async finish() {
    if (this.filled) {
      await this.flush();
    }
    if (this.inflight) {
      await this.inflight;
    }
    return this.sent;
  }
}

// The file as a stream of READ-byte pieces: far fewer, larger chunks than File.stream()
// gives, which each cost a round through the encryption's stream.
function slices(file) {
  let at = 0;
  return new ReadableStream({
    async pull(controller) {
      if (at >= file.size) {
        controller.close();
        return;
      }
      const piece = file.slice(at, at + READ);
      at += READ;
      controller.enqueue(new Uint8Array(await piece.arrayBuffer()));
    },
  }, { highWaterMark: 1 });
}

function say(form, text, isError) {
  const note = document.getElementById("upload-status");
  note.textContent = text;
  note.classList.toggle("error", Boolean(isError));
}

export async function upload(button) {
  const form = button.closest("form");
  const file = form.elements.file.files[0];
  if (!file) {
    throw new Error("choose a file first");
  }
  const bar = document.getElementById("upload-progress");
  bar.max = file.size || 1;
  bar.value = 0;
  bar.hidden = false;
  const keys = await recipientsOf(form);
  say(form, "Reading the file's columns… (encrypting to "
    + keys.map((k) => k.fingerprint).join(", ") + ")", false);
  const contents = await readContents(file, (done) => { bar.value = done / 2; });
  const opened = await json("POST", SESSIONS, {
    partner: form.dataset.partner, name: file.name,
    fingerprints: keys.map((k) => k.fingerprint),
    contents: { format: contents.format, columns: contents.columns || [],
      records: contents.records },
  });
  say(form, "Encrypting and uploading " + file.name + "…", false);
  const parts = new Parts(opened.id, (sent) => {
    bar.value = Math.min(bar.max, file.size / 2 + sent / 2);
  });
  try {
    const encrypter = new Encrypter();
    for (const key of keys) {
      encrypter.addRecipient(key.recipient);
    }
    const reader = (await encrypter.encrypt(slices(file))).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        break;
      }
      await parts.write(value);
    }
    const sent = await parts.finish();
    const stored = await json("POST", SESSIONS + "/" + encodeURIComponent(opened.id)
      + "/commit", { parts: parts.count });
    if (stored.size !== sent) {
      throw new Error("the gateway recorded " + stored.size + " bytes but " + sent
        + " were sent; ask the registry to withdraw " + stored.name);
    }
    bar.value = bar.max;
    return stored.name + " for " + stored.partner + ", " + stored.size
      + " bytes encrypted, SHA-256 " + stored.sha256 + ", expires "
      + stored.expires_at.replace("T", " ").slice(0, 16) + " UTC";
  } catch (error) {
    // Already ended by the gateway when it refused; otherwise this ends it (audited).
    await call("DELETE", SESSIONS + "/" + encodeURIComponent(opened.id)).catch(() => {});
    throw error;
  }
}
