"""An independent implementation of boxcar's approvals (docs/FORMAT.md, "Approval") with PyNaCl.

It follows docs/FORMAT.md alone, not the Rust code, so that the committed vectors
(boxcar-secrets/vectors/approval-v1.toml, written by make_approval_vectors.py) show
that the specification is enough to derive approval keys, encode content, sign,
endorse and verify the way boxcar does.

Usage:

    approval.py check-vectors PATH    re-verifies every vector in PATH with this module
    approval.py verify ENV PATH       checks an environment file without a key (A1, A2, A4 to A9);
                                      with --key-stdin, as a service holding the base64 secret key on stdin
    approval.py canonical PATH        prints C(content) of an environment file, in hex
    approval.py fingerprints PATH     prints the [approval.entries] the file's content has

Needs Python 3.11 (tomllib) and PyNaCl.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import math
import struct
import sys
import tomllib

import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.public
import nacl.signing

APPROVAL_KEY_LABEL = b"boxcar approval key v1"
APPROVAL_DOMAIN = b"boxcar-approval-v1\x00"
ENDORSE_DOMAIN = b"boxcar-endorse-v1\x00"
MAX_FILE_LEN = 4 * 1024 * 1024
MAX_ENV_LEN = 32
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
CANONICAL_NAN = bytes.fromhex("7ff8000000000000")


# ---------------------------------------------------------------------------
# Errors. Each is a class whose __name__ is the spec's variant name, so that
# `type(e).__name__` is what the vectors' `error` field holds.


def _variants(base: type, names: list[str]) -> None:
    for name in names:
        cls = type(name, (base,), {"__module__": __name__, "__qualname__": f"{base.__qualname__}.{name}"})
        setattr(base, name, cls)


class ApprovalError(Exception):
    """ApprovalError in the spec: the checks A1 to A9."""


_variants(
    ApprovalError,
    ["NoApprovalKey", "ApprovalKey", "NotThisKey", "NoApproval", "Malformed", "Content", "Signature", "Endorsement"],
)


class ContentError(Exception):
    """ContentError in the spec: content that has no encoding C."""


_variants(ContentError, ["DateTime", "Integer"])


class BadKey(ValueError):
    """KeyError in the spec (renamed: Python has a built-in KeyError)."""


BadKey.__qualname__ = "KeyError"
# Encoding (not base64 of 32 bytes) has no name in the spec; the other two do.
_variants(BadKey, ["Encoding", "NonCanonical", "SmallOrder"])


class FileError(Exception):
    """What comes before the approval checks: the file itself, and a service's key (Error::WrongKey)."""


_variants(FileError, ["NotEnvFile", "EnvName", "PublicKey", "WrongKey"])

# Convenience aliases: approval.Signature, approval.Malformed, ...
NoApprovalKey = ApprovalError.NoApprovalKey
ApprovalKey = ApprovalError.ApprovalKey
NotThisKey = ApprovalError.NotThisKey
NoApproval = ApprovalError.NoApproval
Malformed = ApprovalError.Malformed
Content = ApprovalError.Content
Signature = ApprovalError.Signature
Endorsement = ApprovalError.Endorsement


# ---------------------------------------------------------------------------
# Base64 and keys.


def b64decode(text: object, length: int) -> bytes:
    """Standard base64 (RFC 4648 section 4, with padding) of exactly `length` bytes, canonical only."""
    if not isinstance(text, str):
        raise BadKey.Encoding("not a string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise BadKey.Encoding("not base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise BadKey.Encoding("not canonical base64")
    if len(raw) != length:
        raise BadKey.Encoding(f"{len(raw)} bytes, not {length}")
    return raw


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


P = 2**255 - 19

# X25519 (Montgomery u) public keys of small order, as libsodium lists them
# (crypto_scalarmult_curve25519's blacklist): 0, 1, the two points of order 8, p - 1,
# and the non-canonical p and p + 1. libsodium ignores the top bit when comparing.
X25519_SMALL_ORDER = [
    (0).to_bytes(32, "little"),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    (P - 1).to_bytes(32, "little"),
    P.to_bytes(32, "little"),
    (P + 1).to_bytes(32, "little"),
]


def x25519_public_key(text: object) -> bytes:
    """The file's `public_key`: white space around the base64 is ignored (FORMAT.md, "Keys").

    Refused: a non-canonical u (top bit set, or u >= p) as NonCanonical, a point of
    small order (libsodium's list) as SmallOrder.
    """
    if not isinstance(text, str):
        raise BadKey.Encoding("not a string")
    raw = b64decode(text.strip(" \t\r\n"), 32)
    masked = raw[:31] + bytes([raw[31] & 0x7F])
    if masked in X25519_SMALL_ORDER:
        raise BadKey.SmallOrder("an X25519 point of small order")
    if raw[31] & 0x80 or int.from_bytes(raw, "little") >= P:
        raise BadKey.NonCanonical("not the canonical encoding of an X25519 u-coordinate")
    return raw


# Ed25519 arithmetic (RFC 8032), enough to decode a public key and test its order.
ED_D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
ED_L = 2**252 + 27742317777372353535851937790883648493


def ed_decode(raw: bytes) -> tuple[int, int] | None:
    """RFC 8032 section 5.1.3: the affine point, or None (y >= p, no square root, or x = 0 with sign 1)."""
    n = int.from_bytes(raw, "little")
    y, sign = n & ((1 << 255) - 1), n >> 255
    if y >= P:
        return None
    u, v = (y * y - 1) % P, (ED_D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    if v * x * x % P == u:
        pass
    elif v * x * x % P == (-u) % P:
        x = x * SQRT_M1 % P
    else:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return x, y


def ed_encode(point: tuple[int, int]) -> bytes:
    x, y = point
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def ed_add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = ED_D * x1 * x2 * y1 * y2 % P
    return (x1 * y2 + x2 * y1) * pow(1 + t, P - 2, P) % P, (y1 * y2 + x1 * x2) * pow(1 - t, P - 2, P) % P


def ed_mul(k: int, point: tuple[int, int]) -> tuple[int, int]:
    out = (0, 1)
    while k:
        if k & 1:
            out = ed_add(out, point)
        point = ed_add(point, point)
        k >>= 1
    return out


def ed_small_order(point: tuple[int, int]) -> bool:
    return ed_mul(8, point) == (0, 1)


def ed25519_public_key(text: object) -> bytes:
    """An approval key: base64 of 32 bytes (Encoding), a point (NonCanonical), not of small order (SmallOrder)."""
    raw = b64decode(text, 32)
    point = ed_decode(raw)
    if point is None:
        raise BadKey.NonCanonical("not the canonical encoding of an Ed25519 point")
    if ed_small_order(point):
        raise BadKey.SmallOrder("an Ed25519 point of small order")
    return raw


# ---------------------------------------------------------------------------
# The approval key.


def approval_seed(secret_key: bytes) -> bytes:
    """BLAKE2b, 32-byte digest, keyed with the X25519 secret key, of the 22-byte label."""
    if len(secret_key) != 32:
        raise ValueError("a secret key is 32 bytes")
    return nacl.hash.blake2b(APPROVAL_KEY_LABEL, digest_size=32, key=secret_key, encoder=nacl.encoding.RawEncoder)


def approval_key(secret_key: bytes) -> bytes:
    """The 32-byte Ed25519 public key of the approval seed."""
    return bytes(nacl.signing.SigningKey(approval_seed(secret_key)).verify_key)


def public_key(secret_key: bytes) -> bytes:
    return bytes(nacl.public.PrivateKey(secret_key).public_key)


# ---------------------------------------------------------------------------
# Canonical content.


def encode(value: object) -> bytes:
    """C(value), for any value a TOML 1.0 parser (tomllib) gives."""
    if isinstance(value, bool):  # before int: bool is an int in Python
        return b"b" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        if not I64_MIN <= value <= I64_MAX:
            raise ContentError.Integer(f"integer {value} does not fit in i64")
        return b"i" + struct.pack(">q", value)
    if isinstance(value, float):
        return b"f" + (CANONICAL_NAN if math.isnan(value) else struct.pack(">d", value))
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return b"s" + struct.pack(">I", len(raw)) + raw
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        raise ContentError.DateTime(f"date-time {value.isoformat()}: write it as a string")
    if isinstance(value, list):
        return b"a" + struct.pack(">I", len(value)) + b"".join(encode(v) for v in value)
    if isinstance(value, dict):
        out = [b"t", struct.pack(">I", len(value))]
        for key in sorted(value, key=lambda k: k.encode("utf-8")):
            raw = key.encode("utf-8")
            out += [struct.pack(">I", len(raw)), raw, encode(value[key])]
        return b"".join(out)
    raise TypeError(f"not a TOML value: {type(value).__name__}")


def content(document: dict) -> dict:
    """The document less its top-level key `approval`."""
    return {k: v for k, v in document.items() if k != "approval"}


def canonical(table: dict) -> bytes:
    """C(content): the encoding of a parsed document's content (its top-level `approval` left out).

    Raises ContentError.DateTime for a date-time anywhere in the content.
    """
    return encode(content(table))


def fingerprints(table: dict) -> dict[str, str]:
    """[approval.entries]: one per key of a top-level table (`table.key`), one per other top-level value."""
    out = {}
    for key, value in content(table).items():
        if isinstance(value, dict):
            for sub, v in value.items():
                out[f"{key}.{sub}"] = hashlib.sha256(encode(v)).digest()[:8].hex()
        else:
            out[key] = hashlib.sha256(encode(value)).digest()[:8].hex()
    return out


# ---------------------------------------------------------------------------
# Signatures and endorsements.


def env_bytes(env: str) -> bytes:
    e = env.encode("utf-8")
    lower = b"abcdefghijklmnopqrstuvwxyz"
    if not (1 <= len(e) <= MAX_ENV_LEN and e[0] in lower and all(c in lower + b"0123456789_-" for c in e)):
        raise FileError.EnvName(f"{env!r} is not an environment name")
    return e


def approval_message(env: str, serial: int, encoded_content: bytes) -> bytes:
    e = env_bytes(env)
    if not 1 <= serial < 2**64:
        raise ValueError("serial out of range")
    return APPROVAL_DOMAIN + bytes([len(e)]) + e + struct.pack(">Q", serial) + encoded_content


def endorsement_message(env: str, old_public: bytes, old_approval: bytes, new_public: bytes, new_approval: bytes) -> bytes:
    e = env_bytes(env)
    for k in (old_public, old_approval, new_public, new_approval):
        assert len(k) == 32
    return ENDORSE_DOMAIN + bytes([len(e)]) + e + old_public + old_approval + new_public + new_approval


def sign(env: str, table: dict, serial: int, secret_key: bytes) -> bytes:
    """The 64-byte approval signature of a parsed document's content, by the holder of `secret_key`."""
    message = approval_message(env, serial, canonical(table))
    return nacl.signing.SigningKey(approval_seed(secret_key)).sign(message).signature


def endorse(env: str, old_secret_key: bytes, new_public_key: bytes, new_approval_key: bytes) -> bytes:
    """The old key's 64-byte endorsement of the new pair."""
    message = endorsement_message(
        env, public_key(old_secret_key), approval_key(old_secret_key), new_public_key, new_approval_key
    )
    return nacl.signing.SigningKey(approval_seed(old_secret_key)).sign(message).signature


def verify_strict(key: bytes, message: bytes, signature: bytes) -> bool:
    """libsodium's crypto_sign_verify_detached: canonical S, no small-order R or key."""
    try:
        nacl.signing.VerifyKey(key).verify(message, signature)
        return True
    except nacl.exceptions.BadSignatureError:
        return False


# ---------------------------------------------------------------------------
# Verifying.


def parse(text: str) -> dict:
    if len(text.encode("utf-8")) > MAX_FILE_LEN:
        raise FileError.NotEnvFile("larger than 4 MiB")
    return tomllib.loads(text)


def changed_entries(document: dict) -> list[str]:
    """The names whose fingerprints differ from the (unsigned) ones in [approval.entries]."""
    approval = document.get("approval")
    stored = approval.get("entries") if isinstance(approval, dict) else None
    if not isinstance(stored, dict):
        stored = {}
    try:
        now = fingerprints(document)
    except ContentError:
        return []
    return sorted(name for name in set(now) | set(stored) if now.get(name) != stored.get(name))


def verify(env: str, text: str, secret_key: bytes | None = None) -> dict:
    """Makes the checks A1 to A9 in order (A3 only with a secret key); returns the parsed document.

    Before them: the file parses, `public_key` is a valid X25519 public key, and with a
    secret key, that key's public key is `public_key` (Error::WrongKey).
    """
    env_bytes(env)
    document = parse(text)
    if "public_key" not in document:
        raise FileError.PublicKey("no public_key")
    try:
        current_public = x25519_public_key(document["public_key"])
    except BadKey as e:
        raise FileError.PublicKey(f"public_key: {type(e).__qualname__}") from e
    if secret_key is not None and public_key(secret_key) != current_public:
        raise FileError.WrongKey("the secret key is not this file's key")

    # A1, A2, A3: the approval key.
    if "approval_key" not in document:
        raise NoApprovalKey("no approval_key")
    try:
        current_approval = ed25519_public_key(document["approval_key"])
    except BadKey as e:
        raise ApprovalKey(f"approval_key: {type(e).__qualname__}: {e}") from e
    if secret_key is not None and approval_key(secret_key) != current_approval:
        raise NotThisKey("approval_key is not the one this secret key derives")

    # A4, A5: the approval.
    if "approval" not in document:
        raise NoApproval("no [approval]")
    approval = document["approval"]
    if not isinstance(approval, dict):
        raise Malformed("approval is not a table")
    serial = approval.get("serial")
    if isinstance(serial, bool) or not isinstance(serial, int) or serial < 1:
        raise Malformed("approval.serial is not a whole number from 1")
    try:
        signature = b64decode(approval.get("signature"), 64)
    except BadKey as e:
        raise Malformed(f"approval.signature: {e}") from e

    # A6, A7: the content and its signature.
    try:
        encoded = canonical(document)
    except ContentError as e:
        raise Content(f"{type(e).__qualname__}: {e}") from e
    if not verify_strict(current_approval, approval_message(env, serial, encoded), signature):
        changed = changed_entries(document)
        err = Signature("the approval does not match the content; changed: " + (", ".join(changed) or "unknown"))
        err.changed = changed
        raise err

    # A8: the key chain's shape.
    chain = document.get("previous_keys", [])
    if not isinstance(chain, list):
        raise Malformed("previous_keys is not an array of tables")
    pairs = []
    for i, entry in enumerate(chain):
        if not isinstance(entry, dict):
            raise Malformed(f"previous_keys[{i}] is not a table")
        try:
            pk = x25519_public_key(entry.get("public_key"))
            ak = ed25519_public_key(entry.get("approval_key"))
            endorsement = b64decode(entry.get("endorsement"), 64)
        except BadKey as e:
            raise Malformed(f"previous_keys[{i}]: {type(e).__qualname__}: {e}") from e
        pairs.append((pk, ak, endorsement))

    # A9: entry i endorses entry i + 1, the last entry the current pair.
    for i, (pk, ak, endorsement) in enumerate(pairs):
        new_pk, new_ak = (pairs[i + 1][0], pairs[i + 1][1]) if i + 1 < len(pairs) else (current_public, current_approval)
        if not verify_strict(ak, endorsement_message(env, pk, ak, new_pk, new_ak), endorsement):
            raise Endorsement(f"previous_keys[{i}]'s endorsement of the pair after it does not verify")
    return document


# ---------------------------------------------------------------------------
# Command line.


def cmd_check_vectors(path: str) -> int:
    with open(path, "rb") as f:
        vectors = tomllib.load(f)
    passed = failed = 0

    def result(ok: bool, what: str, why: str = "") -> None:
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
            print(f"FAILED {what}: {why}", file=sys.stderr)

    d = vectors["derivation"]
    keys = {"alice": base64.b64decode(d["secret_key"]), "bob": base64.b64decode(d["bob_secret_key"])}
    result(
        b64(approval_key(keys["alice"])) == d["approval_key"] and b64(approval_key(keys["bob"])) == d["bob_approval_key"],
        "derivation",
        "approval keys differ",
    )
    names = [v["name"] for v in vectors["valid"] + vectors["invalid"]]
    if len(names) != len(set(names)):
        result(False, "names", "vector names are not unique")

    for v in vectors["valid"]:
        what = f"valid {v['name']}"
        sk = keys[v["secret_key"]]
        try:
            verify(v["env"], v["file"])
            document = verify(v["env"], v["file"], sk)
        except Exception as e:  # noqa: BLE001
            result(False, what, f"{type(e).__qualname__}: {e}")
            continue
        problems = []
        if canonical(document).hex() != v["canonical_hex"]:
            problems.append("canonical_hex differs")
        if document["approval"]["serial"] != v["serial"]:
            problems.append("serial differs")
        if b64(sign(v["env"], document, v["serial"], sk)) != document["approval"]["signature"]:
            problems.append("signing again gives another signature")
        result(not problems, what, "; ".join(problems))

    for v in vectors["invalid"]:
        what = f"invalid {v['name']}"
        sk = keys[v["verify_with"]] if v["verify_with"] else None
        try:
            verify(v["env"], v["file"], sk)
            got = "passes"
        except (ApprovalError, FileError) as e:
            got = type(e).__name__
        result(got == v["error"], what, f"expected {v['error']}, got {got}")

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    args = argv[1:]
    if len(args) == 2 and args[0] == "check-vectors":
        return cmd_check_vectors(args[1])
    if len(args) in (3, 4) and args[0] == "verify" and args[3:] in ([], ["--key-stdin"]):
        sk = base64.b64decode(sys.stdin.read().strip(), validate=True) if args[3:] else None
        with open(args[2], encoding="utf-8") as f:
            text = f.read()
        try:
            verify(args[1], text, sk)
        except (ApprovalError, FileError) as e:
            print(f"{type(e).__qualname__}: {e}", file=sys.stderr)
            return 1
        print("approved")
        return 0
    if len(args) == 2 and args[0] in ("canonical", "fingerprints"):
        with open(args[1], "rb") as f:
            document = tomllib.load(f)
        if args[0] == "canonical":
            print(canonical(document).hex())
        else:
            for name, fp in fingerprints(document).items():
                print(f"{json.dumps(name, ensure_ascii=False)} = {json.dumps(fp)}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
