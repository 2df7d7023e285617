// The partner portal's script: decrypts in the browser with typage (age-encryption), so
// the server only ever sends ciphertext and stores the partner's identity wrapped by a
// passkey (WebAuthn PRF); and the staff upload page's, which encrypts in the browser
// (./upload.js). Bundled by esbuild into admin_ui/static/portal.js (`make portal-js`);
// loaded only by the portal's pages and the upload page. Without it the portal still
// lists files and serves their ciphertext, and the upload page says what to use instead.
import { Decrypter, Encrypter, armor, generateHybridIdentity, identityToRecipient,
  webauthn } from "age-encryption";
import { upload } from "./upload.js";

"use strict";

const IDENTITY = /^AGE-SECRET-KEY-(PQ-)?1[0-9A-Z]+$/;

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf"]');
  return meta ? meta.content : "";
}

function say(element, text, isError) {
  const note = document.getElementById(element.dataset.status || "portal-status");
  if (note) {
    note.textContent = text;
    note.classList.toggle("error", Boolean(isError));
  }
}

// The identity in a key file: its first line that is an age identity (comments skipped).
export function identityFromKeyFile(text) {
  for (const line of text.split(/\r?\n/)) {
    const trimmed = line.trim();
    if (IDENTITY.test(trimmed)) {
      return trimmed;
    }
  }
  throw new Error("the file holds no age identity (AGE-SECRET-KEY-…)");
}

// Create a passkey that can wrap (PRF), wrap the identity to it, and hand the server only
// the wrapped identity, the credential's public handle and the recipient.
async function enrol(identity, form) {
  const recipient = await identityToRecipient(identity);
  const credential = await webauthn.createCredential({
    keyName: "Blindpost file key (" + form.dataset.account + ")",
  });
  const encrypter = new Encrypter();
  encrypter.addRecipient(new webauthn.WebAuthnRecipient({ identity: credential }));
  const wrapped = armor.encode(await encrypter.encrypt(identity));
  // Check the round trip before the server keeps anything: a passkey without PRF fails here.
  if (await unwrap(wrapped, credential) !== identity) {
    throw new Error("the passkey did not unwrap the identity it wrapped");
  }
  const body = new URLSearchParams({ csrf: csrfToken(), wrapped, credential, recipient });
  const response = await fetch(form.action, { method: "POST", credentials: "same-origin", body });
  if (!response.ok) {
    throw new Error("the server refused the wrapped key (" + response.status + "): "
      + (await response.text()).slice(0, 200));
  }
  return recipient;
}

async function unwrap(wrapped, credential) {
  const decrypter = new Decrypter();
  decrypter.addIdentity(new webauthn.WebAuthnIdentity({ identity: credential }));
  return decrypter.decrypt(armor.decode(wrapped), "text");
}

async function storedIdentity() {
  const response = await fetch("/portal/key/wrapped", { credentials: "same-origin" });
  if (!response.ok) {
    throw new Error("no wrapped key is stored for you yet; enrol on the Key page");
  }
  const stored = await response.json();
  return unwrap(stored.wrapped, stored.credential);
}

function offerBackup(identity, recipient) {
  const blob = new Blob(["# Blindpost partner key: keep this file offline, it is your only "
    + "way back if the passkey is lost.\n# public key: " + recipient + "\n" + identity + "\n"],
  { type: "text/plain" });
  const link = document.getElementById("key-backup");
  if (link) {
    link.href = URL.createObjectURL(blob);
    link.hidden = false;
  }
}

async function generate(button) {
  const form = button.closest("form");
  const identity = await generateHybridIdentity();
  const recipient = await enrol(identity, form);
  offerBackup(identity, recipient);
  return recipient;
}

async function importKey(button) {
  const form = button.closest("form");
  const file = form.elements.keyfile.files[0];
  if (!file) {
    throw new Error("choose your key file first");
  }
  return enrol(identityFromKeyFile(await file.text()), form);
}

// Download one file's ciphertext and decrypt it as it arrives, straight into a file the
// user picked: nothing is held whole in memory, whatever the file's size.
async function downloadAndDecrypt(button) {
  if (!window.showSaveFilePicker) {
    throw new Error("this browser cannot save a stream to disk (no File System Access API); "
      + "download the encrypted file and decrypt it with `blindpost decrypt`");
  }
  // The picker needs the click's user activation, so it comes before anything awaited.
  const handle = await window.showSaveFilePicker({ suggestedName: button.dataset.name });
  const writable = await handle.createWritable();
  try {
    const decrypter = new Decrypter();
    decrypter.addIdentity(await storedIdentity());
    const response = await fetch(button.dataset.url, { credentials: "same-origin" });
    if (!response.ok || !response.body) {
      throw new Error("the download was refused (" + response.status + ")");
    }
    const plaintext = await decrypter.decrypt(response.body);
    await plaintext.pipeTo(writable);
  } catch (error) {
    await writable.abort().catch(() => {});
    throw error;
  }
}

const ACTIONS = { generate, import: importKey, decrypt: downloadAndDecrypt, upload };

function start() {
  // Shown only with this script running, and its stand-in only without (a <noscript>
  // element would not do: a browser told not to run scripts may still parse the page as
  // if it would).
  for (const element of document.querySelectorAll("[data-needs-script]")) {
    element.hidden = false;
  }
  for (const element of document.querySelectorAll("[data-without-script]")) {
    element.hidden = true;
  }
  for (const button of document.querySelectorAll("button[data-portal]")) {
    const action = ACTIONS[button.dataset.portal];
    if (!action) {
      continue;
    }
    button.hidden = false;
    button.addEventListener("click", (event) => {
      event.preventDefault();
      button.disabled = true;
      say(button, "Working…", false);
      action(button).then((result) => {
        button.disabled = false;
        say(button, button.dataset.done + (typeof result === "string" ? " " + result : ""), false);
      }).catch((error) => {
        button.disabled = false;
        say(button, "Not done: " + error.message, true);
      });
    });
  }
}

if (typeof document !== "undefined") {
  document.addEventListener("DOMContentLoaded", start);
}
