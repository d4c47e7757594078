# podbridge's image, built the usual way, from a release binary built beforehand on the host:
#
#   cargo build --release                     # target/release/podbridge
#   docker build -t podbridge:dev .           # or: buildah bud -t podbridge:dev .
#
# Single-stage on purpose: the release profile is fat LTO, so compiling podbridge inside an image
# build takes 15-30 minutes on two cores and a Rust toolchain image; CI compiles the binary once
# and reuses it here, in deploy/image/build.sh (the same image without a Dockerfile or a daemon)
# and in the tests. The binary links glibc, libm and libgcc_s only, which is what distroless `cc`
# holds (Debian 12: glibc, libgcc, CA certificates, user nonroot 65532); build the binary on
# Debian 12 or an older glibc so the base can run it. tests/e2e/incluster.sh builds this file with
# buildah against a stand-in base made from the test machine's Debian packages
# (--build-arg BASE=...), pushes it to the test registry and runs it as a pod.
ARG BASE=gcr.io/distroless/cc-debian12:nonroot
FROM ${BASE}
# the one file .dockerignore sends (with CARGO_TARGET_DIR elsewhere, copy the binary here first)
COPY target/release/podbridge /usr/local/bin/podbridge
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# non-root, as deploy/operator.yaml and the sidecar examples require (runAsNonRoot)
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/podbridge"]
CMD ["serve"]
