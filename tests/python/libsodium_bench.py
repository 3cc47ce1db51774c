# The libsodium side of boxcar-secrets's `open` benchmark: times crypto_box_seal_open through PyNaCl on the bench's own values.
"""Time libsodium's crypto_box_seal_open, through PyNaCl, on boxcar's values.

boxcar-secrets/benches/open.rs runs this after its criterion cases, on the same
machine and in the same run, so the boxcar/libsodium ratio it prints is not a
comparison with a figure measured elsewhere on other hardware.

Input, on stdin, one JSON document (the bench writes it):

    {
      "secret_key": "<standard base64 of the 32-byte X25519 secret key>",
      "env": "bench",
      "one": {"name": "secret_000", "sealed": "<base64 body>"},
      "hundred": [{"name": "...", "sealed": "<base64 body>"}, ...],
      "batches": 15,            (optional)
      "min_batch_seconds": 0.2  (optional)
    }

A "base64 body" is the last field of `sealed:v1:<key id>:<body>`: standard
base64 of the raw crypto_box_seal output.

Output, on stdout, one JSON document:

    {"one_ns": <median ns per open>, "hundred_ns": <median ns per open of all 100>, ...}

Every open does the work boxcar's does besides the cryptography, so the
comparison is of like with like: decode the base64 body, open the box, parse
the frame `0x01 || len(env) || env || len(name) || name || value`, and compare
the sealed environment and name with the expected ones. What it does not do is
parse the TOML around the values: boxcar's `hundred` case pays for that and
this one does not, which can only flatter libsodium.

Exit status: 0 on success, 3 when PyNaCl cannot be imported (the bench tells
the user how to install it), 1 for anything else.
"""

import base64
import gc
import json
import statistics
import sys
import time

try:
    import nacl
    from nacl.public import PrivateKey, SealedBox
except ImportError as err:
    print(f"PyNaCl is not installed for {sys.executable}: {err}", file=sys.stderr)
    sys.exit(3)

# The same bounds as boxcar-secrets/src/names.rs and sealed.rs, so a frame that
# boxcar refuses is refused here too.
FRAME_VERSION = 1
MAX_ENV_LEN = 32
MAX_NAME_LEN = 64
MAX_VALUE_LEN = 64 * 1024


class FrameError(Exception):
    pass


def take_name(frame: bytes, at: int, max_len: int) -> tuple[str, int]:
    """Reads one length-prefixed name at `at`; returns it and the offset after it."""
    if at >= len(frame):
        raise FrameError("frame ends before a name length")
    length = frame[at]
    end = at + 1 + length
    if length == 0 or length > max_len or end > len(frame):
        raise FrameError("name length out of range")
    return frame[at + 1 : end].decode("utf-8"), end


def open_one(box: SealedBox, body: str, env: str, name: str) -> bytes:
    """Opens one base64 body and checks its frame, like `SealedValue::parse` + `open`."""
    frame = box.decrypt(base64.b64decode(body, validate=True))
    if not frame or frame[0] != FRAME_VERSION:
        raise FrameError("inner version byte is not 1")
    sealed_env, at = take_name(frame, 1, MAX_ENV_LEN)
    sealed_name, at = take_name(frame, at, MAX_NAME_LEN)
    value = frame[at:]
    if len(value) > MAX_VALUE_LEN:
        raise FrameError("value longer than 64 KiB")
    if sealed_env != env or sealed_name != name:
        raise FrameError(f"sealed for {sealed_env}/{sealed_name}, expected {env}/{name}")
    return value


def open_all(box: SealedBox, entries: list[tuple[str, str]], env: str) -> dict[str, bytes]:
    """Opens every entry into a dict, like `EnvFile::open_all` (without the TOML)."""
    return {name: open_one(box, body, env, name) for name, body in entries}


def median_ns(run, batches: int, min_batch_seconds: float) -> float:
    """Median over `batches` batches of the mean time of one `run()`, in ns.

    The number of calls per batch is calibrated first so each batch lasts at
    least `min_batch_seconds`: long enough that timer resolution and the cost of
    the loop itself do not matter. The garbage collector is off while timing, as
    `timeit` does, so a collection triggered by the bench's own garbage does not
    land in one batch.
    """
    run()  # Warm up: first-call costs (imports, caches) are not what is measured.
    reps = 1
    while True:
        start = time.perf_counter()
        for _ in range(reps):
            run()
        elapsed = time.perf_counter() - start
        if elapsed >= min_batch_seconds / 4:
            reps = max(1, round(reps * min_batch_seconds / elapsed))
            break
        reps *= 2
    samples = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(batches):
            start = time.perf_counter_ns()
            for _ in range(reps):
                run()
            samples.append((time.perf_counter_ns() - start) / reps)
    finally:
        if gc_was_enabled:
            gc.enable()
    return statistics.median(samples)


def main() -> int:
    doc = json.load(sys.stdin)
    # The key is a throwaway one the bench generated; it still goes no further
    # than PrivateKey, and is never printed.
    box = SealedBox(PrivateKey(base64.b64decode(doc["secret_key"], validate=True)))
    env = doc["env"]
    one = (doc["one"]["name"], doc["one"]["sealed"])
    hundred = [(entry["name"], entry["sealed"]) for entry in doc["hundred"]]
    batches = int(doc.get("batches", 15))
    min_batch_seconds = float(doc.get("min_batch_seconds", 0.2))

    # Check every value opens before timing anything: a failure inside the
    # timed loop would otherwise be a confusing traceback in the bench output.
    open_one(box, one[1], env, one[0])
    if len(open_all(box, hundred, env)) != len(hundred):
        raise FrameError("duplicate names in the hundred case")

    one_ns = median_ns(lambda: open_one(box, one[1], env, one[0]), batches, min_batch_seconds)
    hundred_ns = median_ns(lambda: open_all(box, hundred, env), batches, min_batch_seconds)
    json.dump(
        {
            "one_ns": one_ns,
            "hundred_ns": hundred_ns,
            "hundred_count": len(hundred),
            "batches": batches,
            "pynacl": nacl.__version__,
            "python": sys.version.split()[0],
        },
        sys.stdout,
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
