# The builder: Debian with gcc, musl-tools and the Rust toolchain that
# rust-toolchain.toml pins (its channel only: boxcar hands in a file that
# holds nothing else, so one builder serves every project on that toolchain),
# with the musl target. `cargo xtask image` builds it
# (classic builder) and tags it boxcar/builder:<hash of this file, the
# toolchain file, the base image, the CA bundle and the base packages>, so it is rebuilt only when
# one of those changes. It never ships: the runner image is assembled apart.
ARG BASE=boxcar/debian:bookworm
FROM ${BASE}

# The host's CA bundle (empty when there is none), for hosts behind a
# TLS-inspecting proxy. Kept apart from Debian's bundle, which is what the
# runner image gets.
COPY host-ca.crt /etc/boxcar/host-ca.crt

# What every builder needs (gcc, musl-tools, mold, curl, ca-certificates;
# boxcar passes its list): a base boxcar bootstrapped holds them already, a
# pulled one gets them here.
ARG BASE_PACKAGES
RUN if ! dpkg -s ${BASE_PACKAGES} >/dev/null 2>&1; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${BASE_PACKAGES} \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
 && if [ -s /etc/boxcar/host-ca.crt ]; then \
        cat /etc/ssl/certs/ca-certificates.crt /etc/boxcar/host-ca.crt > /etc/boxcar/trust.crt; \
    else \
        cp /etc/ssl/certs/ca-certificates.crt /etc/boxcar/trust.crt; \
    fi

ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE=/etc/boxcar/trust.crt \
    CARGO_HTTP_CAINFO=/etc/boxcar/trust.crt \
    CARGO_TERM_COLOR=never

# rustup-init straight from static.rust-lang.org; the toolchain and the musl
# target come from the rust-toolchain.toml boxcar hands in.
COPY rust-toolchain.toml /tmp/toolchain/rust-toolchain.toml
RUN curl --proto '=https' --tlsv1.2 -sSf --cacert /etc/boxcar/trust.crt \
        -o /tmp/rustup-init https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init \
 && chmod +x /tmp/rustup-init \
 && toolchain=$(sed -n 's/^channel = "\(.*\)"/\1/p' /tmp/toolchain/rust-toolchain.toml) \
 && /tmp/rustup-init -y --no-modify-path --profile minimal --default-toolchain "$toolchain" \
        --target x86_64-unknown-linux-musl \
 && rm /tmp/rustup-init \
 && cd /tmp/toolchain && rustc --version && cargo --version

# The fast profile's linker: gcc driving mold, which links a changed line's
# binary several times faster than ld; BOXCAR_FAST_LINKER=ld in the build
# container's environment (boxcar passes the host's) links with gcc's default
# instead. Read at link time, so switching relinks only what a build relinks
# anyway: the linker cargo is given, and so its fingerprints, stay the same.
RUN printf '%s\n' '#!/bin/sh' \
        'if [ "${BOXCAR_FAST_LINKER:-mold}" = mold ]; then exec cc -fuse-ld=mold "$@"; fi' \
        'exec cc "$@"' > /usr/local/bin/boxcar-fast-cc \
 && chmod 755 /usr/local/bin/boxcar-fast-cc

# cargo's package-cache locks (it takes them to download into the registry
# or to change what is there) live in the registry volume, not beside it in
# each build container's own file system: builds on other target volumes run
# at once, and they share the registry and git volumes.
RUN ln -s registry/.package-cache /usr/local/cargo/.package-cache \
 && ln -s registry/.package-cache-mutate /usr/local/cargo/.package-cache-mutate

# Every cargo and rustc in a build container uses this toolchain, whatever a
# project's rust-toolchain.toml lists besides (components such as clippy are
# the host's business): rustup then fetches nothing in a build container.
ARG TOOLCHAIN
ENV RUSTUP_TOOLCHAIN=${TOOLCHAIN}

WORKDIR /src
