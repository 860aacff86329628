"""NIP-44 v2: the encryption every kai-mesh payload carried over Nostr uses.

A conversation key is HKDF-extract(salt="nip44-v2", ikm=x of the secp256k1 ECDH point) — the same
for both sides. Each message draws a 32-byte nonce (given by the caller: the core takes no
randomness); HKDF-expand(conversation key, nonce, 76) gives a ChaCha20 key (32), a ChaCha20 nonce
(12) and an HMAC key (32). The plaintext is prefixed with its length (u16 big-endian) and zero
padded to `calc_padded_len`, encrypted with ChaCha20 (counter 0), and authenticated with
HMAC-SHA256(hmac key, nonce || ciphertext). The payload is base64(0x02 || nonce || ciphertext ||
mac). The MAC is checked, in constant time, before anything is decrypted.

Lengths: the 2023 spec (and the official vectors' `encrypt_msg_lengths`) allows 1..65535 bytes.
A 2026 extension, which nostr-tools 2.25 implements, writes a longer plaintext's length as
0x0000 followed by a u32; it is accepted only when the caller raises `max_plaintext` above 65535
(kai-mesh never needs it: it splits payloads to fit a relay's message limit, and nostr-sdk 0.45
refuses more than 65,408 bytes — LAB.md).

Errors are `Nip44Error` (a `ProtocolError`, reason "undecryptable") for a bad payload from outside,
and `UsageError` for a bad local argument (an empty or oversize plaintext, a bad key).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math

from coincurve import PrivateKey, PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from kai_mesh.core.errors import ProtocolError, UsageError

VERSION = 2
MIN_PLAINTEXT = 1
MAX_PLAINTEXT = 65535  # the spec's classic bound (see the module docstring)
MAX_EXTENDED_PLAINTEXT = 0xFFFFFFFF
SALT = b"nip44-v2"
NONCE_BYTES = 32
MAC_BYTES = 32
# Shortest valid payload: 1 version + 32 nonce + 2 prefix + 32 padded + 32 mac = 99 bytes,
# 132 base64 characters; the longest classic one 65,603 bytes.
MIN_PAYLOAD_CHARS = 132
MIN_DATA_BYTES = 99


class Nip44Error(ProtocolError):
    """A NIP-44 payload from outside cannot be decrypted: bad version, base64, MAC or padding."""

    reason = "undecryptable"


def _hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    return hmac.digest(salt, ikm, "sha256")


def _hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    out, block = b"", b""
    counter = 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        out += block
        counter += 1
    return out[:length]


def conversation_key(secret: bytes, public_xonly: bytes) -> bytes:
    """The 32-byte key shared by the holder of `secret` and of the x-only key `public_xonly`.

    Raises:
        UsageError: `secret` is not a valid secp256k1 secret (0, or not below the curve order).
        Nip44Error: `public_xonly` is not the x coordinate of a point on the curve.
    """
    if len(secret) != 32:
        raise UsageError("a Nostr secret key is 32 bytes")
    try:
        PrivateKey(secret)
    except ValueError as exc:
        raise UsageError(f"bad Nostr secret key: {exc}") from None
    if len(public_xonly) != 32:
        raise Nip44Error("a Nostr public key is 32 bytes")
    try:
        point = PublicKey(b"\x02" + public_xonly).multiply(secret)
    except ValueError as exc:
        raise Nip44Error(f"bad Nostr public key: {exc}") from None
    shared_x = point.format(compressed=True)[1:]
    return _hkdf_extract(SALT, shared_x)


def message_keys(conv_key: bytes, nonce: bytes) -> tuple[bytes, bytes, bytes]:
    """(ChaCha20 key, ChaCha20 nonce, HMAC key) for one message."""
    if len(conv_key) != 32:
        raise UsageError("a conversation key is 32 bytes")
    if len(nonce) != NONCE_BYTES:
        raise UsageError("a NIP-44 nonce is 32 bytes")
    keys = _hkdf_expand(conv_key, nonce, 76)
    return keys[:32], keys[32:44], keys[44:76]


def calc_padded_len(length: int) -> int:
    """The padded length of a plaintext of `length` bytes (at least 32; then 32-byte steps up
    to 256, then an eighth of the next power of two)."""
    if length < 1:
        raise UsageError("a plaintext is at least one byte")
    if length <= 32:
        return 32
    next_power = 1 << (length - 1).bit_length()
    chunk = 32 if next_power <= 256 else next_power // 8
    return chunk * ((length - 1) // chunk + 1)


def _pad(plaintext: bytes, max_plaintext: int) -> bytes:
    n = len(plaintext)
    if not MIN_PLAINTEXT <= n <= max_plaintext:
        raise UsageError(f"a NIP-44 plaintext is {MIN_PLAINTEXT}..{max_plaintext} bytes, not {n}")
    prefix = n.to_bytes(2, "big") if n <= MAX_PLAINTEXT else b"\x00\x00" + n.to_bytes(4, "big")
    return prefix + plaintext + bytes(calc_padded_len(n) - n)


def _unpad(padded: bytes, max_plaintext: int) -> bytes:
    n = int.from_bytes(padded[:2], "big")
    start = 2
    if n == 0:
        if max_plaintext <= MAX_PLAINTEXT or len(padded) < 6:
            raise Nip44Error("invalid padding")
        n, start = int.from_bytes(padded[2:6], "big"), 6
        if n <= MAX_PLAINTEXT:
            raise Nip44Error("invalid padding")
    if n > max_plaintext or len(padded) != start + calc_padded_len(n):
        raise Nip44Error("invalid padding")
    return padded[start : start + n]


def _chacha20(key: bytes, nonce: bytes, data: bytes) -> bytes:
    # cryptography's ChaCha20 takes a 16-byte nonce: the 32-bit block counter (little-endian,
    # starting at 0, as RFC 8439 and NIP-44 want) followed by the 96-bit nonce.
    cipher = Cipher(algorithms.ChaCha20(key, b"\x00\x00\x00\x00" + nonce), mode=None)
    return cipher.encryptor().update(data)


def encrypt(
    plaintext: bytes, conv_key: bytes, nonce: bytes, *, max_plaintext: int = MAX_PLAINTEXT
) -> str:
    """The NIP-44 v2 payload (base64 text) of `plaintext` (UTF-8 bytes, for a Nostr event).

    `nonce` must be 32 fresh random bytes (`os.urandom(32)` in the shell); reusing one with the
    same conversation key reveals the XOR of the two plaintexts.

    Raises:
        UsageError: `plaintext` is empty or longer than `max_plaintext`; a key has the wrong size.
    """
    if max_plaintext > MAX_EXTENDED_PLAINTEXT:
        raise UsageError("max_plaintext is at most 2**32 - 1")
    chacha_key, chacha_nonce, hmac_key = message_keys(conv_key, nonce)
    ciphertext = _chacha20(chacha_key, chacha_nonce, _pad(plaintext, max_plaintext))
    mac = hmac.digest(hmac_key, nonce + ciphertext, "sha256")
    return base64.b64encode(bytes([VERSION]) + nonce + ciphertext + mac).decode("ascii")


def decrypt(payload: str, conv_key: bytes, *, max_plaintext: int = MAX_PLAINTEXT) -> bytes:
    """The plaintext bytes of a NIP-44 v2 `payload`.

    Raises:
        Nip44Error: unknown version, bad base64, bad length, MAC mismatch or bad padding.
    """
    if not payload or payload[0] == "#":
        raise Nip44Error("unknown encryption version")
    # Bound the work before decoding: a classic payload is at most 87,472 characters.
    limit = 4 * math.ceil((1 + 32 + 6 + calc_padded_len(max(max_plaintext, 1)) + 32) / 3)
    if not MIN_PAYLOAD_CHARS <= len(payload) <= limit:
        raise Nip44Error(f"invalid payload length: {len(payload)}")
    try:
        data = base64.b64decode(payload.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise Nip44Error("invalid base64") from None
    if len(data) < MIN_DATA_BYTES:
        raise Nip44Error(f"invalid data length: {len(data)}")
    if data[0] != VERSION:
        raise Nip44Error(f"unknown encryption version {data[0]}")
    nonce, ciphertext, mac = data[1:33], data[33:-32], data[-32:]
    chacha_key, chacha_nonce, hmac_key = message_keys(conv_key, nonce)
    expected = hmac.digest(hmac_key, nonce + ciphertext, "sha256")
    if not hmac.compare_digest(expected, mac):
        raise Nip44Error("invalid MAC")
    return _unpad(_chacha20(chacha_key, chacha_nonce, ciphertext), max_plaintext)
