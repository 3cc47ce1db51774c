//! What a failed build's output says the builder lacks, and what the
//! contract can add for it: one line each, after the compiler's output.
//!
//! The patterns are what the build scripts of the crates that need a tool or
//! a C library print when it is missing (prost-build, openssl-sys, cmake,
//! pkg-config, bindgen, cc), as the builder shows them; the tests hold the
//! lines as they were seen.

/// A missing tool or library: what a build script's output says, and what
/// to do about it.
struct Missing {
    /// Any of these in one line of the output.
    says: &'static [&'static str],
    /// The line boxcar adds.
    hint: &'static str,
}

const MISSING: &[Missing] = &[
    Missing {
        says: &["Could not find `protoc`", "is protoc (protobuf-compiler) installed", "Failed to invoke protoc"],
        hint: "the build runs protoc: add \"protobuf-compiler\" to build.packages in boxcar.toml",
    },
    Missing {
        says: &[
            "Could not find directory of OpenSSL installation",
            "Could not find openssl via pkg-config",
            "could not find system library 'openssl'",
        ],
        hint: "openssl-sys needs OpenSSL built for musl, which Debian does not package: enable the `vendored` \
               feature of the `openssl` crate and add \"perl\" and \"make\" to build.packages in boxcar.toml, \
               or use rustls",
    },
    Missing {
        says: &["is `cmake` not installed?", "failed to execute command: cmake"],
        hint: "the build runs cmake: add \"cmake\" to build.packages in boxcar.toml",
    },
    Missing {
        says: &["is `make` not installed?", "failed to run `make`", "Command \"make\"", "make: not found"],
        hint: "the build runs make: add \"make\" to build.packages in boxcar.toml",
    },
    Missing {
        says: &["Can't locate ", "perl: not found", "Command \"perl\"", "is `perl` not installed?"],
        hint: "the build runs perl with its standard modules: add \"perl\" to build.packages in boxcar.toml",
    },
    Missing {
        says: &["The pkg-config command could not be found", "pkg-config: not found"],
        hint: "the build asks pkg-config: add \"pkg-config\" to build.packages in boxcar.toml, and a musl build of \
               the library it looks for (Debian's -dev packages are for glibc)",
    },
    Missing {
        says: &["Unable to find libclang"],
        hint: "the build runs bindgen: add \"libclang-dev\" to build.packages in boxcar.toml",
    },
    Missing {
        says: &["failed to find tool \"x86_64-linux-musl-g++\"", "x86_64-linux-musl-g++: not found"],
        hint: "the build compiles C++, and Debian's musl-tools has no C++ compiler for musl: this builder cannot \
               build it; look for a feature of the crate that avoids C++",
    },
];

/// What the builder lacked, by the output of a failed build, each hint once,
/// in the order the output first showed them.
#[derive(Debug, Default)]
pub(super) struct Hints(Vec<&'static str>);

impl Hints {
    /// Reads one line of the build's output.
    pub(super) fn read(&mut self, line: &str) {
        for missing in MISSING {
            if missing.says.iter().any(|s| line.contains(s)) && !self.0.contains(&missing.hint) {
                self.0.push(missing.hint);
            }
        }
    }

    /// The hints, a line each, for after the compiler's output (empty when none).
    pub(super) fn lines(&self) -> String {
        self.0.iter().map(|h| format!("\nboxcar: {h}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints_of(output: &str) -> String {
        let mut hints = Hints::default();
        output.lines().for_each(|l| hints.read(l));
        hints.lines()
    }

    #[test]
    fn a_missing_tool_is_named_with_what_to_add() {
        // prost-build 0.13 when protoc is missing.
        let protoc = "  Error: Custom { kind: NotFound, error: \"Could not find `protoc`. If `protoc` is installed, \
                      try setting the `PROTOC` environment variable to the path of the `protoc` binary. To install \
                      it on Debian, run `apt-get install protobuf-compiler`.\" }";
        assert_eq!(
            hints_of(protoc),
            "\nboxcar: the build runs protoc: add \"protobuf-compiler\" to build.packages in boxcar.toml"
        );
        // openssl-sys without the vendored feature, for musl.
        let openssl = "  Could not find directory of OpenSSL installation, and this `-sys` crate cannot\n  \
                       proceed without this knowledge. If OpenSSL is installed and this crate had\n";
        assert!(hints_of(openssl).contains("enable the `vendored` feature of the `openssl` crate"));
        // openssl-src without a full perl.
        let perl = "  Can't locate IPC/Cmd.pm in @INC (you may need to install the IPC::Cmd module)";
        assert!(hints_of(perl).ends_with("add \"perl\" to build.packages in boxcar.toml"));
        let cmake = "  failed to execute command: No such file or directory (os error 2)\n  is `cmake` not installed?";
        assert!(hints_of(cmake).contains("add \"cmake\""));
        assert!(hints_of("  is `make` not installed?").contains("add \"make\""));
        assert!(hints_of("  The pkg-config command could not be found.").contains("add \"pkg-config\""));
        assert!(hints_of("  thread 'main' panicked: Unable to find libclang: ...").contains("\"libclang-dev\""));
        assert!(hints_of("failed to find tool \"x86_64-linux-musl-g++\": No such file").contains("cannot build it"));
    }

    #[test]
    fn each_hint_once_in_the_order_seen_and_none_for_other_failures() {
        let output = "is `make` not installed?\nCould not find `protoc`\nis `make` not installed?\n";
        assert_eq!(
            hints_of(output),
            "\nboxcar: the build runs make: add \"make\" to build.packages in boxcar.toml\
             \nboxcar: the build runs protoc: add \"protobuf-compiler\" to build.packages in boxcar.toml"
        );
        assert_eq!(hints_of("error[E0425]: cannot find value `x` in this scope\nerror: could not compile"), "");
    }
}
