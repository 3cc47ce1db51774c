# What the app's runner image is (boxcar.toml, service `app`), as a Dockerfile a reader knows how to read.
#
# `cargo xtask image` does not use this file: it writes the image itself
# (boxcar/src/image/assemble.rs), because Docker's builder stamps build times
# and cannot give the same image ID twice. Built from a folder `rootfs/`
# holding the same files, this gives an equivalent image; a test in
# xtask/tests/it/contract.rs keeps its settings identical to the ones `image` writes.
#
# rootfs/ holds:
#   usr/local/bin/app                      the static musl binary (0555)
#   etc/boxcar/deploy-config/<env>.toml    the public environment files (0444)
#   etc/boxcar/service.toml                what boxcar.toml gives the app at run time (0444); the app
#                                          starts only on an environment that approves the same
#   etc/ssl/certs/ca-certificates.crt      Debian's CA bundle, from the builder (0444)
#   etc/passwd, etc/group                  root and nonroot (65532) (0444)
#   home/nonroot/ (0700, 65532), data/ (0700, 65532), tmp/ (1777)
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin \
    APP_CONFIG_DIR=/etc/boxcar/deploy-config \
    APP_DATA_DIR=/data \
    APP_LISTEN=0.0.0.0:8080 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /
EXPOSE 8080/tcp
VOLUME /data
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/bin/app", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/app"]
CMD ["serve"]
