//! `env` and `probe.env` of a service: variable names boxcar leaves to the
//! service, and values with their placeholders put in.

use std::collections::BTreeMap;

use crate::vocab::layout::RESERVED_ENV;
use crate::vocab::show::escape;

/// `env` or `probe.env`: each name a variable name boxcar does not set
/// itself, each value with its placeholders resolved and no control character.
pub(super) fn variables(
    table: BTreeMap<String, String>,
    field: &str,
    placeholders: &[(&str, Option<String>)],
    problems: &mut Vec<String>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, value) in table {
        let name_ok = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !name_ok {
            problems.push(format!("{field}.{} is not a variable name (A-Z, 0-9, `_`)", escape(&name)));
            continue;
        }
        if RESERVED_ENV.contains(&name.as_str()) {
            problems.push(format!("{field}.{name} is set by boxcar itself; leave it out"));
            continue;
        }
        let value = match expand(&value, placeholders) {
            Ok(value) => value,
            Err(why) => {
                problems.push(format!("{field}.{name} = `{}`: {why}", escape(&value)));
                continue;
            }
        };
        if value.bytes().any(|b| b.is_ascii_control()) {
            problems.push(format!("{field}.{name} holds a control character"));
        }
        out.push((name, value));
    }
    out
}

/// A value with its placeholders put in, as Rust's format strings write
/// them: `{name}` is a placeholder, `{{` and `}}` are a brace, and any other
/// brace is an error, so a misspelt placeholder stops the contract where it
/// is read instead of reaching a deployed service as text.
fn expand(value: &str, placeholders: &[(&str, Option<String>)]) -> Result<String, String> {
    let known = || placeholders.iter().map(|(name, _)| format!("{{{name}}}")).collect::<Vec<_>>().join(", ");
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find(['{', '}']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{{").or_else(|| tail.strip_prefix("}}")) {
            out.push_str(&tail[..1]);
            rest = after;
            continue;
        }
        let name = tail.strip_prefix('{').and_then(|t| t.split_once('}'));
        match name {
            Some((name, after)) if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
                match placeholders.iter().find(|(known, _)| *known == name) {
                    Some((_, Some(with))) => out.push_str(with),
                    Some((_, None)) => return Err(format!("uses {{{name}}}, but the service has no `{name}` folder")),
                    None => {
                        return Err(format!(
                            "{{{}}} is not a placeholder; boxcar knows {} (write {{{{ and }}}} for a brace)",
                            escape(name),
                            known()
                        ));
                    }
                }
                rest = after;
            }
            _ => return Err(format!("a lone `{}`; write {{{{ or }}}} for a brace", &tail[..1])),
        }
    }
    out.push_str(rest);
    Ok(out)
}
