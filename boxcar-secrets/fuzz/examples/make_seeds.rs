//! Writes the `parse_open` fuzz target's seeds to `seeds/parse_open/`, sealing their values with the library itself.
//!
//! ```text
//! cargo run --manifest-path boxcar-secrets/fuzz/Cargo.toml --example make_seeds
//! ```
//!
//! Sealing is randomized, so each run writes different bytes for the same
//! seeds; run it again only when the format changes. Every seed is one the
//! fuzzer would take long to find by itself: a file whose values really open
//! (libFuzzer cannot forge a Poly1305 tag), and one of each way a file or a
//! value is refused, so the corpus starts with every error path covered.

use std::path::Path;

use boxcar_secrets::{EnvFile, SecretKey, seal};

/// RFC 7748 section 6.1: Alice's secret key is the fuzz target's fixed key;
/// Bob's stands for "another environment's key". Both are published test
/// vectors.
const ALICE_SK: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
const BOB_SK: &str = "XasIfmJKikt54X+Lg4AO5m87sSkmGLb9HC+LJ/+I4Os=";

fn main() {
    let alice = SecretKey::from_base64(ALICE_SK).expect("the RFC 7748 key parses");
    let bob = SecretKey::from_base64(BOB_SK).expect("the RFC 7748 key parses");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds").join("parse_open");
    std::fs::create_dir_all(&dir).expect("creating the seeds directory");
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        println!("wrote {}", path.display());
    };
    let sealed = |key: &SecretKey, env: &str, name: &str, value: &str| {
        seal(key.public_key(), env, name, value.as_bytes()).expect("sealing a seed").to_string()
    };
    let alice_pk = alice.public_key().to_base64();
    let alice_id = alice.key_id();
    let token = sealed(&alice, "fuzz", "token", "123456789:seed-token");

    // Environment files (the target's default mode); each starts with a
    // comment saying what it is, which the fuzzer is free to mutate.
    let valid = format!(
        "# Opens: every value is sealed to Alice's key for environment `fuzz`.\n\
         public_key = \"{alice_pk}\"\n\n\
         [settings]\nlog_level = \"info\"\n\n\
         [secrets]\n\
         token = \"{token}\"\n\
         db_password = \"{}\"\n\
         empty = \"{}\"\n",
        sealed(&alice, "fuzz", "db_password", "correct horse battery staple"),
        sealed(&alice, "fuzz", "empty", ""),
    );
    // The seed is only worth its place if it opens, as the target will open it.
    let file = EnvFile::parse(Path::new("fuzz.toml"), &valid).expect("valid.toml parses");
    assert_eq!(file.open_all(&alice).expect("valid.toml opens with Alice's key").len(), 3);
    write("valid.toml", valid.as_bytes());
    write(
        "context.toml",
        format!(
            "# Refused: values sealed for another environment, and for another name.\n\
             public_key = \"{alice_pk}\"\n\n\
             [secrets]\n\
             token = \"{}\"\n\
             api_key = \"{}\"\n",
            sealed(&alice, "staging", "token", "x"),
            sealed(&alice, "fuzz", "db_password", "y"),
        )
        .as_bytes(),
    );
    let mut tampered = token.clone().into_bytes();
    let middle = tampered.len() - 20;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("base64 is ASCII");
    write(
        "broken_entries.toml",
        format!(
            "# Refused, one entry for each way a value can be wrong.\n\
             public_key = \"{alice_pk}\"\n\n\
             [secrets]\n\
             plain = \"hunter2\"\n\
             version = \"sealed:v2:{alice_id}:AAAA\"\n\
             key_id = \"sealed:v1:XYZ:AAAA\"\n\
             shape = \"sealed:v1:{alice_id}\"\n\
             base64 = \"sealed:v1:{alice_id}:***\"\n\
             short = \"sealed:v1:{alice_id}:AAAA\"\n\
             truncated = \"{}\"\n\
             tampered = \"{tampered}\"\n\
             number = 3\n\
             table = {{ a = 1 }}\n\
             Bad_Name = \"{token}\"\n",
            &token[..token.len() - 4],
        )
        .as_bytes(),
    );
    write(
        "wrong_key.toml",
        format!(
            "# Refused: the file is Bob's, and one value was sealed to Alice's key.\n\
             public_key = \"{}\"\n\n\
             [secrets]\n\
             token = \"{}\"\n\
             alice = \"{}\"\n",
            bob.public_key().to_base64(),
            sealed(&bob, "fuzz", "token", "z"),
            sealed(&alice, "fuzz", "alice", "z"),
        )
        .as_bytes(),
    );
    write(
        "bad_file.toml",
        format!("# Refused: `secrets` is not a table.\npublic_key = \"{alice_pk}\"\nsecrets = 3\n").as_bytes(),
    );
    write("no_public_key.toml", b"# Refused: no public key.\n[secrets]\ntoken = \"sealed:v1:\"\n");
    write("short_public_key.toml", b"# Refused: a public key of 3 bytes.\npublic_key = \"AAAA\"\n");
    write("not_toml.toml", b"# Refused: not TOML.\npublic_key = \"unclosed\n[secrets\n");

    // Mode 0x00: the bytes after the tag are a sealed value's base64 body.
    let body = |text: &str| text.rsplit_once(':').map(|(_, body)| body.to_owned()).expect("a sealed value");
    write("body_valid", &[b"\x00", body(&token).as_bytes()].concat());
    write("body_tampered", &[b"\x00", body(&tampered).as_bytes()].concat());
    write("body_not_base64", b"\x00AAAA=*=");

    // Mode 0x01: the bytes after the tag are a frame, sealed by the target.
    write("frame_valid", b"\x01\x01\x04fuzz\x05tokenvalue");
    write("frame_other_name", b"\x01\x01\x04fuzz\x05otherx");
    write("frame_bad_lengths", b"\x01\x01\xfffuzz\x00token");
    write("frame_bad_version", b"\x01\x02\x04fuzz\x05token");
    write("frame_bad_name", b"\x01\x01\x04Fuzz\x05to ken");
}
