"""An independent implementation of boxcar's approvals (docs/FORMAT.md, "Approval") with PyNaCl.

It follows docs/FORMAT.md alone, not the Rust code, so that the committed vectors
(boxcar-secrets/vectors/approval-v1.toml, written by make_approval_vectors.py) show
that the specification is enough to read environment files, derive approval keys,
encode content, sign, endorse and verify the way boxcar does.

Usage:

    approval.py check-vectors PATH    re-verifies every vector in PATH with this module
    approval.py verify ENV PATH [--key-stdin] [--service-file PATH]
                                      checks an environment file without a key (A0, A1, A2, A4 to A9);
                                      with --key-stdin, as a service holding the base64 secret key on
                                      stdin (A3 too); with --service-file, as a service in an image
                                      whose /etc/boxcar/service.toml is PATH (A10 too)
    approval.py canonical PATH        prints C(content) of an environment file, in hex

`verify` prints `approved` and exits 0, or prints the error (ending in its name in
square brackets, `[ApprovalError::Signature]`) to stderr and exits 1.

Needs Python 3.11 (tomllib, which reads TOML 1.0 only) and PyNaCl.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import math
import os
import pathlib
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
MAX_SERVICE_FILE_LEN = 64 * 1024
MAX_ENV_LEN = 32
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
CANONICAL_NAN = bytes.fromhex("7ff8000000000000")
# White space a key may have around its base64 (FORMAT.md, "Fields"): nothing else.
KEY_WHITE_SPACE = " \t\r\n"
SERVICE_FILE = "/etc/boxcar/service.toml"


# ---------------------------------------------------------------------------
# Errors. Each is a class whose __name__ is the spec's variant name, so that
# `type(e).__name__` is what the vectors' `error` field holds.


def _variants(base: type, names: list[str]) -> None:
    for name in names:
        cls = type(name, (base,), {"__module__": __name__, "__qualname__": f"{base.__qualname__}.{name}"})
        setattr(base, name, cls)


class ApprovalError(Exception):
    """ApprovalError in the spec: the checks A1 to A10."""


_variants(
    ApprovalError,
    [
        "NoApprovalKey",
        "ApprovalKey",
        "NotThisKey",
        "NoApproval",
        "Malformed",
        "Content",
        "Signature",
        "Endorsement",
        "Runtime",
    ],
)


class ContentError(Exception):
    """ContentError in the spec: content that has no encoding C."""


_variants(ContentError, ["DateTime"])


class BadKey(ValueError):
    """KeyError in the spec (renamed: Python has a built-in KeyError)."""


BadKey.__qualname__ = "KeyError"
# Encoding (not base64 of 32 bytes) has no name in the spec; the other two do.
_variants(BadKey, ["Encoding", "NonCanonical", "SmallOrder"])


class FileError(Exception):
    """`Error` in the spec: what comes before the approval checks.

    TooLarge and Toml ("Reading a file"), PublicKey (A0) and a service's WrongKey;
    EnvName (an environment name that is not one) has no name in the spec.
    """


FileError.__qualname__ = "Error"
_variants(FileError, ["TooLarge", "Toml", "EnvName", "PublicKey", "WrongKey"])

# Convenience aliases: approval.Signature, approval.Malformed, ...
NoApprovalKey = ApprovalError.NoApprovalKey
ApprovalKey = ApprovalError.ApprovalKey
NotThisKey = ApprovalError.NotThisKey
NoApproval = ApprovalError.NoApproval
Malformed = ApprovalError.Malformed
Content = ApprovalError.Content
Signature = ApprovalError.Signature
Endorsement = ApprovalError.Endorsement
Runtime = ApprovalError.Runtime


def describe(error: Exception) -> str:
    """An error's message ending in its name in square brackets, as boxcar writes it."""
    return f"{error} [{type(error).__qualname__.replace('.', '::')}]"


# ---------------------------------------------------------------------------
# Reading a file (FORMAT.md, "Environment files", "Reading a file").


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _check_i64(value: object, where: str) -> None:
    """Refuses (Error::Toml) an integer outside i64 anywhere in a parsed value."""
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not I64_MIN <= value <= I64_MAX:
            raise FileError.Toml(f"{where or 'a value'}: integer {value} does not fit in i64")
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_i64(v, f"{where}.{k}" if where else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_i64(v, f"{where}[{i}]")


def read_document(data: bytes | str, limit: int = MAX_FILE_LEN) -> dict:
    """Reads a file as every reader does: size, UTF-8, CR LF as LF, TOML 1.0, integers in i64.

    `data` is the file's bytes, or its text (a vector's `file`). Raises Error::TooLarge
    for more than `limit` bytes, Error::Toml for everything else that is refused.
    """
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError:
            raise FileError.Toml("not UTF-8") from None
    else:
        raw = bytes(data)
    if len(raw) > limit:
        raise FileError.TooLarge(f"larger than {limit} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileError.Toml(f"not UTF-8 (byte {e.start})") from None
    # Rule 2: every CR LF is LF, wherever it is; a CR left over was not followed by LF.
    text = text.replace("\r\n", "\n")
    bare = text.find("\r")
    if bare >= 0:
        raise FileError.Toml(f"line {_line_of(text, bare)}: a CR that is not followed by LF")
    # Rules 3 and 4: tomllib is a TOML 1.0 parser, so it refuses the constructs TOML 1.1
    # added (\e and \xHH escapes; a line break, a comment or a trailing comma inside an
    # inline table) like any other error.
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise FileError.Toml(str(e)) from None
    _check_i64(document, "")
    return document


# ---------------------------------------------------------------------------
# Base64 and keys.


def b64decode(text: object, length: int) -> bytes:
    """Standard base64 (RFC 4648 section 4, with padding) of exactly `length` bytes, canonical only.

    Nothing around the text is tolerated: this is the rule for `approval.signature` and
    `previous_keys[i].endorsement`; keys strip their white space first (`key_text`).
    """
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


def key_text(text: object) -> str:
    """A key's base64 text without the space, tab, CR and LF it may have at both ends (FORMAT.md, "Fields")."""
    if not isinstance(text, str):
        raise BadKey.Encoding("not a string")
    return text.strip(KEY_WHITE_SPACE)


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
    """A `public_key`: space, tab, CR and LF around the base64 are ignored (FORMAT.md, "Keys", "Fields").

    Refused: a non-canonical u (top bit set, or u >= p) as NonCanonical, a point of
    small order (libsodium's list) as SmallOrder.
    """
    raw = b64decode(key_text(text), 32)
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
    """An approval key: base64 of 32 bytes (Encoding), a point (NonCanonical), not of small order (SmallOrder).

    Space, tab, CR and LF around the base64 are ignored, as around `public_key`.
    """
    raw = b64decode(key_text(text), 32)
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
    """The 32-byte X25519 public key of a secret key."""
    return bytes(nacl.public.PrivateKey(secret_key).public_key)


def key_id(public: bytes) -> str:
    """The key id: the first 8 bytes of SHA-256 of the 32-byte public key, as 16 lower-case hex digits."""
    return hashlib.sha256(public).digest()[:8].hex()


# ---------------------------------------------------------------------------
# Canonical content.


def encode(value: object) -> bytes:
    """C(value), for any value `read_document` gives (integers outside i64 were refused there)."""
    if isinstance(value, bool):  # before int: bool is an int in Python
        return b"b" + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"i" + struct.pack(">q", value)  # struct.error outside i64: read_document refuses those
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


def fingerprint(value: object) -> str:
    """A value's fingerprint, as `approve` shows each sealed value: the first 8 bytes of SHA-256 of C(value), in hex.

    Never stored in the file: `[approval.entries]` is neither written nor read any more.
    """
    return hashlib.sha256(encode(value)).digest()[:8].hex()


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


def file_public_key(document: dict) -> bytes:
    """A0: the file's `public_key`, a valid X25519 public key (Error::PublicKey)."""
    if "public_key" not in document:
        raise FileError.PublicKey("no public_key")
    try:
        return x25519_public_key(document["public_key"])
    except BadKey as e:
        raise FileError.PublicKey(f"public_key: {type(e).__qualname__}: {e}") from e


def file_approval_key(document: dict) -> bytes:
    """A1 and A2: the file's `approval_key`, present (NoApprovalKey) and a valid Ed25519 key (ApprovalKey)."""
    if "approval_key" not in document:
        raise NoApprovalKey("no approval_key")
    try:
        return ed25519_public_key(document["approval_key"])
    except BadKey as e:
        raise ApprovalKey(f"approval_key: {type(e).__qualname__}: {e}") from e


def file_approval(document: dict) -> tuple[int, bytes]:
    """A4 and A5: `[approval]` is present (NoApproval) and well-formed (Malformed); its serial and signature."""
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
    return serial, signature


def key_chain(env: str, document: dict, current_public: bytes, current_approval: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """A8 and A9: the `[[previous_keys]]` as (public key, approval key, endorsement), oldest first.

    Raises Malformed when the array or an entry is not well-formed, Endorsement when an
    entry's endorsement of the pair after it (the next entry, or the current pair) fails.
    """
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
    return pairs


def read_service_file(service_file: bytes | str | os.PathLike) -> tuple[str, dict]:
    """The `service` and `runtime` of an image's /etc/boxcar/service.toml (A10).

    `service_file` is the file's bytes or text, or a path to read. It is read as an
    environment file is, at most 64 KiB; anything that cannot be read or has the wrong
    shape (`service` not a non-empty string, `runtime` not a table) is ApprovalError::Runtime.
    Other keys of the service file are not read.
    """
    if isinstance(service_file, os.PathLike):
        try:
            with open(service_file, "rb") as f:
                service_file = f.read(MAX_SERVICE_FILE_LEN + 1)
        except OSError as e:
            raise Runtime(f"the service file cannot be read: {e.strerror or e}") from e
    try:
        document = read_document(service_file, MAX_SERVICE_FILE_LEN)
    except FileError as e:
        raise Runtime(f"the service file cannot be read: {describe(e)}") from e
    service, runtime = document.get("service"), document.get("runtime")
    if not isinstance(service, str) or not service:
        raise Runtime("the service file's `service` is not a non-empty string")
    if not isinstance(runtime, dict):
        raise Runtime("the service file's `runtime` is not a table")
    return service, runtime


def _encoded_or_none(value: object) -> bytes | None:
    try:
        return encode(value)
    except ContentError:
        return None


def check_runtime(document: dict, service_file: bytes | str | os.PathLike) -> None:
    """A10: `boxcar.services.<service>` of the document is a table whose C is C(runtime) (ApprovalError::Runtime).

    The error names each field that differs, in either table, compared by C.
    """
    service, runtime = read_service_file(service_file)
    boxcar = document.get("boxcar")
    services = boxcar.get("services") if isinstance(boxcar, dict) else None
    approved = services.get(service) if isinstance(services, dict) else None
    if not isinstance(approved, dict):
        raise Runtime(f"the file approves no run-time contract for service {service!r}")
    if _encoded_or_none(runtime) is None:
        raise Runtime("the service file's `runtime` has no encoding C (a date-time)")
    if encode(approved) == encode(runtime):
        return
    differ = sorted(
        (k for k in set(approved) | set(runtime) if k not in approved or k not in runtime or _encoded_or_none(approved[k]) != _encoded_or_none(runtime[k])),
        key=lambda k: k.encode("utf-8"),
    )
    raise Runtime(f"the image's run-time contract for service {service!r} is not the approved one; differs: {', '.join(differ)}")


def verify_document(
    env: str,
    document: dict,
    secret_key: bytes | None = None,
    service_file: bytes | str | os.PathLike | None = None,
) -> None:
    """Makes A0, then A1 to A9 in order (A3 only with a secret key), then A10 with a service file."""
    env_bytes(env)
    current_public = file_public_key(document)
    if secret_key is not None and public_key(secret_key) != current_public:
        raise FileError.WrongKey("the secret key is not this file's key")

    # A1, A2, A3: the approval key.
    current_approval = file_approval_key(document)
    if secret_key is not None and approval_key(secret_key) != current_approval:
        raise NotThisKey("approval_key is not the one this secret key derives")

    # A4, A5: the approval.
    serial, signature = file_approval(document)

    # A6, A7: the content and its signature. A failed signature says nothing of what
    # changed: nothing in such a file can be believed.
    try:
        encoded = canonical(document)
    except ContentError as e:
        raise Content(f"{type(e).__qualname__}: {e}") from e
    if not verify_strict(current_approval, approval_message(env, serial, encoded), signature):
        raise Signature("the approval does not match the content")

    # A8, A9: the key chain.
    key_chain(env, document, current_public, current_approval)

    # A10: the image's run-time contract.
    if service_file is not None:
        check_runtime(document, service_file)


def verify(
    env: str,
    text: bytes | str,
    secret_key: bytes | None = None,
    service_file: bytes | str | os.PathLike | None = None,
) -> dict:
    """Reads a file ("Reading a file") and makes the checks A0 to A10 on it; returns the parsed document.

    A3 is made only with a secret key (after Error::WrongKey: its public key must be
    `public_key`), A10 only with a service file (its text, or a path to read).
    """
    env_bytes(env)
    document = read_document(text)
    verify_document(env, document, secret_key, service_file)
    return document


# ---------------------------------------------------------------------------
# Command line.


def cmd_check_vectors(path: str) -> int:
    """Re-verifies every vector of an approval vectors file; prints a summary, exit 1 on any failure."""
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
        service_file = v.get("service_file")
        try:
            verify(v["env"], v["file"], None, service_file)
            document = verify(v["env"], v["file"], sk, service_file)
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
            verify(v["env"], v["file"], sk, v.get("service_file"))
            got = "passes"
        except (ApprovalError, FileError) as e:
            got = type(e).__name__
        result(got == v["error"], what, f"expected {v['error']}, got {got}")

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def read_secret_key(text: str) -> bytes:
    """A secret key as a service takes it: base64 of 32 bytes, one trailing LF or CR LF tolerated."""
    for end in ("\r\n", "\n"):
        if text.endswith(end):
            text = text[: -len(end)]
            break
    return b64decode(text, 32)


def cmd_verify(args: list[str]) -> int:
    """`verify ENV PATH [--key-stdin] [--service-file PATH]`: prints `approved`, or the error and exit 1."""
    env, path, rest = args[0], args[1], args[2:]
    key_stdin, service_path = False, None
    while rest:
        if rest[0] == "--key-stdin":
            key_stdin, rest = True, rest[1:]
        elif rest[0] == "--service-file" and len(rest) >= 2:
            service_path, rest = pathlib.Path(rest[1]), rest[2:]
        else:
            print(__doc__, file=sys.stderr)
            return 2
    sk = None
    if key_stdin:
        try:
            sk = read_secret_key(sys.stdin.read())
        except BadKey as e:
            print(f"the secret key on stdin: {e}", file=sys.stderr)
            return 2
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_LEN + 1)
    except OSError as e:
        print(f"{path}: {e.strerror or e}", file=sys.stderr)
        return 2
    try:
        verify(env, data, sk, service_path)
    except (ApprovalError, FileError) as e:
        print(f"{path}: {describe(e)}", file=sys.stderr)
        return 1
    print("approved")
    return 0


def main(argv: list[str]) -> int:
    args = argv[1:]
    if len(args) == 2 and args[0] == "check-vectors":
        return cmd_check_vectors(args[1])
    if len(args) >= 3 and args[0] == "verify":
        return cmd_verify(args[1:])
    if len(args) == 2 and args[0] == "canonical":
        with open(args[1], "rb") as f:
            data = f.read(MAX_FILE_LEN + 1)
        try:
            print(canonical(read_document(data)).hex())
        except (FileError, ContentError) as e:
            print(f"{args[1]}: {describe(e)}", file=sys.stderr)
            return 1
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
