# The builder: Debian with gcc, musl-tools and the Rust toolchain that
# rust-toolchain.toml pins (its channel only: boxcar hands in a file that
# holds nothing else, so one builder serves every project on that toolchain),
# with the musl target. `cargo xtask image` builds it
# (classic builder) and tags it boxcar/builder:<hash of this file, the
# toolchain file, the base image and the CA bundle>, so it is rebuilt only when
# one of those changes. It never ships: the runner image is assembled apart.
ARG BASE=boxcar/debian:bookworm
FROM ${BASE}

# The host's CA bundle (empty when there is none), for hosts behind a
# TLS-inspecting proxy. Kept apart from Debian's bundle, which is what the
# runner image gets.
COPY host-ca.crt /etc/boxcar/host-ca.crt

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates curl gcc libc6-dev musl-tools \
 && rm -rf /var/lib/apt/lists/* \
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

# Every cargo and rustc in a build container uses this toolchain, whatever a
# project's rust-toolchain.toml lists besides (components such as clippy are
# the host's business): rustup then fetches nothing in a build container.
ARG TOOLCHAIN
ENV RUSTUP_TOOLCHAIN=${TOOLCHAIN}

WORKDIR /src
