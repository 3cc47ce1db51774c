//! An environment file's content as a list of named entries, for people:
//! what `approve` shows one line at a time, and what `check` names when a
//! file changed since its last approval. Tables are opened down to their
//! values (`app.api_base`, `workers[0].admins`), so one changed setting is one
//! line, and a name is written so that two entries never share it
//! (`"a.b"` for a key with a dot, `a.b` for a table `a` with a key `b`).

use std::collections::{BTreeMap, BTreeSet};

use boxcar_secrets::approval::APPROVAL_TABLE;

/// Every entry of `table`'s content (all of it but `[approval]`), by name.
pub(crate) fn flatten(table: &toml::Table) -> BTreeMap<String, toml::Value> {
    let mut out = BTreeMap::new();
    for (key, value) in table.iter().filter(|(k, _)| *k != APPROVAL_TABLE) {
        walk(&name(key), value, &mut out);
    }
    out
}

fn walk(at: &str, value: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
    match value {
        toml::Value::Table(t) if !t.is_empty() => {
            for (k, v) in t {
                walk(&format!("{at}.{}", name(k)), v, out);
            }
        }
        toml::Value::Array(items) if !items.is_empty() && items.iter().all(toml::Value::is_table) => {
            for (i, item) in items.iter().enumerate() {
                walk(&format!("{at}[{i}]"), item, out);
            }
        }
        other => {
            out.insert(at.to_owned(), other.clone());
        }
    }
}

/// A key as TOML writes it: bare when it can be, quoted otherwise.
pub(crate) fn name(key: &str) -> String {
    let bare = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare { key.to_owned() } else { toml::Value::String(key.to_owned()).to_string() }
}

/// The entries that differ between `before` and `after`, each escaped for a
/// terminal and marked `(new)` or `(removed)` when only one side has it.
pub(crate) fn changes(before: &toml::Table, after: &toml::Table) -> Vec<String> {
    let (before, after) = (flatten(before), flatten(after));
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter_map(|n| {
            let shown = crate::vocab::show::escape(n);
            match (before.get(n), after.get(n)) {
                (Some(a), Some(b)) if a == b => None,
                (Some(_), Some(_)) => Some(shown.into_owned()),
                (None, _) => Some(format!("{shown} (new)")),
                (_, None) => Some(format!("{shown} (removed)")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn tables_open_to_their_values() {
        let t = table(
            "public_key = \"k\"\nlist = [1, 2]\nempty = {}\n\"a.b\" = 1\n[a]\nb = 2\n[[workers]]\nname = \"x\"\n\
             admins = [1]\n[[workers]]\nname = \"y\"\n[approval]\nserial = 1\n",
        );
        let names: Vec<String> = flatten(&t).into_keys().collect();
        assert_eq!(
            names,
            [
                "\"a.b\"",
                "a.b",
                "empty",
                "list",
                "public_key",
                "workers[0].admins",
                "workers[0].name",
                "workers[1].name"
            ]
        );
        assert_eq!(name("ключ"), "\"ключ\"");
        assert_eq!(name(""), "\"\"");
    }

    #[test]
    fn changes_name_what_differs() {
        let before = table("[app]\nurl = \"a\"\nn = 1\n[[workers]]\nadmins = [1]\n[secrets]\nt = \"s1\"\n");
        let after = table("[app]\nurl = \"b\"\nn = 1\nx = true\n[[workers]]\nadmins = [1, 666]\n[secrets]\n");
        assert_eq!(
            changes(&before, &after),
            ["app.url", "app.x (new)", "secrets (new)", "secrets.t (removed)", "workers[0].admins"]
        );
        assert!(changes(&before, &before).is_empty());
        // Names from the file are escaped.
        let odd = table("\"x\u{202e}\" = 1\n");
        assert_eq!(changes(&toml::Table::new(), &odd), ["\"x\\u{202e}\" (new)"]);
    }
}
