# Build targets for enclave binaries and images (included by the top Makefile).
#
#   make enclaved        static, reproducible bin/enclaved
#   make repro-check     prove two clean builds give the same SHA-256
#   make eif             docker build + nitro-cli build-enclave -> enclave.eif, print PCRs
#   make eif-nodocker    the same image from the nitro-cli blobs, without Docker
#   make pin-base-image  record the digest of the golang base image
#
# Everything is driven by SOURCE_DATE_EPOCH (default: the last commit's time).

SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
export SOURCE_DATE_EPOCH
ENCLAVE_ARCH  ?= amd64
BIN_DIR       ?= bin
ENCLAVED_PKG  ?= ./cmd/enclaved
EIF_OUT       ?= enclave.eif
EIF_IMAGE     ?= enclavekit-enclaved:latest
BLOBS         ?= /usr/share/nitro_enclaves/blobs
# ENCLAVE_VERSION is what enclavekit.health reports; it is part of the
# binary, so it is taken from the commit (never from uncommitted changes).
ENCLAVE_VERSION ?= $(shell git describe --tags --always 2>/dev/null || echo unknown)
# ENCLAVED_TAGS: the enclave image's enclaved links no emulator (internal/enclaved,
# ProductionTag); without the tag, --nsm emulated is built in for development.
ENCLAVED_TAGS := enclavekit_production
REPRO_FLAGS   := -tags=$(ENCLAVED_TAGS) -trimpath -buildvcs=false -ldflags='-s -w -buildid= -X github.com/enclavekit/enclavekit/enclave.Version=$(ENCLAVE_VERSION)'
REPRO_ENV     := CGO_ENABLED=0 GOFLAGS= GOOS=linux GOARCH=$(ENCLAVE_ARCH)

-include build/base-image.env

.PHONY: enclaved repro-check eif eif-nodocker pin-base-image eif-tools

## enclaved: static, reproducible binary in $(BIN_DIR)/enclaved.
enclaved:
	@mkdir -p $(BIN_DIR)
	$(REPRO_ENV) $(GO) build $(REPRO_FLAGS) -o $(BIN_DIR)/enclaved $(ENCLAVED_PKG)
	@sha256sum $(BIN_DIR)/enclaved

## repro-check: the fixture test, then two builds of $(ENCLAVED_PKG) (the
## second with an empty build cache, from a copy of the tree at another path).
repro-check:
	$(GO) test -count=1 -run 'TestReproducibleBuild' ./build/
	@set -e; \
	if ! $(GO) list $(ENCLAVED_PKG) >/dev/null 2>&1 || ! $(REPRO_ENV) $(GO) build -o /dev/null $(ENCLAVED_PKG) 2>/dev/null; then \
	  echo "repro-check: $(ENCLAVED_PKG) does not build yet; checked the fixture only"; exit 0; fi; \
	tmp=$$(mktemp -d); trap 'chmod -R u+w $$tmp; rm -rf $$tmp' EXIT; \
	$(REPRO_ENV) $(GO) build $(REPRO_FLAGS) -o $$tmp/one $(ENCLAVED_PKG); \
	git ls-files -co --exclude-standard -z | tar --null -T - -cf - | (mkdir -p $$tmp/other/tree && cd $$tmp/other/tree && tar -xf -); \
	(cd $$tmp/other/tree && $(REPRO_ENV) GOCACHE=$$tmp/cache $(GO) build $(REPRO_FLAGS) -o $$tmp/two $(ENCLAVED_PKG)); \
	a=$$(sha256sum < $$tmp/one); b=$$(sha256sum < $$tmp/two); \
	echo "build 1: $$a"; echo "build 2: $$b"; \
	if [ "$$a" != "$$b" ]; then echo "repro-check: FAILED, the builds differ"; exit 1; fi; \
	echo "repro-check: OK"

# eif-tools: report every missing tool at once, each with what to install.
eif-tools:
	@missing=0; \
	if ! command -v docker >/dev/null 2>&1; then missing=1; \
	  echo "missing: the docker client. Install Docker (Amazon Linux 2023: sudo dnf install -y docker && sudo systemctl enable --now docker; elsewhere https://docs.docker.com/engine/install/)."; \
	elif ! docker info >/dev/null 2>&1; then missing=1; \
	  echo "missing: a Docker engine. The docker client is installed but no engine answers (docker info failed): install/start it (sudo systemctl enable --now docker) and let your user use it (sudo usermod -aG docker \$$USER, then log in again)."; \
	fi; \
	if ! command -v nitro-cli >/dev/null 2>&1; then missing=1; \
	  echo "missing: nitro-cli. Install the AWS Nitro Enclaves CLI on the parent instance (Amazon Linux 2023: sudo dnf install -y aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel; elsewhere build https://github.com/aws/aws-nitro-enclaves-cli)."; \
	fi; \
	if [ $$missing = 1 ]; then echo "make eif: cannot build the image (without Docker and nitro-cli, 'make eif-nodocker' builds it from the blobs in $(BLOBS))."; exit 1; fi

## eif: docker build, then nitro-cli build-enclave; prints the PCRs.
eif: eif-tools
	@test -n "$(GOLANG_DIGEST)" || { echo "make eif: build/base-image.env has no GOLANG_DIGEST; run 'make pin-base-image' on a machine that can reach Docker Hub and commit the file."; exit 1; }
	docker build -f build/Dockerfile \
	  --build-arg GOLANG_IMAGE=$(GOLANG_IMAGE) --build-arg GOLANG_DIGEST=$(GOLANG_DIGEST) \
	  --build-arg SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) --build-arg PACKAGE=$(ENCLAVED_PKG) \
	  --build-arg TARGETARCH=$(ENCLAVE_ARCH) --build-arg ENCLAVE_VERSION=$(ENCLAVE_VERSION) -t $(EIF_IMAGE) .
	nitro-cli build-enclave --docker-uri $(EIF_IMAGE) --output-file $(EIF_OUT)
	$(GO) run ./cmd/enclavekit eif pcrs $(EIF_OUT)

## eif-nodocker: build the EIF in pure Go from the nitro-cli blobs
## (BLOBS=/usr/share/nitro_enclaves/blobs) and bin/enclaved.
eif-nodocker: enclaved
	@for f in init nsm.ko cmdline; do test -f $(BLOBS)/$$f || { echo "make eif-nodocker: $(BLOBS)/$$f is missing. Install aws-nitro-enclaves-cli (it ships the blobs) or set BLOBS=DIR."; exit 1; }; done
	@test -f $(BLOBS)/bzImage -o -f $(BLOBS)/Image || { echo "make eif-nodocker: no kernel (bzImage or Image) in $(BLOBS). Install aws-nitro-enclaves-cli or set BLOBS=DIR."; exit 1; }
	@mkdir -p $(BIN_DIR)
	$(GO) run ./cmd/enclavekit eif ramdisk bootstrap --init $(BLOBS)/init --nsm $(BLOBS)/nsm.ko -o $(BIN_DIR)/bootstrap.cpio
	$(GO) run ./cmd/enclavekit eif ramdisk app --binary $(BIN_DIR)/enclaved \
	  $(if $(wildcard /etc/ssl/certs/ca-certificates.crt),--file /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin) \
	  -o $(BIN_DIR)/app.cpio
	$(GO) run ./cmd/enclavekit eif build \
	  --kernel $$(test -f $(BLOBS)/bzImage && echo $(BLOBS)/bzImage || echo $(BLOBS)/Image) \
	  --arch $(if $(filter arm64,$(ENCLAVE_ARCH)),aarch64,x86_64) \
	  --cmdline "$$(cat $(BLOBS)/cmdline)" \
	  --ramdisk $(BIN_DIR)/bootstrap.cpio --ramdisk $(BIN_DIR)/app.cpio -o $(EIF_OUT)
	$(GO) run ./cmd/enclavekit eif pcrs $(EIF_OUT)

## pin-base-image: resolve $(GOLANG_IMAGE) to its digest and record it.
pin-base-image: eif-tools
	@d=$$(docker buildx imagetools inspect $(GOLANG_IMAGE) --format '{{json .Manifest.Digest}}' 2>/dev/null | tr -d '"'); \
	if [ -z "$$d" ]; then docker pull -q $(GOLANG_IMAGE) >/dev/null && d=$$(docker image inspect --format '{{index .RepoDigests 0}}' $(GOLANG_IMAGE) | sed 's/.*@//'); fi; \
	test -n "$$d" || { echo "pin-base-image: could not resolve $(GOLANG_IMAGE)"; exit 1; }; \
	sed -i "s|^GOLANG_DIGEST=.*|GOLANG_DIGEST=$$d|" build/base-image.env; echo "GOLANG_DIGEST=$$d"
