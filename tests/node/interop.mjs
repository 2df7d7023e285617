// Drives the age-encryption (typage) implementation for the envelope interop tests.
//
//   node interop.mjs keygen hybrid|x25519     prints the identity, then the recipient
//   node interop.mjs encrypt RECIPIENT [armor] stdin: plaintext, stdout: age file
//   node interop.mjs decrypt IDENTITY          stdin: age file (binary or armored)
//
// Exits non-zero with the error on stderr if anything fails.
import * as age from "age-encryption";

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return new Uint8Array(Buffer.concat(chunks));
}

async function keygen(kind) {
  const identity = kind === "hybrid"
    ? await age.generateHybridIdentity()
    : await age.generateX25519Identity();
  process.stdout.write(`${identity}\n${await age.identityToRecipient(identity)}\n`);
}

async function encrypt(recipient, mode) {
  const e = new age.Encrypter();
  e.addRecipient(recipient);
  const ciphertext = await e.encrypt(await readStdin());
  process.stdout.write(mode === "armor" ? age.armor.encode(ciphertext) : ciphertext);
}

async function decrypt(identity) {
  let input = await readStdin();
  const text = Buffer.from(input).toString("latin1");
  if (text.trimStart().startsWith("-----BEGIN")) input = age.armor.decode(text);
  const d = new age.Decrypter();
  d.addIdentity(identity);
  process.stdout.write(await d.decrypt(input));
}

const [command, arg, mode] = process.argv.slice(2);
const commands = { keygen, encrypt, decrypt };
if (!(command in commands)) {
  process.stderr.write("usage: interop.mjs keygen|encrypt|decrypt ...\n");
  process.exit(2);
}
await commands[command](arg, mode);
