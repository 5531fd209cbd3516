# The operator image: `docker build -t accessplane:dev .`
# `--build-arg ACCESSPLANE_GIT_SHA=$(git rev-parse --short HEAD)` adds the commit to `accessplane version`.

FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependencies first, built against a stub crate: this layer is reused until
# Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/.fingerprint/accessplane-* \
        target/release/deps/accessplane-* target/release/deps/libaccessplane-*

COPY src ./src
ARG ACCESSPLANE_GIT_SHA=""
RUN cargo build --release --locked --bin accessplane

# glibc, libgcc and CA certificates; no shell. `nonroot` is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/accessplane /accessplane
USER 65532:65532
ENTRYPOINT ["/accessplane"]
CMD ["run"]
