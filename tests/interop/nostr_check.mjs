// The real `nostr-tools` package's side of tests/interop/test_nostr.py.
//
//   node nostr_check.mjs check FILE   FILE holds {events: [...], ciphers: [{sec, pub, payload}],
//                                     long: {conversation_key, nonce, letter, repeat}}, made by
//                                     kai-mesh. Prints {events: [{valid, hash}], plaintexts:
//                                     [...], long_payload}: verifyEvent and getEventHash of each
//                                     event, nip44 decrypt of each cipher, and nip44 encrypt of
//                                     the long message with the given key and nonce.
//   node nostr_check.mjs make FILE    FILE holds {sec, peer_pub, contents: [...]}: prints {events:
//                                     [...], ciphers: [...]}: one signed ephemeral event and one
//                                     NIP-44 payload (sec -> peer_pub) per content.
//   node nostr_check.mjs giftwrap FILE  FILE holds {wraps, recipient_sec, contents, sender_sec,
//                                     our_pub}: prints {unwrapped: [...], wraps: [...]}: NIP-59
//                                     unwrapEvent of each of our wraps, wrapEvent of each content.
import { readFileSync } from 'node:fs'
import { finalizeEvent, getEventHash, verifyEvent } from 'nostr-tools/pure'
import * as nip44 from 'nostr-tools/nip44'
import * as nip59 from 'nostr-tools/nip59'

const hex = (bytes) => Buffer.from(bytes).toString('hex')
const unhex = (text) => Uint8Array.from(Buffer.from(text, 'hex'))

function check (job) {
  const events = job.events.map((e) => ({ valid: verifyEvent({ ...e }), hash: getEventHash(e) }))
  const plaintexts = job.ciphers.map((c) => {
    const key = nip44.v2.utils.getConversationKey(unhex(c.sec), c.pub)
    return nip44.v2.decrypt(c.payload, key)
  })
  const l = job.long
  const longPayload = nip44.v2.encrypt(l.letter.repeat(l.repeat), unhex(l.conversation_key), unhex(l.nonce))
  return { events, plaintexts, long_payload: longPayload }
}

function make (job) {
  const sec = unhex(job.sec)
  const key = nip44.v2.utils.getConversationKey(sec, job.peer_pub)
  const events = job.contents.map((content, i) => finalizeEvent({
    kind: 21059,
    created_at: 1700000000 + i,
    tags: [['p', job.peer_pub], ['expiration', String(1700000600 + i)]],
    content
  }, sec))
  const ciphers = job.contents.map((content) => nip44.v2.encrypt(content, key))
  return { events, ciphers }
}

// NIP-59: unwrap each of our gift wraps with the recipient's key; wrap each content for us.
function giftwrap (job) {
  const unwrapped = job.wraps.map((w) => {
    const rumor = nip59.unwrapEvent(w, unhex(job.recipient_sec))
    return { pubkey: rumor.pubkey, kind: rumor.kind, content: rumor.content, tags: rumor.tags }
  })
  const wraps = job.contents.map((content) => nip59.wrapEvent(
    { kind: 14, content, tags: [['m', 'x']], created_at: 1700000000 },
    unhex(job.sender_sec), job.our_pub))
  return { unwrapped, wraps }
}

const [mode, file] = process.argv.slice(2)
const job = JSON.parse(readFileSync(file, 'utf8'))
if (mode === 'check') console.log(JSON.stringify(check(job)))
else if (mode === 'make') console.log(JSON.stringify(make(job)))
else if (mode === 'giftwrap') console.log(JSON.stringify(giftwrap(job)))
else { console.error('usage: nostr_check.mjs check|make FILE'); process.exit(2) }
