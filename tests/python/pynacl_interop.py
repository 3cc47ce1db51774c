"""An independent implementation of boxcar's sealed-value format v1 with PyNaCl (libsodium).

It follows docs/FORMAT.md, not the Rust code, so that the Rust integration test
`boxcar-secrets/tests/it/interop.rs` can show that the specification is enough to
seal values boxcar opens and to open values boxcar seals.

Usage (every request is TOML on stdin, so secret keys never appear in argv):

    pynacl_interop.py seal           request: env, public_key, [[item]] name + value_hex or frame_hex
                                     prints a whole environment file (public_key, [settings], [secrets])
    pynacl_interop.py open           request: env, secret_key, [[item]] name, sealed, value_hex
                                     opens and checks every item; prints [[opened]] tables; exit 1 on mismatch
    pynacl_interop.py check-vectors PATH
                                     runs the committed vectors through this implementation

Needs Python 3.11 (tomllib) and PyNaCl.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import tomllib

import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.public

PREFIX = "sealed:"
VERSION = 1
MAX_ENV_LEN = 32
MAX_NAME_LEN = 64
MAX_VALUE_LEN = 65536
# crypto_box_seal adds the ephemeral public key (32 bytes) and the Poly1305 tag (16).
SEAL_OVERHEAD = 48
# The shortest frame: version, env length, one env byte, name length, one name byte.
MIN_FRAME_LEN = 5


class BoxcarError(Exception):
    """A value that cannot be opened; `kind` uses the Rust variant names (`OpenError::Decrypt`, ...)."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


def key_id(public_key: bytes) -> str:
    """First 8 bytes of SHA-256 of the 32-byte public key, as 16 lower-case hex digits."""
    return hashlib.sha256(public_key).digest()[:8].hex()


LOWER = b"abcdefghijklmnopqrstuvwxyz"
ENV_CHARS = LOWER + b"0123456789_-"
NAME_CHARS = LOWER + b"0123456789_"


def env_name_ok(name: bytes) -> bool:
    """1 to 32 bytes of a-z 0-9 _ -, starting with a-z."""
    return 1 <= len(name) <= MAX_ENV_LEN and name[0] in LOWER and all(c in ENV_CHARS for c in name)


def secret_name_ok(name: bytes) -> bool:
    """1 to 64 bytes of a-z 0-9 _, starting with a-z."""
    return 1 <= len(name) <= MAX_NAME_LEN and name[0] in LOWER and all(c in NAME_CHARS for c in name)


def frame(env: str, name: str, value: bytes) -> bytes:
    """0x01 || len(env) || env || len(name) || name || value."""
    e, n = env.encode(), name.encode()
    if not env_name_ok(e):
        raise ValueError(f"invalid environment name {env!r}")
    if not secret_name_ok(n):
        raise ValueError(f"invalid secret name {name!r}")
    if len(value) > MAX_VALUE_LEN:
        raise ValueError(f"value is {len(value)} bytes; at most {MAX_VALUE_LEN}")
    return bytes([VERSION, len(e)]) + e + bytes([len(n)]) + n + value


def text_form(public_key: bytes, sealed: bytes) -> str:
    return f"{PREFIX}v{VERSION}:{key_id(public_key)}:{base64.b64encode(sealed).decode('ascii')}"


def seal(public_key: bytes, env: str, name: str, value: bytes) -> str:
    """What `cargo xtask encrypt-secret` does: libsodium's crypto_box_seal of the frame."""
    return seal_frame(public_key, frame(env, name, value))


def seal_frame(public_key: bytes, plaintext: bytes) -> str:
    """Seals any plaintext (the vector generator uses this to craft malformed frames)."""
    sealed = nacl.public.SealedBox(nacl.public.PublicKey(public_key)).encrypt(plaintext)
    return text_form(public_key, bytes(sealed))


def seal_frame_with_ephemeral(public_key: bytes, plaintext: bytes, ephemeral_secret: bytes) -> bytes:
    """crypto_box_seal spelled out, with a chosen ephemeral key so test vectors are reproducible.

    Real sealing must use a fresh random ephemeral key (`seal_frame`); this is for vectors only.
    """
    esk = nacl.public.PrivateKey(ephemeral_secret)
    epk = bytes(esk.public_key)
    nonce = nacl.hash.blake2b(epk + public_key, digest_size=24, encoder=nacl.encoding.RawEncoder)
    boxed = nacl.public.Box(esk, nacl.public.PublicKey(public_key)).encrypt(plaintext, nonce)
    return epk + boxed.ciphertext


def parse(text: str) -> tuple[str, bytes]:
    """Parses the text form without a key: returns (key id, sealed bytes)."""
    if not text.startswith(PREFIX):
        raise BoxcarError("ParseError::NotSealed")
    parts = text[len(PREFIX) :].split(":", 2)
    version = parts[0]
    if not text[len(PREFIX) :]:
        raise BoxcarError("ParseError::Shape")
    # The version comes before the shape: a future layout is an unknown version.
    if version != f"v{VERSION}":
        raise BoxcarError("ParseError::UnknownVersion", version[:16])
    if len(parts) != 3:
        raise BoxcarError("ParseError::Shape")
    _, kid, body = parts
    if len(kid) != 16 or any(c not in "0123456789abcdef" for c in kid):
        raise BoxcarError("ParseError::KeyId")
    try:
        sealed = base64.b64decode(body.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise BoxcarError("ParseError::Base64") from None
    # Only the canonical encoding is accepted: padding present, unused bits zero.
    if base64.b64encode(sealed).decode("ascii") != body:
        raise BoxcarError("ParseError::Base64")
    if len(sealed) < SEAL_OVERHEAD + MIN_FRAME_LEN:
        raise BoxcarError("ParseError::TooShort", str(len(sealed)))
    return kid, sealed


def unframe(plaintext: bytes) -> tuple[str, str, bytes]:
    """Splits a frame into (env, name, value), or raises OpenError::Frame."""

    def bad(why: str) -> BoxcarError:
        return BoxcarError("OpenError::Frame", why)

    if not plaintext:
        raise bad("empty plaintext")
    if plaintext[0] != VERSION:
        raise bad("inner version byte is not 1")
    pos = 1
    fields = []
    for max_len in (MAX_ENV_LEN, MAX_NAME_LEN):
        if pos >= len(plaintext):
            raise bad("missing length byte")
        n = plaintext[pos]
        pos += 1
        if n == 0 or n > max_len or len(plaintext) - pos < n:
            raise bad("name length out of range")
        fields.append(plaintext[pos : pos + n])
        pos += n
    env, name = fields
    if not env_name_ok(env) or not secret_name_ok(name):
        raise bad("sealed names are not valid names")
    value = plaintext[pos:]
    if len(value) > MAX_VALUE_LEN:
        raise bad("value longer than 64 KiB")
    return env.decode("ascii"), name.decode("ascii"), value


def open_value(text: str, secret_key: bytes, env: str, name: str) -> bytes:
    """Opens one value in the order FORMAT.md gives: parse, key id, authenticate, frame, context."""
    kid, sealed = parse(text)
    sk = nacl.public.PrivateKey(secret_key)
    if kid != key_id(bytes(sk.public_key)):
        raise BoxcarError("OpenError::KeyIdMismatch")
    try:
        plaintext = nacl.public.SealedBox(sk).decrypt(sealed)
    except nacl.exceptions.CryptoError:
        raise BoxcarError("OpenError::Decrypt") from None
    sealed_env, sealed_name, value = unframe(plaintext)
    if (sealed_env, sealed_name) != (env, name):
        raise BoxcarError("OpenError::Context", f"{sealed_env}/{sealed_name}")
    return value


def toml_str(s: str) -> str:
    """A TOML basic string (tomllib cannot write)."""
    out = []
    for c in s:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04X}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def cmd_seal(req: dict) -> int:
    public_key = base64.b64decode(req["public_key"], validate=True)
    env = req["env"]
    lines = [
        "# Written by tests/python/pynacl_interop.py (PyNaCl's crypto_box_seal).",
        f"public_key = {toml_str(req['public_key'])}",
        "",
        "[settings]",
        'sealed_by = "pynacl"',
        "",
        "[secrets]",
    ]
    for item in req.get("item", []):
        if "frame_hex" in item:
            sealed = seal_frame(public_key, bytes.fromhex(item["frame_hex"]))
        else:
            sealed = seal(public_key, env, item["name"], bytes.fromhex(item["value_hex"]))
        lines.append(f"{item['name']} = {toml_str(sealed)}")
    print("\n".join(lines))
    return 0


def cmd_open(req: dict) -> int:
    secret_key = base64.b64decode(req["secret_key"], validate=True)
    env = req["env"]
    failures = 0
    out = []
    for item in req.get("item", []):
        name = item["name"]
        try:
            kid, sealed = parse(item["sealed"])
            # Open once more by hand, to report the frame itself and not just the value.
            plaintext = nacl.public.SealedBox(nacl.public.PrivateKey(secret_key)).decrypt(sealed)
            version = plaintext[0]
            sealed_env, sealed_name, value = unframe(plaintext)
            # And once through the full checked path.
            checked = open_value(item["sealed"], secret_key, env, name)
        except (BoxcarError, nacl.exceptions.CryptoError) as e:
            print(f"{name}: cannot open: {e}", file=sys.stderr)
            failures += 1
            continue
        if (sealed_env, sealed_name, value, checked) != (env, name, bytes.fromhex(item["value_hex"]), value):
            print(f"{name}: opened to unexpected content (env {sealed_env}, name {sealed_name})", file=sys.stderr)
            failures += 1
        out += [
            "[[opened]]",
            f"name = {toml_str(sealed_name)}",
            f"env = {toml_str(sealed_env)}",
            f"key_id = {toml_str(kid)}",
            f"frame_version = {version}",
            f'value_hex = "{value.hex()}"',
            "",
        ]
    print("\n".join(out))
    return 1 if failures else 0


def cmd_check_vectors(path: str) -> int:
    with open(path, "rb") as f:
        vectors = tomllib.load(f)
    keys = {
        "recipient": base64.b64decode(vectors["recipient"]["secret_key"]),
        "wrong": base64.b64decode(vectors["wrong_key"]["secret_key"]),
    }
    failures = 0
    for v in vectors["positive"]:
        expected = v["value"].encode() if "value" in v else bytes.fromhex(v["value_hex"])
        try:
            got = open_value(v["sealed"], keys["recipient"], v["env"], v["name"])
        except BoxcarError as e:
            print(f"positive {v['id']}: {e}", file=sys.stderr)
            failures += 1
            continue
        if got != expected:
            print(f"positive {v['id']}: opened to unexpected bytes", file=sys.stderr)
            failures += 1
    for v in vectors["negative"]:
        try:
            open_value(v["sealed"], keys[v["key"]], v["env"], v["name"])
            kind = "opened"
        except BoxcarError as e:
            kind = e.kind
        if kind != v["error"]:
            print(f"negative {v['id']}: expected {v['error']}, got {kind}", file=sys.stderr)
            failures += 1
    total = len(vectors["positive"]) + len(vectors["negative"])
    print(f"{total - failures} of {total} vectors agree")
    return 1 if failures else 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[1] in ("seal", "open"):
        req = tomllib.loads(sys.stdin.read())
        return cmd_seal(req) if argv[1] == "seal" else cmd_open(req)
    if len(argv) == 3 and argv[1] == "check-vectors":
        return cmd_check_vectors(argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
