# syntax=docker/dockerfile:1
#
# Small static non-root image: a statically linked binary (glibc with
# crt-static; glibc >= 2.34 has the files/dns resolvers built in, so DNS works
# without shared libraries) on distroless/static, user 65532 (the manifests'
# runAsUser); ~18 MB stripped. Build: docker build -t ghcr.io/ambient-code/agentic-webhook:0.1.0 .

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    triple="$(uname -m)-unknown-linux-gnu" \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --bin agentic-webhook --target "$triple" \
 && cp "target/$triple/release/agentic-webhook" /agentic-webhook \
 && /agentic-webhook --version

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /agentic-webhook /agentic-webhook
USER 65532:65532
EXPOSE 8443 8080 8081
ENTRYPOINT ["/agentic-webhook"]
CMD ["serve"]
