//! The two names a sealed value is bound to: its environment and its secret name.

/// Longest environment name, in bytes.
pub const MAX_ENV_LEN: usize = 32;
/// Longest secret name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Checks an environment name: 1 to 32 characters of `a-z 0-9 _ -`, starting
/// with a letter. It names a file (`deploy-config/<env>.toml`), containers and
/// engine secrets, so it is kept to characters that are safe in all of them.
pub fn check_env_name(name: &str) -> Result<(), String> {
    check(name, MAX_ENV_LEN, |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'), "a-z, 0-9, `_` and `-`")
}

/// Checks a secret name: 1 to 64 characters of `a-z 0-9 _`, starting with a
/// letter, so it is a bare TOML key and reads the same everywhere.
pub fn check_secret_name(name: &str) -> Result<(), String> {
    check(name, MAX_NAME_LEN, |b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'), "a-z, 0-9 and `_`")
}

fn check(name: &str, max: usize, allowed: impl Fn(u8) -> bool, set: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".to_owned());
    }
    if name.len() > max {
        return Err(format!("is {} characters long; at most {max} are allowed", name.len()));
    }
    if !name.as_bytes()[0].is_ascii_lowercase() {
        return Err("must start with a lower-case letter".to_owned());
    }
    if !name.bytes().all(allowed) {
        return Err(format!("may only contain {set}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_env_name("production").is_ok());
        assert!(check_env_name("eu-west_2").is_ok());
        assert!(check_env_name("").is_err());
        assert!(check_env_name("Production").is_err());
        assert!(check_env_name("2prod").is_err());
        assert!(check_env_name("prod/../x").is_err());
        assert!(check_env_name(&"a".repeat(33)).is_err());
        assert!(check_secret_name("api_token").is_ok());
        assert!(check_secret_name("api-token").is_err());
        assert!(check_secret_name(&"a".repeat(64)).is_ok());
        assert!(check_secret_name(&"a".repeat(65)).is_err());
    }
}
