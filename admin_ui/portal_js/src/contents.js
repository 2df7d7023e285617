// What a file holds, read in the browser before it is encrypted: its format, column names
// and record count, never a value. A port of gateway/data_elements.py's ContentScan (see
// its docstring for the rules), so the upload page declares what
// `blindpost send` would; tests/unit/admin_ui/test_upload_contents.py runs both on the
// same files. The gateway checks the declaration against the partner's agreement, and
// checks the names again itself (gateway.data_elements.declared_contents).

"use strict";

export const HEAD_LIMIT = 64 * 1024;
const MAX_NAME = 64;
const DELIMITERS = [[",", "csv"], ["\t", "tsv"], [";", "semicolon"], ["|", "pipe"]];
export const OPAQUE = "opaque";
const EMPTY = "empty";
const ascii = (text) => Uint8Array.from(text, (c) => c.charCodeAt(0));
const BINARY_MAGIC = [ascii("PK\x03\x04"), ascii("PK\x05\x06"), ascii("\x1f\x8b"), ascii("%PDF"),
  ascii("\xd0\xcf\x11\xe0"), ascii("BZh"), ascii("\xfd7zXZ"), ascii("7z\xbc\xaf"),
  ascii("age-encryption.org/"), ascii("-----BEGIN AGE")];
// Python's [^\W\d_][\w .()/#\"-]* (Unicode): a letter or non-decimal number first.
const NAME = /^[\p{L}\p{Nl}\p{No}][\p{L}\p{N}_ .()/#"-]*$/u;
const BOMS = [[[0xef, 0xbb, 0xbf], "utf-8-sig"], [[0xff, 0xfe], "utf-16-le"],
  [[0xfe, 0xff], "utf-16-be"]];
const NEWLINES = { "utf-8": [0x0a], "utf-16-le": [0x0a, 0x00], "utf-16-be": [0x00, 0x0a] };
const QUOTES = { "utf-8": [0x22], "utf-16-le": [0x22, 0x00], "utf-16-be": [0x00, 0x22] };

function startsWith(bytes, prefix) {
  return bytes.length >= prefix.length && prefix.every((b, i) => bytes[i] === b);
}

function concat(a, b) {
  const joined = new Uint8Array(a.length + b.length);
  joined.set(a);
  joined.set(b, a.length);
  return joined;
}

// Where `needle` (1 or 2 bytes) first occurs in bytes[from, to), or -1.
function find(bytes, needle, from, to = bytes.length) {
  if (needle.length === 1) {
    const at = bytes.subarray(0, to).indexOf(needle[0], from);
    return at;
  }
  let at = from;
  while (at < to - 1) {
    at = bytes.indexOf(needle[0], at);
    if (at < 0 || at >= to - 1) {
      return -1;
    }
    if (bytes[at + 1] === needle[1]) {
      return at;
    }
    at += 1;
  }
  return -1;
}

// Non-overlapping occurrences of `needle` in bytes[from, to), as Python's bytes.count.
function count(bytes, needle, from = 0, to = bytes.length) {
  let found = 0;
  let at = from;
  for (;;) {
    at = find(bytes, needle, at, to);
    if (at < 0) {
      return found;
    }
    found += 1;
    at += needle.length;
  }
}

function opaque(reason) {
  return { format: OPAQUE, columns: null, records: null, encoding: null, reason };
}

function encodingOf(head) {
  for (const [bom, name] of BOMS) {
    if (startsWith(head, bom)) {
      return [name, bom.length];
    }
  }
  return ["utf-8", 0];
}

function headerEnd(head, start, codec) {
  const newline = NEWLINES[codec];
  const quote = QUOTES[codec];
  let position = start;
  for (;;) {
    const found = find(head, newline, position);
    if (found < 0) {
      return null;
    }
    if (newline.length === 2 && (found - start) % 2) {
      position = found + 1;
      continue;
    }
    if (count(head, quote, start, found) % 2 === 0) {
      return found;
    }
    position = found + newline.length;
  }
}

// Python's csv.reader over one line without line breaks (quotechar '"', doublequote,
// strict=False).
export function splitCells(text, delimiter) {
  if (text === "") {
    return [];
  }
  const cells = [];
  let field = "";
  let state = "start";
  for (const c of text) {
    if (state === "start") {
      if (c === '"') {
        state = "quoted";
      } else if (c === delimiter) {
        cells.push(field);
        field = "";
      } else {
        field += c;
        state = "field";
      }
    } else if (state === "field") {
      if (c === delimiter) {
        cells.push(field);
        field = "";
        state = "start";
      } else {
        field += c;
      }
    } else if (state === "quoted") {
      if (c === '"') {
        state = "quote-in-quoted";
      } else {
        field += c;
      }
    } else if (c === '"') {
      field += c;
      state = "quoted";
    } else if (c === delimiter) {
      cells.push(field);
      field = "";
      state = "start";
    } else {
      field += c;
      state = "field";
    }
  }
  cells.push(field);
  return cells;
}

function delimiterOf(line) {
  const outside = line.split('"').filter((_, index) => index % 2 === 0).join("");
  let best = null;
  let most = 0;
  for (const [delimiter] of DELIMITERS) {
    const found = outside.split(delimiter).length - 1;
    if (found > most) {
      best = delimiter;
      most = found;
    }
  }
  return best;
}

function decode(raw, codec) {
  const label = { "utf-8": "utf-8", "utf-16-le": "utf-16le", "utf-16-be": "utf-16be" }[codec];
  return new TextDecoder(label, { fatal: true, ignoreBOM: true }).decode(raw);
}

function parseHeader(head, skip, end, encoding) {
  const raw = head.subarray(skip, end);
  if (BINARY_MAGIC.some((magic) => startsWith(raw, magic))
      || (raw.includes(0) && !encoding.startsWith("utf-16"))) {
    return opaque("a binary or compressed format");
  }
  let codec = encoding.replace("-sig", "");
  let text;
  try {
    text = decode(raw, codec);
  } catch {
    if (codec !== "utf-8") {
      return opaque(`the header is not valid ${codec}`);
    }
    codec = "latin-1";
    text = Array.from(raw, (b) => String.fromCharCode(b)).join("");
  }
  if (text.endsWith("\r")) {
    text = text.slice(0, -1);
  }
  if ([...text].some((ch) => ch < " " && ch !== "\t")) {
    return opaque("the first line holds control characters: not a text header");
  }
  const delimiter = delimiterOf(text);
  const names = splitCells(text, delimiter || ",").map((cell) => cell.trim());
  for (const [index, name] of names.entries()) {
    if ([...name].length > MAX_NAME || !NAME.test(name)) {
      return opaque(`the first line is not a header (cell ${index + 1} is not a column name)`);
    }
  }
  const format = delimiter ? DELIMITERS.find(([d]) => d === delimiter)[1] : "csv";
  return { format, columns: names, records: null,
    encoding: encoding === "utf-8-sig" ? "utf-8-sig" : codec, reason: null };
}

export class ContentScan {
  constructor() {
    this.head = new Uint8Array(0);
    this.header = null;
    this.headerBytes = 0;
    this.newlines = 0;
    this.size = 0;
    this.last = [];
    this.newline = [0x0a];
    this.carry = new Uint8Array(0);
  }

  feed(data) {
    if (!data.length) {
      return;
    }
    this.size += data.length;
    if (this.header === null) {
      this.head = concat(this.head, data);
      this.tryHeader(false);
      return;
    }
    if (this.header.format === OPAQUE) {
      return;
    }
    this.count(data);
  }

  count(data) {
    if (this.newline.length === 1) {
      this.newlines += count(data, this.newline);
      this.last = [data[data.length - 1]];
      return;
    }
    const joined = concat(this.carry, data);
    const whole = joined.length - (joined.length % 2);
    this.newlines += count(joined, this.newline, 0, whole);
    this.carry = joined.slice(whole);
    if (whole) {
      this.last = [joined[whole - 2], joined[whole - 1]];
    }
  }

  finish() {
    if (this.header === null) {
      if (this.size === 0) {
        return { format: EMPTY, columns: [], records: 0, encoding: null, reason: null };
      }
      this.tryHeader(true);
    }
    const header = this.header;
    if (header.format === OPAQUE) {
      return header;
    }
    let records = this.newlines;
    const endsLine = this.last.length === this.newline.length
      && this.last.every((b, i) => b === this.newline[i]);
    if (this.size > this.headerBytes && !endsLine) {
      records += 1;
    }
    return { ...header, records };
  }

  tryHeader(final) {
    const head = this.head;
    const [encoding, skip] = encodingOf(head);
    const codec = encoding.replace("-sig", "");
    const newline = NEWLINES[codec];
    const end = headerEnd(head, skip, codec);
    if (end === null && !final && head.length < HEAD_LIMIT) {
      return;
    }
    this.head = new Uint8Array(0);
    this.newline = newline;
    if (end === null && head.length >= HEAD_LIMIT) {
      this.header = opaque(`no header line within the first ${HEAD_LIMIT} bytes`);
      return;
    }
    const lineEnd = end !== null ? end : head.length;
    this.header = parseHeader(head, skip, lineEnd, encoding);
    this.headerBytes = end !== null ? lineEnd + newline.length : head.length;
    if (end !== null) {
      this.last = newline;
    }
    const rest = head.subarray(this.headerBytes);
    if (rest.length && this.header.format !== OPAQUE) {
      this.count(rest);
    }
  }
}

// The contents of a File (or Blob), read once, in order, in the browser.
export async function readContents(file, onProgress) {
  const scan = new ContentScan();
  const reader = file.stream().getReader();
  let done = 0;
  for (;;) {
    const { value, done: ended } = await reader.read();
    if (ended) {
      return scan.finish();
    }
    scan.feed(value);
    done += value.length;
    if (onProgress) {
      onProgress(done);
    }
  }
}
